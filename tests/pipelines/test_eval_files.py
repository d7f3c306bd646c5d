"""from_files: the geometry follows the model's weights, and its pixels are the bytes
path's (make_eval_transform) for 1- and 3-channel models alike."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from pipeline_helpers import png_bytes

import pipelines
import zoo


@pytest.mark.parametrize("channels", [1, 3])
def test_from_files_gives_the_bytes_path_s_pixels(tmp_path, channels):
    pixels = np.random.default_rng(1).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(pixels))
    size = (32, 32)
    served = pipelines.make_eval_transform(size, 1.0, "bilinear", channels)(
        tf.constant(path.read_bytes())).numpy()
    files = pipelines.from_files([path], image_size=size, crop_fraction=1.0,
                                 interpolation="bilinear", channels=channels)
    evaluated = np.concatenate([batch.numpy() for batch in files.dataset])[0]
    assert evaluated.shape == served.shape == (*size, channels)
    np.testing.assert_array_equal(evaluated, served)


def test_the_geometry_follows_the_weights_and_the_caller_wins(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(pixels))
    expected = zoo.geometry("resnet50", "imagenet", image_size=32)
    assert expected.crop_fraction != zoo.geometry("resnet50").crop_fraction
    with_weights = pipelines.from_files([path], model="resnet50", weights="imagenet",
                                        image_size=32)
    served = pipelines.make_eval_transform(
        expected.image_size, expected.crop_fraction, expected.interpolation,
        expected.channels)(tf.constant(path.read_bytes())).numpy()
    np.testing.assert_array_equal(next(iter(with_weights.dataset)).numpy()[0], served)
    options = pipelines.options.resolve_options(model="resnet50", weights="imagenet",
                                                crop_fraction=0.5)
    assert options.geometry.crop_fraction == 0.5


def test_from_folder_records_the_geometry_of_the_weights(tmp_path):
    from pipeline_helpers import make_folder

    root = make_folder(tmp_path / "images", {"a": 2, "b": 2})
    data = pipelines.from_folder(root, model="resnet50", weights="imagenet", image_size=32,
                                 augment="none", cache=False)
    assert data.geometry == zoo.geometry("resnet50", "imagenet", image_size=32)
    assert data.crop_fraction == data.geometry.crop_fraction
