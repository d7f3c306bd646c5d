"""What every entry point returns: :class:`ImageData`, with counts and class weights."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from pipelines import transforms
from pipelines.dataset import EvalFiles, eval_files
from pipelines.warn import warn_user

if TYPE_CHECKING:
    from zoo import Geometry


class ImageData:
    """Train and validation datasets with everything a recipe and an exporter need.

    Attributes:
        train: Batches of (float32 pixels ``[B, H, W, C]`` in [0, 255], labels). Labels are
            int32 ``[B]``, or float32 ``[B, num_classes]`` when ``label_mode`` is
            ``"categorical"`` (always so with mixup / cutmix, where they are soft) or
            ``"multi_hot"``. Multi-hot labels are 0/1 per class and never smoothed by the
            pipeline; with mixup / cutmix they are mixed as timm mixes them (the convex
            combination of two images' multi-hot targets).
        val: The same for validation (never augmented, always in file order), or None.
            An entry point may still be building and filling its memory cache in the
            background when it returns; the first read of ``val`` waits for that.
        test: A separate test split when the source has one, else None.
        class_names: Class names; the label is the index.
        num_classes: ``len(class_names)``.
        geometry: The eval geometry the data used (a ``zoo.Geometry``): image size, crop
            fraction, interpolation and channels.
        image_size: ``(height, width)``.
        channels: 3 (RGB) or 1 (grayscale models).
        crop_fraction: The eval centre-crop fraction.
        interpolation: Resize method.
        batch_size: Batch size.
        label_mode: ``"int"``, ``"categorical"`` or (multi-label data) ``"multi_hot"``, for
            train, val and test alike.
        multi_label: Whether an image may carry several classes (label tables with a
            delimiter, list-valued labels or ``multi_label=True``). Then ``label_mode`` is
            ``"multi_hot"``, the labels of every split are float32 ``[B, num_classes]``
            multi-hot, the ``*_files`` lists hold ``(path, tuple of class indices)`` and
            ``counts[split][class]`` counts the images carrying the class (so the counts
            of a split may add up to more than its images). False for folders and TFDS.
        sampling: How the train stream draws images: ``"natural"`` (each image once per
            epoch) or ``"balanced"`` (every class equally often, re-sampled with
            replacement; one epoch is still ``len(train_files)`` images).
        soft_labels: Whether train labels are mixed (mixup / cutmix).
        augment: Name of the train augmentation.
        skipped: ``(path, reason)`` of every file left out.
        manifest: The split as a dict (also written to ``manifest_path``).
        manifest_path: Where the manifest was written, or None.
        train_files: ``(path, label)`` of the training images (the label a class index, or
            a tuple of class indices when ``multi_label``).
        val_files: ``(path, label)`` of the validation images.
        test_files: ``(path, label)`` of the test images.
        source: ``"folder"``, ``"table"`` (``from_csv`` / ``from_dataframe``) or ``"tfds"``.
        root: The image folder (for tables: the folder the paths are relative to).
        steps_per_epoch: Batches in one pass of ``train`` (None when unknown).
    """

    def __init__(self, *, train, val, class_names, geometry: Geometry, batch_size: int,
                 label_mode: str, plan, skipped=(), manifest=None, manifest_path=None,
                 train_files=(), val_files=(), test=None, test_files=(),
                 counts: dict | Callable[[], dict] | None = None, source: str = "folder",
                 root: str | None = None, multi_label: bool = False,
                 sampling: str = "natural"):
        self.train = train
        self._val = val
        self.test = test
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.image_size = tuple(geometry.image_size)
        self.channels = geometry.channels
        self.crop_fraction = geometry.crop_fraction
        self.interpolation = geometry.interpolation
        self.geometry = geometry
        self.batch_size = batch_size
        self.label_mode = label_mode
        self.multi_label = bool(multi_label)
        self.sampling = sampling
        self.soft_labels = plan.soft_labels
        self.augment = plan.name
        self.skipped = list(skipped)
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.train_files = list(train_files)
        self.val_files = list(val_files)
        self.test_files = list(test_files)
        self.source = source
        self.root = root
        cardinality = int(train.cardinality()) if train is not None else -1
        self.steps_per_epoch = cardinality if cardinality > 0 else None
        self._counts = counts

    @property
    def val(self) -> tf.data.Dataset | None:
        """The validation batches (see the class's attributes), once they are ready."""
        if isinstance(self._val, concurrent.futures.Future):
            self._val = self._val.result()
        return self._val

    @val.setter
    def val(self, value: tf.data.Dataset | None) -> None:
        self._val = value

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{"train": {"cat": 40, ...}, "val": {...}}``.

        For multi-label data, the images carrying each class.
        """
        if callable(self._counts):
            self._counts = self._counts()
        return self._counts

    @property
    def class_weights(self) -> dict[int, float]:
        """Balanced class weights for ``model.fit(class_weight=...)``, from train counts.

        For multi-label data they come from the images carrying each class; Keras'
        ``class_weight`` weighs an image by its one class, so they do not apply there.
        """
        return balanced_class_weights([self.counts["train"].get(n, 0)
                                       for n in self.class_names])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` for ``zoo.build(input_shape=...)``."""
        return (*self.image_size, self.channels)

    def eval_transform(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """The eval path on encoded bytes in pure TensorFlow (for serving and ``evaluate``).

        Args:
            image_bytes: A scalar string tensor (JPEG, PNG, GIF or BMP).

        Returns:
            float32 ``[H, W, C]`` in [0, 255].
        """
        return transforms.make_eval_transform(self.image_size, self.crop_fraction,
                                              self.interpolation, self.channels)(image_bytes)

    def from_files(self, paths: Iterable[str | os.PathLike], labels: Sequence[int] | None = None,
                   *, batch_size: int | None = None, check: str = "full") -> EvalFiles:
        """The eval path over any files, with this data's size, crop and interpolation."""
        return eval_files(paths, labels, geometry=self.geometry,
                          batch_size=batch_size or self.batch_size, check=check)

    def summary(self) -> str:
        """A few lines for logs: classes, counts, skipped files, augmentation, manifest."""
        counts = self.counts
        lines = [f"{self.num_classes} classes, image size {self.image_size[0]}x"
                 f"{self.image_size[1]}, augment={self.augment!r}, labels={self.label_mode}, "
                 f"sampling={self.sampling}"]
        files = {"train": self.train_files, "val": self.val_files, "test": self.test_files}
        for split, per_class in counts.items():
            # A multi-label image counts once per class it carries: count the files instead.
            images = len(files[split]) if self.multi_label else sum(per_class.values())
            lines.append(f"  {split}: {images} images")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} files (see .skipped)")
        if self.manifest_path:
            lines.append(f"  split manifest: {self.manifest_path}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ImageData(source={self.source!r}, classes={self.num_classes}, "
                f"image_size={self.image_size}, batch_size={self.batch_size}, "
                f"augment={self.augment!r}, skipped={len(self.skipped)})")


def balanced_class_weights(counts: Sequence[int]) -> dict[int, float]:
    """``n_samples / (n_classes * count)`` per class, as scikit-learn's "balanced" mode.

    Args:
        counts: Training images per class, by class index.

    Returns:
        ``{class_index: weight}``; a class without images gets weight 0.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = [i for i, c in enumerate(counts) if c > 0]
    labels = np.repeat(np.array(present), [counts[i] for i in present])
    weights = compute_class_weight("balanced", classes=np.array(present), y=labels)
    out = {i: 0.0 for i in range(len(counts))}
    out.update({i: round(float(w), 4) for i, w in zip(present, weights)})
    return out


def warn_if_imbalanced(counts: dict[str, int], class_names: Sequence[str],
                       ratio: float | None, multi_label: bool = False) -> None:
    """Warns, naming the remedies to try (and the class weights), when classes are imbalanced.

    Args:
        counts: Training images per class name.
        class_names: Class names in label order.
        ratio: Warn when the largest class has this many times the smallest's images.
        multi_label: Multi-label data (counts are images carrying each class): balanced
            sampling and class weights do not apply there, a focal loss does.
    """
    if not ratio:
        return
    values = [counts.get(n, 0) for n in class_names]
    smallest, largest = min(values), max(values)
    if smallest == 0 or largest / smallest < ratio:
        return
    sizes = (f"Classes are imbalanced: {largest} training images in the largest class, "
             f"{smallest} in the smallest.")
    if multi_label:
        warn_user(f"{sizes} Try loss='focal' (binary focal cross-entropy) in zoo.finetune, "
                  "or collect more images of the rare classes.")
        return
    weights = balanced_class_weights(values)
    pairs = ", ".join(f"{class_names[i]}: {w:.3g}" for i, w in weights.items())
    warn_user(
        f"{sizes} Try, in zoo.finetune or on the command line: sampling='balanced' "
        f"(re-sample the train stream so every class comes equally often), "
        f"class_weight='balanced' (here class_weight={{{pairs}}}; by index: "
        f"data.class_weights) or loss='focal'; or collect more images of the small classes.")


__all__ = ["ImageData", "balanced_class_weights", "warn_if_imbalanced"]
