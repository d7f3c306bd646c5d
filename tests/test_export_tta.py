"""``zoo export --tta``: the SavedModel's signatures average the views evaluate averages.

One LeNet-5, trained for a few seconds on scikit-learn's digits, is a run with crop fraction
0.875 (so the corners of the resized image differ from its centre); the digits to serve are
PNG files of 30x40 pixels. Each signature's probabilities are compared with
``zoo.recipes.tta.predict`` on the pixels of evaluate's own file path (``pipelines.from_files``
and ``EvalFiles.five_crops``), not on the export's bytes path.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipelines
import zoo
from zoo import Geometry, rundir
from zoo.recipes import tta

GEOMETRY = Geometry((32, 32), 0.875, "bilinear", 3)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    import keras
    from sklearn.datasets import load_digits

    from zoo.models import build

    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype("float32")
    keras.utils.set_random_seed(0)
    model = build("lenet5", weights=None, num_classes=10, input_shape=(32, 32, 3))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(tf.image.resize(np.repeat(images[:800, ..., None], 3, -1), (32, 32)),
              digits.target[:800], epochs=4, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("export_tta")
    run = rundir.write_run(root / "run", model=model, model_name="lenet5",
                           class_names=[str(i) for i in range(10)], geometry=GEOMETRY)
    paths = []
    for i in range(1000, 1008):
        path = root / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(images[i].astype("uint8")).resize((40, 30), Image.BILINEAR).convert(
            "RGB").save(path)
        paths.append(path)
    return run, model, paths


def served(version_dir, paths) -> dict:
    signatures = tf.saved_model.load(str(version_dir)).signatures
    data = [p.read_bytes() for p in paths]
    files = pipelines.from_files(paths, image_size=GEOMETRY.image_size,
                                 crop_fraction=GEOMETRY.crop_fraction, channels=3)
    pixels = np.concatenate(list(files.dataset.as_numpy_iterator()))
    return {
        "serving_default": signatures["serving_default"](
            image_bytes=tf.constant(data))["probabilities"].numpy(),
        "serving_b64": signatures["serving_b64"](
            image_b64=tf.constant([base64.b64encode(d) for d in data]))["probabilities"].numpy(),
        "serving_pixels": signatures["serving_pixels"](
            pixels=tf.constant(pixels))["probabilities"].numpy(),
        "pixels": pixels,
        "views": np.concatenate(list(files.five_crops().as_numpy_iterator())),
    }


@pytest.mark.parametrize("mode", ["flip", "flip+five_crop"])
def test_exported_signatures_average_the_views_evaluate_averages(digits_run, mode, tmp_path):
    run, model, paths = digits_run
    result = zoo.export(run, tmp_path / "export", tta=mode, sample_images=paths)
    got = served(result.version_dir, paths)
    views = got["views"] if tta.needs_views(mode) else got["pixels"]
    expected = tta.predict(model, views, mode)
    plain = np.asarray(model(got["pixels"], training=False))
    assert np.abs(expected - plain).max() > 1e-3  # the averaging changes the answer
    for signature in ("serving_default", "serving_b64"):
        np.testing.assert_allclose(got[signature], expected, atol=1e-5, err_msg=signature)
    # serving_pixels' pixels are already cropped: it averages the crop and its mirror only.
    np.testing.assert_allclose(got["serving_pixels"], tta.predict(model, got["pixels"], "flip"),
                               atol=1e-5)
    report = json.loads((result.version_dir / "export.json").read_text())
    assert report["tta"] == {"mode": mode, "views": tta.VIEWS[mode],
                             "serving_pixels": "flip", "pixels_views": 2}
    card = (result.version_dir / "assets" / "README.md").read_text()
    assert f"Exported with `tta={mode}`" in card and f"{tta.VIEWS[mode]} views" in card


def test_pixels_signature_keeps_only_the_flip_and_no_tta_adds_no_card_section():
    from zoo.deploy import savedmodel

    assert [savedmodel.pixels_tta(m) for m in tta.TTA_MODES] == ["none", "flip", "none", "flip"]
    assert savedmodel.tta_card_section("none") == ""
    assert "1 view" in savedmodel.tta_card_section("five_crop")


@pytest.mark.parametrize("bad", ["nonsense", "five-crop", "FLIP"])
def test_unknown_tta_is_refused_before_anything_is_written(digits_run, bad, tmp_path):
    run, _, _ = digits_run
    with pytest.raises(ValueError, match="use one of none, flip, five_crop, flip\\+five_crop"):
        zoo.export(run, tmp_path / "export", tta=bad)
    assert not (tmp_path / "export").exists()


def test_multi_label_models_are_refused_tta(digits_run, tmp_path):
    _, model, _ = digits_run
    run = rundir.write_run(tmp_path / "run", model=model, model_name="lenet5",
                           class_names=[str(i) for i in range(10)], geometry=GEOMETRY,
                           multi_label=True, thresholds=[0.5] * 10)
    with pytest.raises(ValueError, match="single-label models.*tta='none'"):
        zoo.export(run, tmp_path / "export", tta="flip")
    assert not (tmp_path / "export").exists()


def test_cli_export_offers_the_tta_modes(capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit):
        main(["export", "run", "--out", "x", "--tta", "ten_crop"])
    assert "choose from 'none', 'flip', 'five_crop', 'flip+five_crop'" in capsys.readouterr().err
