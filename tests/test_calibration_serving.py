"""The run's temperature where a model serves: zoo predict and the exported signatures.

A LeNet-5 trained for two epochs on 300 scikit-learn digits goes into a run directory
written by zoo.rundir with a hand-set temperature (2.5, far enough from 1 that scaled and
raw probabilities differ visibly). The reference is computed here, apart from zoo's code
path: the eval pixels through the Keras model, then ``softmax(log(p) / T)`` in numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipelines
import zoo
from zoo import rundir
from zoo.deploy import probability_model
from zoo.predict import Predictor, predict

TEMPERATURE = 2.5
CLASS_NAMES = [f"digit{i}" for i in range(10)]


def softmax_at(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs.astype("float64"), 1e-12, 1.0)) / temperature
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """300 digits as 32x32 grayscale PNGs in class folders: (paths, labels, pixels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    root = tmp_path_factory.mktemp("digits")
    paths, pixels = [], []
    for i, (image, label) in enumerate(zip(data.images[:300], data.target[:300])):
        big = Image.fromarray((image / 16.0 * 255).astype("uint8")).resize((32, 32),
                                                                            Image.BILINEAR)
        path = root / str(label) / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        big.save(path)
        paths.append(path)
        pixels.append(np.asarray(big))
    return paths, data.target[:300], np.stack(pixels)[..., None].astype("float32")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits):
    paths, labels, pixels = digits
    keras.utils.set_random_seed(0)
    model = zoo.build("lenet5", num_classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(pixels, labels, epochs=2, batch_size=32, verbose=0)
    return rundir.write_run(
        tmp_path_factory.mktemp("run"), model=model, model_name="lenet5",
        class_names=CLASS_NAMES, geometry=zoo.geometry("lenet5"), card="# LeNet-5\n",
        samples=paths[:8], status="finished",
        calibration={"method": "temperature", "temperature": TEMPERATURE,
                     "fitted_on": "validation"})


@pytest.fixture(scope="module")
def images(digits):
    return [p.read_bytes() for p in digits[0][100:112]]


@pytest.fixture(scope="module")
def raw(run_dir, images):
    """The raw softmax of the run's model on the eval pixels of ``images``."""
    model = keras.saving.load_model(run_dir / rundir.MODEL_FILE, compile=False)
    geometry = zoo.geometry("lenet5")
    transform = pipelines.make_eval_transform(geometry.image_size, geometry.crop_fraction,
                                              geometry.interpolation, geometry.channels)
    pixels = np.stack([transform(tf.constant(b)).numpy() for b in images])
    return np.asarray(model(pixels, training=False), "float64")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_dir):
    out = tmp_path_factory.mktemp("export")
    return zoo.export(run_dir, out, formats="savedmodel", top_k=3)


def test_the_temperature_moves_the_probabilities_but_not_the_ranking(raw):
    scaled = softmax_at(raw, TEMPERATURE)
    # Otherwise the tests below could not tell calibrated from raw.
    assert np.abs(scaled - raw).max() > 0.05
    np.testing.assert_array_equal(scaled.argmax(1), raw.argmax(1))


@pytest.mark.parametrize("where", ["run dir", "its best.keras"])
def test_predict_applies_the_runs_temperature(run_dir, images, raw, where):
    path = run_dir if where == "run dir" else run_dir / rundir.MODEL_FILE
    predictor = Predictor(path)
    assert predictor.temperature == TEMPERATURE
    got = predictor.probabilities(images)
    np.testing.assert_allclose(got, softmax_at(raw, TEMPERATURE), atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), raw.argmax(1))


def test_predict_without_calibration_is_the_raw_softmax(run_dir, images, raw, digits,
                                                        tmp_path):
    off = Predictor(run_dir, calibrate=False)
    assert off.temperature is None
    np.testing.assert_allclose(off.probabilities(images), raw, atol=1e-5)
    # A .keras file away from its run has no temperature to apply.
    lonely = tmp_path / "lenet5.keras"
    lonely.write_bytes((run_dir / rundir.MODEL_FILE).read_bytes())
    bare = Predictor(lonely, class_names=CLASS_NAMES)
    assert bare.temperature is None
    np.testing.assert_allclose(bare.probabilities(images), raw, atol=1e-5)
    # predict()'s answers carry the same scores, best first.
    path = digits[0][100]
    for calibrate, want in ((True, softmax_at(raw, TEMPERATURE)[0]), (False, raw[0])):
        top = predict(run_dir, [path], top_k=3, calibrate=calibrate)[0]
        np.testing.assert_allclose([p["score"] for p in top["predictions"]],
                                   np.sort(want)[::-1][:3], atol=1e-5)


def test_exported_signatures_serve_calibrated_probabilities(exported, images, raw):
    served = tf.saved_model.load(exported["savedmodel"]).signatures
    want = softmax_at(raw, TEMPERATURE)
    out = served["serving_default"](image_bytes=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(), want, atol=1e-5)
    np.testing.assert_allclose(out["scores"].numpy()[:, 0], want.max(1), atol=1e-5)
    np.testing.assert_array_equal(out["class_ids"].numpy()[:, 0], raw.argmax(1))
    report = json.loads(Path(exported["report"]).read_text())
    assert report["calibration"]["temperature"] == TEMPERATURE
    card = (Path(exported["savedmodel"]) / "assets" / "README.md").read_text()
    assert card.startswith("# LeNet-5\n") and "calibrated at temperature 2.5" in card
    # zoo predict on the export gives the calibrated scores, or takes the temperature off.
    np.testing.assert_allclose(Predictor(exported["savedmodel"]).probabilities(images), want,
                               atol=1e-5)
    undone = Predictor(exported["savedmodel"], calibrate=False)
    assert undone.temperature is None
    np.testing.assert_allclose(undone.probabilities(images), raw, atol=1e-5)


def test_cli_switches_calibration_off(run_dir, images, raw, digits, tmp_path, capsys):
    from zoo.cli import main

    assert main(["export", str(run_dir), "--out", str(tmp_path), "--no-calibrate"]) == 0
    capsys.readouterr()
    version = tmp_path / "1"
    report = json.loads((version / "export.json").read_text())
    assert report["calibration"]["temperature"] is None
    assert "calibrate=False" in report["calibration"]["reason"]
    assert "--no-calibrate" in (version / "assets" / "README.md").read_text()
    served = tf.saved_model.load(str(version)).signatures["serving_default"]
    np.testing.assert_allclose(served(image_bytes=tf.constant(images))["probabilities"],
                               raw, atol=1e-5)

    path = str(digits[0][100])
    for extra, want in (([], softmax_at(raw, TEMPERATURE)[0]), (["--no-calibrate"], raw[0])):
        assert main(["predict", str(run_dir), path, "--json", "--top-k", "1", *extra]) == 0
        captured = capsys.readouterr()
        score = json.loads(captured.out)[0]["predictions"][0]["score"]
        assert abs(score - want.max()) < 1e-5
        assert ("temperature 2.500" in captured.err) == (not extra)


def test_a_temperature_is_refused_where_it_cannot_apply(run_dir):
    model = keras.saving.load_model(run_dir / rundir.MODEL_FILE, compile=False)
    with pytest.raises(ValueError, match="multi-label"):
        probability_model(model, multi_label=True, temperature=2.0)
    for bad in (0, -1.0, float("nan"), "warm"):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            probability_model(model, temperature=bad)
    layer = probability_model(model, temperature=1.7).get_layer("calibrated")
    assert keras.layers.deserialize(keras.layers.serialize(layer)).temperature == 1.7
