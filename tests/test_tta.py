"""Test-time augmentation on real pixels (scikit-learn's digits) through a small LeNet-5."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.recipes import tta


@pytest.fixture(scope="module")
def digits_and_model():
    from sklearn.datasets import load_digits

    from zoo.models import build

    images = load_digits().images[:16] / 16.0 * 255
    x = tf.image.resize(np.repeat(images[..., None], 3, axis=-1).astype("float32"), (32, 32))
    model = build("lenet5", weights=None, num_classes=10, input_shape=(32, 32, 3))
    return x, model


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


@pytest.mark.parametrize("bad", ["nonsense", "five_crop", "flip+five_crop", "FLIP"])
def test_unknown_tta_is_refused_naming_the_allowed_values(bad, tmp_path):
    from zoo.recipes.evaluate import evaluate

    with pytest.raises(ValueError, match="use one of none, flip"):
        evaluate("lenet5", tmp_path, tta=bad, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
