"""Gradient accumulation and the weights' EMA, on real digits through LeNet-5."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from test_finetune import digits_data

from zoo.recipes import finetune as ft
from zoo.recipes.recipe import make_recipe
from zoo.recipes.stages import ema_options

REPO = Path(__file__).resolve().parents[1]
# 1,280 training images: 40 full batches of 32 and 160 of 8, so no update is a remainder.
N_TRAIN = 1280


def _train(out: Path, batch: int, callbacks=(), strategy="one", **options):
    # The seed first: the in-memory pipeline's shuffle takes the global seed when it is made.
    keras.utils.set_random_seed(0)
    return ft.finetune("lenet5", digits_data(n_train=N_TRAIN, batch=batch), weights=None,
                       out_dir=out, verbose=0, dropout=0.0, precision="float32",
                       calibrate="none", strategy=strategy, callbacks=list(callbacks),
                       **options)


def _largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_four_steps_of_8_train_as_one_batch_of_32(tmp_path):
    accumulated = _train(tmp_path / "acc", 8, epochs=1, accumulate_steps=4)
    whole = _train(tmp_path / "whole", 32, epochs=1)
    small = _train(tmp_path / "small", 8, epochs=1)
    weights = accumulated.model.get_weights()
    assert _largest_difference(weights, whole.model.get_weights()) < 1e-5
    # The control: without accumulation batches of 8 take 4x the updates and end elsewhere.
    assert _largest_difference(small.model.get_weights(), whole.model.get_weights()) > 1e-2
    info = json.loads((tmp_path / "acc" / "run.json").read_text())
    assert info["accumulation"] == {"steps": 4, "step_batch": 8, "update_batch": 32}
    assert info["ema"] is None
    assert "4 steps of 8 images per weight update" in (tmp_path / "acc" / "README.md").read_text()
    assert json.loads((tmp_path / "acc" / "metrics.json").read_text())["accumulation"]["steps"] == 4


class _Recorder(keras.callbacks.Callback):
    """The raw weights after every batch, and the weights the model holds at each epoch's end."""

    def on_train_begin(self, logs=None):
        self.raw, self.at_end = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.raw.append([v.numpy().copy() for v in self.model.trainable_variables])

    def on_epoch_end(self, epoch, logs=None):
        self.at_end.append([v.numpy().copy() for v in self.model.trainable_variables])


def test_ema_weights_are_validated_kept_and_reported_beside_the_raw_ones(tmp_path):
    recorder = _Recorder()
    result = _train(tmp_path / "run", 64, callbacks=[recorder], epochs=3, ema=0.9)
    per_epoch = len(recorder.raw) // 3
    # The average by its definition (Keras' first step copies the weights).
    average, expected = None, []
    for step, raw in enumerate(recorder.raw):
        average = raw if average is None else [0.9 * a + 0.1 * w for a, w in zip(average, raw)]
        if (step + 1) % per_epoch == 0:
            expected.append(average)
    for epoch in range(3):
        # The caller's callbacks run after zoo's: the average is in the model at the end.
        assert _largest_difference(recorder.at_end[epoch], expected[epoch]) < 1e-4
        last_raw = recorder.raw[(epoch + 1) * per_epoch - 1]
        assert _largest_difference(recorder.at_end[epoch], last_raw) > 1e-3
    history = result.history
    kept = int(np.argmax(history["val_accuracy"]))
    kept_weights = [v.numpy() for v in result.model.trainable_variables]
    assert _largest_difference(kept_weights, expected[kept]) < 1e-4
    # The report re-measures the kept model: the history's val_accuracy was the average's.
    assert result.metrics["val_accuracy"] == pytest.approx(history["val_accuracy"][kept], abs=1e-6)
    assert len(history["val_accuracy_raw"]) == 3
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    ema = info["ema"]
    assert ema["momentum"] == 0.9 and ema["kept_epoch"] == kept + 1
    assert ema["averaged"] == pytest.approx(history["val_accuracy"][kept])
    assert ema["raw_same_epoch"] == pytest.approx(history["val_accuracy_raw"][kept])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["ema"] == ema and metrics["val_accuracy"] == result.metrics["val_accuracy"]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "exponential moving average, momentum 0.9" in card


