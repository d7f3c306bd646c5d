"""Augmentation: the named presets, Keras / keras-cv layers, albumentations, mixup and cutmix.

A preset is a :class:`Plan`: how the train path crops (random-resized-crop fused with JPEG
decoding, or the eval centre crop), whether it flips, which Keras layers run per image and
per batch, and whether labels become soft. Everything here runs inside ``tf.data`` and keeps
pixels float32 in [0, 255]; normalisation stays the model's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.transforms import DEFAULT_RATIO, DEFAULT_SCALE

PRESETS = ("none", "light", "standard", "strong", "mixup", "cutmix", "shift")


@dataclass(frozen=True)
class Plan:
    """What the train path does to each image and batch.

    Attributes:
        name: Preset name, ``"layers"`` or ``"albumentations"``.
        crop: ``"random"`` (random-resized-crop), ``"center"`` (the eval crop) or
            ``"full"`` (full decode, the albumentations pipeline crops).
        scale: Random-resized-crop area range.
        ratio: Random-resized-crop aspect range.
        flip: Random horizontal flip.
        image_layers: Keras layers applied to each image (after crop and flip).
        batch_layers: Keras layers applied to each batch; labels pass through unchanged.
        mix: A Keras ``MixUp`` or ``CutMix`` layer, applied per batch to images and one-hot
            labels, which then become soft.
        albumentations: An ``albumentations.Compose`` run per image on uint8 pixels.
    """

    name: str
    crop: str = "random"
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    flip: bool = True
    image_layers: tuple = field(default_factory=tuple)
    batch_layers: tuple = field(default_factory=tuple)
    mix: Any = None
    albumentations: Any = None

    @property
    def soft_labels(self) -> bool:
        """Whether the train labels are mixed (float32 ``[B, num_classes]``)."""
        return self.mix is not None


def resolve(augment: Any, *, seed: int = 0) -> Plan:
    """Turns the ``augment=`` argument into a :class:`Plan`.

    Args:
        augment: A preset name (``"none"``, ``"light"``, ``"standard"``, ``"strong"``,
            ``"mixup"``, ``"cutmix"``, ``"shift"`` for digits and characters), None (same
            as ``"none"``), a Keras layer or a list of
            Keras (or keras-cv) preprocessing layers, or an ``albumentations.Compose``. With
            layers, the image is first centre-cropped to size as on the eval path and the
            layers then do all the augmenting, per batch; an albumentations pipeline gets the
            whole decoded image and must itself crop or resize to ``image_size``.
        seed: Seed of the preset's Keras layers.

    Returns:
        The plan.

    Raises:
        ValueError: For an unknown preset name.
        TypeError: For anything else that is not layers or an albumentations pipeline.
    """
    import keras

    if augment is None:
        augment = "none"
    if isinstance(augment, str):
        name = augment.lower()
        if name == "none":
            return Plan("none", crop="center", flip=False)
        if name == "light":
            return Plan("light", scale=(0.35, 1.0))
        if name == "standard":
            return Plan("standard")
        if name == "strong":
            return Plan("strong", image_layers=(
                # RandAugment (Cubuk et al. 2020), two ops of medium magnitude, and random
                # erasing on a quarter of the images (Zhong et al. 2020), as timm's recipes.
                keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                                         seed=seed),
                keras.layers.RandomErasing(factor=0.25, scale=(0.02, 1 / 3),
                                           value_range=(0, 255), seed=seed + 1),
            ))
        if name == "shift":
            # Small shifts and turns, no flip and no crop: for digits, characters and
            # documents, where a mirror image or a cut-off stroke changes the class.
            return Plan("shift", crop="center", flip=False, batch_layers=(
                keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
                keras.layers.RandomRotation(0.04, fill_mode="constant", seed=seed + 1),
            ))
        if name == "mixup":
            return Plan("mixup", mix=keras.layers.MixUp(alpha=0.2, seed=seed))
        if name == "cutmix":
            return Plan("cutmix", mix=keras.layers.CutMix(factor=1.0, seed=seed))
        raise ValueError(f"Unknown augment preset {augment!r}; use one of {', '.join(PRESETS)}, "
                         "a list of Keras preprocessing layers or an albumentations.Compose.")
    if _is_albumentations(augment):
        return Plan("albumentations", crop="full", flip=False, albumentations=augment)
    layers = [augment] if _is_layer(augment) else augment
    if isinstance(layers, Sequence) and layers and all(_is_layer(x) for x in layers):
        return Plan("layers", crop="center", flip=False, batch_layers=tuple(layers))
    raise TypeError(
        f"augment must be a preset name ({', '.join(PRESETS)}), a list of Keras "
        f"preprocessing layers or an albumentations.Compose; got {augment!r}.")


def _is_layer(obj: Any) -> bool:
    import keras

    return isinstance(obj, keras.layers.Layer)


def _is_albumentations(obj: Any) -> bool:
    try:
        import albumentations as A
    except ImportError:  # pragma: no cover - albumentations is a dependency
        return False
    return isinstance(obj, (A.BaseCompose, A.BasicTransform))


def apply_image_layers(image: tf.Tensor, plan: Plan) -> tf.Tensor:
    """Runs the plan's per-image Keras layers (RandAugment, random erasing)."""
    for layer in plan.image_layers:
        image = tf.cast(layer(image, training=True), tf.float32)
    return image


