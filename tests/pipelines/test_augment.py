"""Augmentation: presets, mixup / cutmix soft labels, Keras and keras-cv layers, albumentations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from pipeline_helpers import small_folder_at

import pipelines


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return small_folder_at(tmp_path_factory.mktemp("folder"))


def _batches(data, split="train"):
    dataset = getattr(data, split)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def _folder(folder, augment, **kwargs):
    return pipelines.from_folder(folder, image_size=32, batch_size=8, augment=augment,
                                 validation_split=0, shuffle=False, deterministic=True,
                                 **kwargs)


@pytest.mark.parametrize("preset", ["light", "standard", "strong"])
def test_presets_give_valid_pixels(small_folder, preset):
    data = _folder(small_folder, preset)
    assert data.augment == preset and data.label_mode == "int"
    images, labels = _batches(data)
    assert images.shape == (28, 32, 32, 3) and labels.dtype == np.int32
    assert images.min() >= 0 and images.max() <= 255 and images.std() > 10


def test_none_is_the_eval_transform(small_folder):
    data = _folder(small_folder, "none")
    images, labels = _batches(data)
    paths = [p for p, _ in data.train_files]
    reference = np.concatenate([x.numpy() for x in pipelines.from_files(
        paths, image_size=32, batch_size=8).dataset])
    np.testing.assert_array_equal(images, reference)
    assert labels.tolist() == [label for _, label in data.train_files]


def test_strong_adds_randaugment_and_erasing_to_the_same_crops(small_folder):
    standard, _ = _batches(_folder(small_folder, "standard", seed=4))
    again, _ = _batches(_folder(small_folder, "standard", seed=4))
    strong, _ = _batches(_folder(small_folder, "strong", seed=4))
    np.testing.assert_allclose(standard, again)  # the crops are seeded per element
    changed = np.abs(strong - standard).mean(axis=(1, 2, 3)) > 1.0
    assert changed.mean() > 0.5


@pytest.mark.parametrize("preset", ["mixup", "cutmix"])
def test_mixup_and_cutmix_make_soft_labels(small_folder, preset):
    data = pipelines.from_folder(small_folder, image_size=32, batch_size=14, augment=preset)
    assert data.soft_labels and data.label_mode == "categorical"
    images, labels = _batches(data)
    assert labels.shape == (len(data.train_files), 3) and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert ((labels > 0.01) & (labels < 0.99)).any()  # some labels really are mixed
    val_images, val_labels = _batches(data, "val")
    # Validation is never mixed, but one-hot so that one loss serves both.
    assert set(np.unique(val_labels)) <= {0.0, 1.0} and (val_labels.sum(axis=1) == 1).all()
    assert images.max() <= 255 and images.min() >= 0


def test_keras_layers_run_per_batch_on_the_centre_crop(small_folder):
    plain, labels = _batches(_folder(small_folder, "none"))
    halved, labels2 = _batches(_folder(small_folder, [keras.layers.Rescaling(0.5)]))
    np.testing.assert_allclose(halved, plain * 0.5, atol=1e-4)
    assert labels.tolist() == labels2.tolist()
    flipped, _ = _batches(_folder(small_folder, [keras.layers.RandomFlip("horizontal", seed=1),
                                                 keras.layers.RandomContrast(0.3, seed=1)]))
    assert flipped.shape == plain.shape and not np.allclose(flipped, plain)


def test_keras_cv_layers_work_the_same_way(small_folder):
    keras_cv = pytest.importorskip("keras_cv")
    gray, _ = _batches(_folder(small_folder, [keras_cv.layers.Grayscale(output_channels=3)]))
    assert gray.shape == (28, 32, 32, 3)
    np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-3)
    np.testing.assert_allclose(gray[..., 1], gray[..., 2], atol=1e-3)
    hue, _ = _batches(_folder(small_folder, [keras_cv.layers.RandomHue(0.5, (0, 255), seed=1)]))
    plain, _ = _batches(_folder(small_folder, "none"))
    assert not np.allclose(hue, plain) and hue.min() >= 0 and hue.max() <= 255.5


def test_albumentations_compose_runs_with_static_shapes(small_folder):
    import albumentations as A

    compose = A.Compose([A.RandomResizedCrop(size=(32, 24)), A.HorizontalFlip(),
                         A.ToGray(p=1.0)], seed=3)
    data = pipelines.from_folder(small_folder, image_size=(32, 24), batch_size=8,
                                 augment=compose)
    assert data.augment == "albumentations"
    assert data.train.element_spec[0].shape.as_list() == [None, 32, 24, 3]
    images, _ = _batches(data)
    assert images.shape == (len(data.train_files), 32, 24, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # ToGray really ran
    assert images.max() > 100


@pytest.mark.parametrize("transforms, match", [
    ("resize_wrong", r"must return \(32, 32, 3\)"),
    ("normalize", "Remove A.Normalize"),
])
def test_albumentations_mistakes_fail_before_training(small_folder, transforms, match):
    import albumentations as A

    steps = {"resize_wrong": [A.Resize(20, 20)],
             "normalize": [A.Resize(32, 32), A.Normalize()]}[transforms]
    with pytest.raises(ValueError, match=match):
        pipelines.from_folder(small_folder, image_size=32, augment=A.Compose(steps))


def test_albumentations_in_tf_function_keeps_labels(small_folder):
    import albumentations as A

    data = _folder(small_folder, A.Compose([A.Resize(32, 32)]))
    _, labels = _batches(data)
    assert labels.tolist() == [label for _, label in data.train_files]
    assert isinstance(data.train, tf.data.Dataset)


def test_shift_preset_moves_pixels_without_flipping_or_cropping():
    from pipelines.augment import resolve

    plan = resolve("shift", seed=0)
    assert plan.crop == "center" and not plan.flip and not plan.soft_labels
    image = np.zeros((8, 32, 32, 1), "float32")
    image[:, 12:20, 14:18] = 255.0
    out = image
    for layer in plan.batch_layers:
        out = layer(out, training=True)
    out = np.asarray(out)
    assert out.shape == image.shape
    assert not np.allclose(out, image)  # moved
    # A small move: the stroke stays inside the frame, its mass is kept.
    assert abs(out.sum() - image.sum()) / image.sum() < 0.2