def test_ema_momentum_is_per_update_under_accumulation():
    recipe = make_recipe("lenet5", ema=0.999, accumulate_steps=4)
    momentum = ema_options(recipe)["ema_momentum"]
    # Four batches' averaging with the same weights is one update's.
    assert momentum ** 4 == pytest.approx(0.999) and momentum > 0.999
    assert ema_options(make_recipe("lenet5")) == {}


@pytest.mark.parametrize("options, message", [
    ({"accumulate_steps": 0}, "accumulate_steps (--accumulate-steps) must be a whole number "
                              "of at least 1"),
    ({"accumulate_steps": 2.5}, "must be a whole number of at least 1 (1: off); got 2.5"),
    ({"ema": 1.5}, "ema (--ema) must be a number in (0, 1), such as 0.999, or None (off); "
                   "got 1.5"),
    ({"ema": 0}, "ema (--ema) must be a number in (0, 1)"),
])
def test_bad_values_are_refused_naming_the_allowed_ones(options, message):
    with pytest.raises(ValueError) as error:
        make_recipe("lenet5", **options)
    assert message in str(error.value)


def test_a_batch_that_does_not_split_is_refused_before_anything_is_read(tmp_path):
    recipe = make_recipe("lenet5", batch_size=30, accumulate_steps=4)
    with pytest.raises(ValueError, match="batch_size 30 does not split into "
                                         "accumulate_steps=4 equal steps.*such as 28"):
        ft.step_batch(recipe, given_data=False)
    assert ft.step_batch(make_recipe("lenet5", batch_size=32, accumulate_steps=4), False) == 8
    # A pipeline the caller built keeps its batches: they are the steps.
    assert ft.step_batch(recipe, given_data=True) == 30
    with pytest.raises(ValueError, match="an epoch of this training split has 2"):
        _train(tmp_path / "short", 640, epochs=1, accumulate_steps=4)
    assert not (tmp_path / "short" / "run.json").exists()


_MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {tests!r})
    import test_levers
    runs = [test_levers._train(__import__("pathlib").Path(sys.argv[1]) / name, batch, epochs=1,
                               accumulate_steps=steps, strategy="mirrored")
            for name, batch, steps in (("acc", 16, 4), ("whole", 64, 1))]
    assert all(r.model.get_weights() for r in runs)
    print("REPLICAS", len(tf.config.list_logical_devices("CPU")))
    print("DIFF", test_levers._largest_difference(*(r.model.get_weights() for r in runs)))
""").format(tests=str(REPO / "tests"))


def test_accumulation_under_mirrored_strategy_on_two_cpus(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines["REPLICAS"] == "2"
    assert float(lines["DIFF"]) < 1e-5
    info = json.loads((tmp_path / "acc" / "run.json").read_text())
    assert info["replicas"] == 2 and info["accumulation"]["update_batch"] == 64


class _Interrupt(keras.callbacks.Callback):
    """Ctrl-C as epoch ``at`` begins."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


class _Restored(keras.callbacks.Callback):
    """What the resumed fit starts from, after zoo's backup callback restored it."""

    def on_train_begin(self, logs=None):
        self.weights = [v.numpy().copy() for v in self.model.trainable_variables]
        self.averages = [v.numpy().copy()
                         for v in self.model.optimizer._model_variables_moving_average]

    def on_epoch_begin(self, epoch, logs=None):
        self.first_epoch = getattr(self, "first_epoch", epoch)


def test_an_interrupted_ema_run_resumes_training_the_raw_weights(tmp_path):
    recorder = _Recorder()
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", 64, callbacks=[recorder, _Interrupt(2)], epochs=4, ema=0.9)
    per_epoch = len(recorder.raw) // 2
    restored = _Restored()
    _train(tmp_path / "run", 64, callbacks=[restored], epochs=4, ema=0.9)
    assert restored.first_epoch == 2
    # The model goes on from the raw weights of epoch 2's end, the optimizer keeps the average.
    assert _largest_difference(restored.weights, recorder.raw[2 * per_epoch - 1]) < 1e-6
    assert _largest_difference(restored.averages, recorder.at_end[1]) < 1e-6