def albumentations_op(image: tf.Tensor, compose: Any, image_size: Sequence[int]) -> tf.Tensor:
    """Runs an albumentations pipeline on one uint8 image through ``tf.numpy_function``.

    Albumentations' transforms are OpenCV calls that release the GIL, so a parallel
    ``Dataset.map`` runs them on several cores; the static shape that numpy_function loses
    is restored for batching.

    Args:
        image: uint8 ``[h, w, 3]``, the whole upright image.
        compose: The albumentations pipeline; its output must be ``image_size``.
        image_size: ``(height, width)`` the pipeline produces.

    Returns:
        float32 ``[height, width, 3]`` in [0, 255].
    """
    def run(pixels: np.ndarray) -> np.ndarray:
        out = compose(image=pixels)["image"]
        return np.asarray(out, dtype=np.float32)

    out = tf.numpy_function(run, [image], tf.float32, stateful=True, name="albumentations")
    out.set_shape([int(image_size[0]), int(image_size[1]), 3])
    return out


def check_albumentations(compose: Any, sample: np.ndarray, image_size: Sequence[int]) -> None:
    """Runs the pipeline once on a real image so that a wrong output fails before training.

    Raises:
        ValueError: If the output is not ``image_size`` x 3 channels, channels-last, or
            leaves [0, 255] (an ``A.Normalize`` belongs to the model, not the pipeline).
    """
    out = np.asarray(compose(image=sample)["image"])
    expected = (int(image_size[0]), int(image_size[1]), 3)
    if out.shape != expected:
        raise ValueError(
            f"The albumentations pipeline turned a {sample.shape} image into {out.shape}; "
            f"it must return {expected} (channels last). End it with "
            f"A.RandomResizedCrop(size={expected[:2]}) or A.Resize({expected[0]}, "
            f"{expected[1]}), and leave out ToTensorV2.")
    if out.min() < 0 or out.max() > 255:
        raise ValueError(
            f"The albumentations pipeline returned values in [{out.min():.3g}, "
            f"{out.max():.3g}]; pixels must stay in [0, 255]. Remove A.Normalize: "
            "normalisation is done inside the zoo model.")


def finish_batches(ds: tf.data.Dataset, plan: Plan | None, *, num_classes: int,
                   label_mode: str) -> tf.data.Dataset:
    """Batch-level steps: one-hot labels, mixup / cutmix, and per-batch Keras layers.

    Args:
        ds: Batches of (float32 images, int32 labels).
        plan: The train plan, or None on the eval path.
        num_classes: Width of one-hot labels.
        label_mode: ``"int"`` or ``"categorical"`` (one-hot float32).

    Returns:
        The mapped dataset.
    """
    if label_mode == "categorical":
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes, dtype=tf.float32)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if plan is None:
        return ds
    if plan.mix is not None:
        mix = plan.mix

        def mixed(x, y):
            out = mix({"images": x, "labels": y}, training=True)
            return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

        ds = ds.map(mixed, num_parallel_calls=tf.data.AUTOTUNE)
    for layer in plan.batch_layers:
        ds = ds.map(lambda x, y, layer=layer: (tf.cast(layer(x, training=True), tf.float32), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds
