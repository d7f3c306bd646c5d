"""from_tfds on TFDS's own mock data (nothing can be downloaded here)."""

from __future__ import annotations

import json

import numpy as np
import pipeline_helpers  # noqa: F401  (puts the project root first on sys.path)
import pytest

import pipelines

tfds = pytest.importorskip("tensorflow_datasets")


def test_mnist_mock_gives_rgb_batches_and_a_carved_validation_split(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        data = pipelines.from_tfds("mnist", image_size=32, batch_size=4, out_dir=tmp_path)
        assert data.source == "tfds" and data.num_classes == 10
        assert data.class_names[:3] == ["0", "1", "2"]
        train = [(x.numpy(), y.numpy()) for x, y in data.train]
        val = [(x.numpy(), y.numpy()) for x, y in data.val]
        counts = data.counts
    images = np.concatenate([x for x, _ in train])
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255 and images.std() > 1
    assert all(y.dtype == np.int32 for _, y in train)
    # MNIST is grayscale: the three channels are equal.
    np.testing.assert_allclose(images[..., 0], images[..., 2], atol=1e-3)
    n_train = sum(len(y) for _, y in train)
    n_val = sum(len(y) for _, y in val)
    assert n_train == sum(counts["train"].values()) and n_val == sum(counts["val"].values())
    assert n_train > 0 and n_val > 0  # (the mock serves every slice in full)
    manifest = json.loads((tmp_path / "split.json").read_text())
    assert manifest["name"] == "mnist"
    assert manifest["splits"] == {"train": "train[:80%]", "val": "train[80%:]"}


def test_explicit_splits_model_geometry_and_mixup():
    with tfds.testing.mock_data(num_examples=12):
        data = pipelines.from_tfds("tf_flowers", split=("train[:50%]", "train[50%:]"),
                                   model="lenet5", batch_size=6, augment="mixup")
        images, labels = next(iter(data.train))
        val_images, val_labels = next(iter(data.val))
    assert data.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    assert images.shape[1:] == (32, 32, 1) and val_images.shape[1:] == (32, 32, 1)
    assert labels.shape == (6, 5) and data.soft_labels
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert val_labels.shape == (6, 5)


def test_wrong_feature_names_are_clear():
    with tfds.testing.mock_data(num_examples=4), pytest.raises(ValueError,
                                                               match="pass image_key="):
        pipelines.from_tfds("mnist", image_key="picture")
