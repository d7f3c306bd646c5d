"""The run directory: what finetune writes is what the readers read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import rundir
from zoo.registry import Geometry

REPO = Path(__file__).resolve().parents[1]


def _tiny_model(num_classes=3):
    return zoo.build("lenet5", num_classes=num_classes, input_shape=(32, 32, 1))


def _pixels(model, count=4, seed=0):
    shape = (count, *model.input_shape[1:])
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    # The examples' writer of real digit PNGs (examples/tiny_data.py), not a second copy.
    spec = importlib.util.spec_from_file_location("tiny_data", REPO / "examples" / "tiny_data.py")
    tiny_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_data)
    return tiny_data.digits_folder(tmp_path_factory.mktemp("small") / "digits", per_class=12)


def test_write_then_read_round_trip(tmp_path):
    model = _tiny_model()
    geometry = Geometry((32, 32), 0.9, "bicubic", 1)
    sample = tmp_path / "cat.png"
    sample.write_bytes(b"not checked here")
    run_dir = rundir.write_run(tmp_path / "run", model=model, model_name="lenet5",
                               class_names=["cat", "dog", "owl"], geometry=geometry,
                               card="# card\n", samples=[sample], weights=None,
                               status="finished", recipe={"seed": 0})
    run = rundir.read_run(run_dir)
    assert run.schema == rundir.SCHEMA == 2 and run.info["schema"] == 2
    assert run.model_name == "lenet5" and run.class_names == ["cat", "dog", "owl"]
    assert run.geometry == geometry
    assert run.info["status"] == "finished" and run.info["recipe"] == {"seed": 0}
    assert run.model_path == run_dir / rundir.MODEL_FILE
    assert run.card_path.read_text() == "# card\n"
    assert [p.name for p in run.samples_dir.iterdir()] == ["00_cat.png"]
    assert (run_dir / rundir.CLASS_NAMES_FILE).read_text() == "cat\ndog\nowl\n"

    opened = rundir.open_model(run_dir)
    assert opened.model_name == "lenet5" and opened.class_names == ["cat", "dog", "owl"]
    assert opened.geometry == geometry and opened.card == "# card\n" and opened.run is not None
    pixels = _pixels(model)
    np.testing.assert_allclose(opened.model(pixels), model(pixels), atol=1e-6)
    # The run's own .keras file opens with the run's names and geometry.
    by_file = rundir.open_model(run_dir / rundir.MODEL_FILE)
    assert by_file.class_names == opened.class_names and by_file.geometry == geometry


def test_write_run_refuses_what_it_could_not_read_back(tmp_path):
    model = _tiny_model()
    geometry = zoo.geometry("lenet5")
    with pytest.raises(ValueError, match="2 class names for a model with 3 outputs"):
        rundir.write_run(tmp_path, model=model, model_name="lenet5", class_names=["a", "b"],
                         geometry=geometry)
    with pytest.raises(TypeError, match="geometry"):
        rundir.write_run(tmp_path, model=model, model_name="lenet5",
                         class_names=["a", "b", "c"], geometry=geometry.as_dict())
    assert not (tmp_path / rundir.RUN_FILE).exists()


def test_what_finetune_writes_is_what_the_readers_read(small_digits, tmp_path):
    import pipelines

    # A geometry other than the spec's, so the test tells the data's from the spec's.
    data = pipelines.from_folder(small_digits, model="lenet5", batch_size=32, augment="none",
                                 crop_fraction=0.8, interpolation="bicubic")
    assert zoo.geometry("lenet5").crop_fraction != 0.8
    result = zoo.finetune("lenet5", data, weights=None, epochs=1, out_dir=tmp_path / "run",
                          verbose=0)
    run = rundir.read_run(result.run_dir)
    assert run.info["schema"] == rundir.SCHEMA and run.info["status"] == "finished"
    assert run.class_names == list(data.class_names)
    assert run.geometry == data.geometry
    assert run.geometry.crop_fraction == 0.8 and run.geometry.interpolation == "bicubic"
    opened = rundir.open_model(result.run_dir)
    assert opened.class_names == list(data.class_names) and opened.geometry == data.geometry
    assert opened.card == (result.run_dir / rundir.CARD_FILE).read_text()
    assert opened.samples_dir is not None and any(opened.samples_dir.iterdir())
    pixels = _pixels(result.model)
    np.testing.assert_allclose(opened.model(pixels), result.model(pixels), atol=1e-5)


def test_a_schema_1_run_dir_still_opens(tmp_path):
    # What zoo wrote before run.json had a schema: geometry at the top level. Written
    # literally here, since reading it is the point.
    # Three channels where the spec's default is one: the recorded shape must win.
    model = zoo.build("lenet5", num_classes=3, input_shape=(32, 32, 3))
    model.save(tmp_path / "best.keras")
    (tmp_path / "run.json").write_text(json.dumps({
        "status": "finished", "model": "lenet5", "weights": None,
        "class_names": ["a", "b", "c"], "image_size": [32, 32, 3], "crop_fraction": 0.9,
        "interpolation": "area", "val_accuracy": 0.5}))
    run = rundir.read_run(tmp_path)
    assert run.schema == 1 and run.class_names == ["a", "b", "c"]
    assert run.geometry.crop_fraction == 0.9 and run.geometry.interpolation == "area"
    assert run.geometry.image_size == (32, 32) and run.geometry.channels == 3
    opened = rundir.open_model(tmp_path)
    assert opened.geometry.crop_fraction == 0.9 and opened.geometry.channels == 3
    # The oldest runs may leave the geometry out: the architecture's defaults then.
    (tmp_path / "run.json").write_text(json.dumps({"model": "lenet5",
                                                   "class_names": ["a", "b", "c"]}))
    default = zoo.geometry("lenet5")
    got = rundir.read_run(tmp_path).geometry
    assert (got.crop_fraction, got.interpolation) == (default.crop_fraction,
                                                      default.interpolation)


def test_a_broken_run_json_says_what_to_do(tmp_path):
    _tiny_model().save(tmp_path / "best.keras")
    (tmp_path / "run.json").write_text('{"model": "lenet5", "class_na')
    with pytest.raises(ValueError, match=r"run\.json is not valid JSON.*overwrite=True"):
        rundir.read_run(tmp_path)
    with pytest.raises(ValueError, match="not valid JSON"):
        rundir.open_model(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema": 99, "model": "lenet5",
                                                   "class_names": ["a", "b", "c"]}))
    with pytest.raises(ValueError, match="schema 99.*Upgrade zoo"):
        rundir.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema": 2, "model": "lenet5",
                                                   "class_names": ["a", "b", "c"],
                                                   "geometry": {"crop_fraction": 3}}))
    with pytest.raises(ValueError, match="eval geometry.*crop_fraction"):
        rundir.read_run(tmp_path)


def test_open_model_needs_a_known_name_or_weights(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    mine = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)),
                       name="mine")
    with pytest.raises(ValueError, match="model_name="):
        rundir.open_model(mine)
    opened = rundir.open_model(mine, model_name="lenet5")
    assert opened.class_names is None and opened.geometry.image_size == (32, 32)
    with pytest.raises(ValueError, match="needs weights"):
        rundir.open_model("lenet5")
    with pytest.raises(FileNotFoundError, match="No model file"):
        rundir.open_model(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="run.json"):
        rundir.open_model(tmp_path)


def test_a_crash_between_a_file_and_its_sha256_record_blames_no_good_file(tmp_path,
                                                                          monkeypatch):
    from zoo.weights.readers import file_sha256, recorded_digests, verify_recorded

    model, path = _tiny_model(), tmp_path / "w.weights.h5"
    rundir.save_weights(model, path)
    old = file_sha256(path)
    assert recorded_digests(path) == [old]
    model.set_weights([w + 1 for w in model.get_weights()])
    record, calls = rundir._record_digests, []

    def crash_after_the_rename(where, digests):
        calls.append(digests)
        if len(calls) == 2:  # the file is renamed into place; its final record is not
            raise KeyboardInterrupt
        record(where, digests)

    monkeypatch.setattr(rundir, "_record_digests", crash_after_the_rename)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_weights(model, path)
    new = file_sha256(path)
    assert new != old and recorded_digests(path) == [new, old]
    assert verify_recorded(path)  # the new file is not called damaged
