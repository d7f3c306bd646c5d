"""Test-time augmentation on real pixels (scikit-learn's digits, scikit-image photos).

The five-crop views are recomputed here independently: the photo decoded by Pillow,
resized by ``tf.image.resize`` to the size the eval geometry gives by hand, and sliced with
NumPy at the four corners and the centre.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo.recipes import tta


@pytest.fixture(scope="module")
def digits_and_model():
    from sklearn.datasets import load_digits

    from zoo.models import build

    images = load_digits().images[:16] / 16.0 * 255
    x = tf.image.resize(np.repeat(images[..., None], 3, axis=-1).astype("float32"), (32, 32))
    model = build("lenet5", weights=None, num_classes=10, input_shape=(32, 32, 3))
    return x, model


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


def resized_by_hand(pixels: np.ndarray, short: int) -> np.ndarray:
    """The image with its shorter side ``short``, the longer truncated (torchvision's rule)."""
    h, w = pixels.shape[:2]
    size = (short, w * short // h) if h <= w else (h * short // w, short)
    return np.round(tf.image.resize(pixels.astype("float32"), size, "bilinear",
                                    antialias=True).numpy())


def five_views_by_hand(resized: np.ndarray, out: int) -> np.ndarray:
    h, w = resized.shape[:2]
    cy, cx = round((h - out) / 2), round((w - out) / 2)
    corners = [(0, 0), (0, w - out), (h - out, 0), (h - out, w - out), (cy, cx)]
    return np.stack([resized[y:y + out, x:x + out] for y, x in corners])


def test_flip_averages_the_crop_and_its_mirror(digits_and_model):
    x, model = digits_and_model
    plain = np.asarray(model(x, training=False))
    mirrored = np.asarray(model(tf.image.flip_left_right(x), training=False))
    assert not np.allclose(plain, mirrored, atol=1e-4)  # digits are not mirror-symmetric
    np.testing.assert_allclose(tta.predict(model, x, "flip"), (plain + mirrored) / 2,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tta.predict(model, x, "none"), plain, rtol=1e-6)
    np.testing.assert_allclose(tta.predict(model, x, "flip").sum(1), 1.0, atol=1e-5)


def test_symmetric_images_are_unchanged_by_flip(digits_and_model):
    x, model = digits_and_model
    symmetric = (x + tf.image.flip_left_right(x)) / 2
    np.testing.assert_allclose(tta.predict(model, symmetric, "flip"),
                               np.asarray(model(symmetric, training=False)), atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 85), (90, 60)])  # landscape and portrait
def test_five_crop_views_are_the_corners_and_centre_of_the_resized_image(shape):
    from skimage import data

    import pipelines

    photo = np.asarray(Image.fromarray(data.astronaut()).resize(shape[::-1], Image.BILINEAR))
    views = pipelines.make_eval_transform((32, 32), 0.875, "bilinear", 3, five_crop=True)(
        tf.constant(png(photo))).numpy()
    # floor(32 / 0.875) = 36 is the resized shorter side, whose centre 32 is the eval crop.
    expected = five_views_by_hand(resized_by_hand(photo, 36), 32)
    np.testing.assert_array_equal(views, expected)
    assert len({v.tobytes() for v in views}) == 5  # five different views


def test_five_crop_averages_the_five_views_and_flip_the_ten(digits_and_model):
    from skimage import data

    _, model = digits_and_model
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    views = np.stack([five_views_by_hand(resized_by_hand(p[::8, ::8], 36), 32)
                      for p in photos])  # [3, 5, 32, 32, 3]
    each = np.stack([np.asarray(model(views[:, i], training=False)) for i in range(5)])
    mirrored = np.stack([np.asarray(model(views[:, i, :, ::-1], training=False))
                         for i in range(5)])
    np.testing.assert_allclose(tta.predict(model, views, "five_crop"), each.mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tta.predict(model, views, "flip+five_crop"),
                               (each.mean(0) + mirrored.mean(0)) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"takes \[N, 5, H, W, C\] five-crop views"):
        tta.predict(model, views[:, 0], "five_crop")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A LeNet-5 trained briefly on 32x32 digits, as a run with crop fraction 0.875, and a
    folder of 60 other digits at 30x40 (so the corners of the resized image differ)."""
    import keras
    from sklearn.datasets import load_digits

    from zoo import Geometry, rundir
    from zoo.models import build

    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype("float32")
    rgb = np.repeat(images[..., None], 3, axis=-1)
    keras.utils.set_random_seed(0)
    model = build("lenet5", weights=None, num_classes=10, input_shape=(32, 32, 3))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(tf.image.resize(rgb[:800], (32, 32)), digits.target[:800], epochs=4,
              batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("tta")
    run = rundir.write_run(root / "run", model=model, model_name="lenet5",
                           class_names=[str(i) for i in range(10)],
                           geometry=Geometry((32, 32), 0.875, "bilinear", 3))
    folder = root / "digits"
    for i in range(1000, 1060):
        pixels = np.asarray(Image.fromarray(images[i].astype("uint8")).resize(
            (40, 30), Image.BILINEAR))
        path = folder / str(digits.target[i]) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert("RGB").save(path)
    return run, folder, model


@pytest.mark.parametrize("mode", ["five_crop", "flip+five_crop"])
def test_evaluate_five_crop_is_the_mean_over_views_computed_by_hand(digits_run, mode,
                                                                    tmp_path):
    from zoo.recipes.evaluate import evaluate

    run, folder, model = digits_run
    metrics = evaluate(run, folder, tta=mode, out_dir=tmp_path / "eval", calibrate=False)
    paths = sorted(folder.glob("*/*.png"))
    labels = np.array([int(p.parent.name) for p in paths])
    views = np.stack([five_views_by_hand(resized_by_hand(
        np.asarray(Image.open(p).convert("RGB")), 36), 32) for p in paths])
    probs = np.stack([np.asarray(model(views[:, i], training=False)) for i in range(5)])
    if mode == "flip+five_crop":
        probs = np.concatenate([probs, np.stack([
            np.asarray(model(views[:, i, :, ::-1], training=False)) for i in range(5)])])
    by_hand = float((probs.mean(0).argmax(1) == labels).mean())
    assert metrics["tta"] == {"mode": mode, "views": tta.VIEWS[mode], "accuracy": by_hand,
                              "accuracy_without": metrics["accuracy"]}
    assert 0.2 < by_hand < 1.0  # a real, imperfect model: the comparison has teeth


@pytest.mark.parametrize("bad", ["nonsense", "five-crop", "flip+flip", "FLIP", "ten_crop"])
def test_unknown_tta_is_refused_naming_the_allowed_values(bad, tmp_path):
    from zoo.recipes.evaluate import evaluate

    with pytest.raises(ValueError, match="use one of none, flip, five_crop, flip\\+five_crop"):
        evaluate("lenet5", tmp_path, tta=bad, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
