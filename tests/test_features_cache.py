"""Stage 1 on cached backbone features: the same head as the normal stage, kept and reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

from zoo.models import build
from zoo.recipes import features
from zoo.recipes.recipe import make_recipe
from zoo.recipes.stages import StageRunner, layer_stages, one_hot

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_VAL = 200, 100


def _digits():
    digits = load_digits()
    pixels = np.repeat(digits.images[..., None] * (255 / 16), 3, axis=-1).astype("float32")
    pixels = tf.image.resize(pixels, (32, 32)).numpy()
    return pixels, digits.target


def _streams(batch: int):
    x, y = _digits()
    train = tf.data.Dataset.from_tensor_slices((x[:N_TRAIN], y[:N_TRAIN])).batch(batch)
    val = tf.data.Dataset.from_tensor_slices(
        (x[N_TRAIN:N_TRAIN + N_VAL], y[N_TRAIN:N_TRAIN + N_VAL])).batch(50)
    return one_hot(train, 10), one_hot(val, 10)


def _files(folder: Path, count: int = 4) -> list[tuple[str, int]]:
    """A few real digit images on disk, standing for the files the streams were read from."""
    x, y = _digits()
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(x[i].astype("uint8")).save(path)
        listed.append((str(path), int(y[i])))
    return listed


def _data(folder: Path):
    listed = _files(folder)
    return types.SimpleNamespace(train_files=listed[:3], val_files=listed[3:], geometry=None,
                                 batch_size=N_TRAIN)


def _runner(out: Path, mode: str, *, data=None, batch: int = N_TRAIN, epochs: int = 2,
            callbacks=(), strategy=None):
    # One batch of all the training images: the gradient does not depend on their order,
    # so the cached stage (which shuffles its features) and the normal one take the same
    # steps and must end at the same weights.
    keras.utils.set_random_seed(0)
    recipe = make_recipe("lenet5", head_epochs=epochs, finetune_epochs=0, augment="none",
                         cache_features=mode, dropout=0.0, head_lr=1e-2, warmup_epochs=0,
                         precision="float32")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build("lenet5", num_classes=10, input_shape=(32, 32, 3), dropout=0.0)
    train, val = _streams(batch)
    steps = -(-N_TRAIN // batch)
    return StageRunner(model, "lenet5", recipe, strategy, train, val, out, steps, 10,
                       callbacks=list(callbacks), verbose=0, data=data)


def _head_weights(model: keras.Model) -> list[np.ndarray]:
    stages = layer_stages(model, "lenet5")
    return [w for layer in model.layers if stages[layer.name] == -1 for w in layer.get_weights()]


def _largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


class _Count:
    """Wraps features.extract, counting the backbone passes."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = features.extract

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(features, "extract", counted)


def test_cached_head_matches_the_normal_head_and_saves_the_full_model(tmp_path, monkeypatch):
    normal = _runner(tmp_path / "normal", "off")
    normal.run_all(pretrained=True)
    count = _Count(monkeypatch)
    cached = _runner(tmp_path / "cached", "auto")
    cached.run_all(pretrained=True)
    assert count.calls == 2  # train and validation, once each for both epochs
    assert not (tmp_path / "normal" / "features").exists()
    assert len(list((tmp_path / "cached" / "features").glob("*.json"))) == 2
    np.testing.assert_allclose(cached.history["val_accuracy"], normal.history["val_accuracy"],
                               atol=1e-6)
    assert normal.history["val_accuracy"][-1] > 0.5  # it learned: the comparison means something
    assert _largest_difference(_head_weights(cached.model), _head_weights(normal.model)) < 1e-5
    # The best checkpoint is the whole model, pixels in, and the same as the normal stage's.
    saved = keras.models.load_model(tmp_path / "cached" / "best.keras")
    assert saved.input_shape == (None, 32, 32, 3)
    assert [layer.name for layer in saved.layers] == [layer.name for layer in cached.model.layers]
    x = _digits()[0][N_TRAIN:N_TRAIN + 50]
    reference = keras.models.load_model(tmp_path / "normal" / "best.keras")
    np.testing.assert_allclose(saved.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-5)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt("stopped after the first epoch")


def test_a_resumed_run_reuses_the_features_and_the_backup(tmp_path, monkeypatch):
    data = _data(tmp_path / "images")
    whole = _runner(tmp_path / "whole", "on")
    whole.run_all(pretrained=True)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _runner(run, "on", data=data, callbacks=[_Interrupt()]).run_all(pretrained=True)
    assert (run / "backup" / "head-features" / "epoch-0001.weights.h5").is_file()
    written = {p.name: p.stat().st_mtime_ns for p in (run / "features").iterdir()}
    count = _Count(monkeypatch)
    resumed = _runner(run, "on", data=data)
    resumed.run_all(pretrained=True)
    assert count.calls == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "features").iterdir()} == written
    assert len(resumed.history["val_accuracy"]) == 1  # epoch 2 of 2
    assert _largest_difference(_head_weights(resumed.model), _head_weights(whole.model)) < 1e-5


def test_a_changed_file_computes_the_features_again(tmp_path, monkeypatch):
    data = _data(tmp_path / "images")
    listed = data.train_files
    count = _Count(monkeypatch)
    run = tmp_path / "run"
    for _ in range(2):
        (run / "state.json").unlink(missing_ok=True)  # stage 1 again, as after a crash
        _runner(run, "auto", data=data, epochs=1).run_all(pretrained=True)
    assert count.calls == 2  # the second run read the first one's files
    Image.fromarray(np.full((8, 8, 3), 200, "uint8")).save(listed[0][0])
    (run / "state.json").unlink()
    _runner(run, "auto", data=data, epochs=1).run_all(pretrained=True)
    assert count.calls == 3  # train only: the validation file did not change
    # The stale train features were removed, the new ones kept.
    assert len(list((run / "features").glob("train-*.json"))) == 1
    assert len(list((run / "features").glob("val-*.json"))) == 1
    # A features file cut short (a full disk, a crash of the copy) is computed again.
    damaged = next((run / "features").glob("train-*.features.f32"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    (run / "state.json").unlink()
    _runner(run, "auto", data=data, epochs=1).run_all(pretrained=True)
    assert count.calls == 4
    assert damaged.stat().st_size > 100


def test_auto_leaves_an_augmented_stream_alone_and_bad_choices_are_refused():
    model = build("lenet5", num_classes=10, input_shape=(32, 32, 3))
    stages = layer_stages(model, "lenet5")
    use, why = features.decide(make_recipe("lenet5", augment="standard"), model, stages)
    assert not use and "augment='standard'" in why
    assert features.decide(make_recipe("lenet5", augment="standard", cache_features="on"),
                           model, stages)[0]
    assert not features.decide(make_recipe("lenet5", augment="none", cache_features="off"),
                               model, stages)[0]
    tensor, _ = features.cut(model, stages)
    assert tensor._keras_history.operation.name == "s4"  # C5 has weights: the head begins
    with pytest.raises(ValueError, match=r"cache_features \(--cache-features\) must be one of "
                                         r"auto, on, off; got 'yes'"):
        make_recipe("lenet5", cache_features="yes")


def test_resnet_features_are_the_pooled_2048():
    model = build("resnet50", num_classes=3, input_shape=(64, 64, 3))
    tensor, _ = features.cut(model, layer_stages(model, "resnet50"))
    assert tuple(tensor.shape) == (None, 2048)


_MIRRORED = textwrap.dedent("""
    import sys
    from pathlib import Path
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {tests!r})
    import test_features_cache as t
    out = Path(sys.argv[1])
    runs = []
    for mode in ("off", "on"):
        runner = t._runner(out / mode, mode, epochs=1,
                           strategy=tf.distribute.MirroredStrategy())
        runner.run_all(pretrained=True)
        runs.append(runner)
    print("REPLICAS", runs[1].strategy.num_replicas_in_sync)
    print("DIFF", t._largest_difference(*(t._head_weights(r.model) for r in runs)))
    print("FEATURES", len(list((out / "on" / "features").glob("*.json"))))
""").format(tests=str(REPO / "tests"))


def test_cached_head_under_mirrored_strategy_on_two_cpus(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines["REPLICAS"] == "2" and lines["FEATURES"] == "2"
    assert float(lines["DIFF"]) < 1e-5
    assert json.loads((tmp_path / "on" / "state.json").read_text())["stage1"] == "done"


def test_finetune_on_an_unaugmented_folder_caches_and_leaves_a_normal_run(tmp_path,
                                                                          monkeypatch):
    from zoo.recipes import finetune as ft

    digits = load_digits()
    root = tmp_path / "digits"
    for i in range(200):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 16).astype("uint8")).save(folder / f"{i}.png")
    weights = tmp_path / "pretrained.weights.h5"
    build("lenet5", input_shape=(32, 32, 1), num_classes=10).save_weights(weights)
    count = _Count(monkeypatch)
    result = ft.finetune("lenet5", root, weights=str(weights), epochs=2, augment="none",
                         out_dir=tmp_path / "run", verbose=0, calibrate="none")
    assert count.calls == 2
    run = tmp_path / "run"
    # The features served the run's resumes; the finished run is like any other.
    assert not (run / "features").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["recipe"]["cache_features"] == "auto"
    saved = keras.models.load_model(run / "best.keras")
    assert saved.input_shape == (None, 32, 32, 1)
    assert len(result.history["val_accuracy"]) == 2
