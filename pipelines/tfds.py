"""TensorFlow Datasets as input, through the same decode, crop and augment path as folders.

Images are read undecoded (``tfds.decode.SkipDecoding``), so that JPEG datasets such as
``imagenet2012`` or ``tf_flowers`` take the fused crop-and-decode path; PNG datasets (MNIST,
CIFAR) are decoded by ``transforms.graph_decode``, the decode rule of every path. The result
is the same :class:`~pipelines.imagedata.ImageData` as :func:`pipelines.from_folder` returns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines import augment as augment_module
from pipelines import transforms
from pipelines.cache import is_file_cache
from pipelines.dataset import build_dataset
from pipelines.imagedata import ImageData, warn_if_imbalanced
from pipelines.options import Options, resolve_options
from pipelines.split import write_manifest
from pipelines.transforms import KIND_GRAPH, KIND_JPEG

TFDS_MANIFEST_FORMAT = "zoo.pipelines.tfds/1"
VALIDATION_SPLITS = ("validation", "valid", "val", "test")


def _resolve_splits(info, split, validation_split: float) -> dict[str, str]:
    known = list(info.splits.keys()) if info.splits else []
    if isinstance(split, (list, tuple)):
        if not 1 <= len(split) <= 3:
            raise ValueError(f"split is a name or (train, val[, test]); got {split!r}.")
        names = dict(zip(("train", "val", "test"), split))
        return {k: v for k, v in names.items() if v}
    train = split or "train"
    held_out = next((s for s in VALIDATION_SPLITS if s in known and s != train), None)
    if held_out is not None:
        return {"train": train, "val": held_out}
    if validation_split <= 0:
        return {"train": train}
    if "[" in train:
        raise ValueError(
            f"Cannot carve a validation split out of {train!r}; pass split=(train, val), "
            f"e.g. ('train[:80%]', 'train[80%:]').")
    # TFDS slicing is by position (deterministic, not stratified and not seeded).
    cut = int(round(100 * (1 - validation_split)))
    return {"train": f"{train}[:{cut}%]", "val": f"{train}[{cut}%:]"}


def _builder(name: str, data_dir, image_key: str, label_key: str, download: bool):
    """The TFDS builder of ``name`` (prepared if ``download``), with its class names."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    except Exception as error:  # noqa: BLE001 - TFDS raises several types here
        raise ValueError(f"TFDS has no dataset {name!r} ({error}).") from error
    features = builder.info.features
    if image_key not in features or label_key not in features:
        raise ValueError(f"{name!r} has features {sorted(features.keys())}; pass image_key= "
                         f"and label_key= (got {image_key!r}, {label_key!r}).")
    if not isinstance(features[image_key], tfds.features.Image):
        raise ValueError(f"{name}[{image_key!r}] is a {type(features[image_key]).__name__}, "
                         "not an Image feature.")
    label_feature = features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(f"{name}[{label_key!r}] is a {type(label_feature).__name__}, not a "
                         "ClassLabel; pick the class-label feature with label_key=.")
    if download:
        try:
            builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001 - network and checksum errors alike
            raise RuntimeError(
                f"Could not download and prepare TFDS dataset {name!r} into "
                f"{builder.data_dir}: {error}. Without a network, prepare it elsewhere and "
                "copy the directory into data_dir.") from error
    return builder, list(label_feature.names)


@dataclass(frozen=True)
class _Source:
    """One prepared TFDS dataset and the two features read from it."""

    builder: Any
    image_key: str
    label_key: str
    seed: int

    def records(self, split_name: str, training: bool) -> tf.data.Dataset:
        """``(bytes, label, kind, orientation)`` elements of a split, images undecoded."""
        import tensorflow_datasets as tfds

        ds = self.builder.as_dataset(
            split=split_name, shuffle_files=training,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=self.seed))
        image_key, label_key = self.image_key, self.label_key

        def element(example):
            data = example[image_key]
            kind = tf.where(tf.io.is_jpeg(data), KIND_JPEG, KIND_GRAPH)
            return data, tf.cast(example[label_key], tf.int32), kind, tf.constant(1, tf.int32)

        return ds.map(element, num_parallel_calls=tf.data.AUTOTUNE)

    def num_examples(self, split_name: str) -> int | None:
        """The split's size, when TFDS knows it."""
        try:
            return int(self.builder.info.splits[split_name].num_examples) or None
        except (KeyError, ValueError, TypeError):
            return None

    def cache_key(self, split_name: str, split_seed: int | None) -> str:
        """What decides a split's cached elements, for ``build_dataset(cache_key=)``.

        The dataset with its config and version, its prepared directory (with the size and
        mtime of each file there, so that a dataset prepared again gives another key), the
        split string, the two features, and the seed where it orders the elements
        (shuffled files).
        """
        prepared = []
        try:
            for entry in sorted(os.scandir(self.builder.data_dir), key=lambda e: e.name):
                if entry.is_file():
                    stat = entry.stat()
                    prepared.append([entry.name, stat.st_size, stat.st_mtime_ns])
        except OSError:  # not a local directory (e.g. gs://) or not there (TFDS' mock data)
            pass
        return json.dumps({"dataset": self.builder.info.full_name,
                           "data_dir": str(self.builder.data_dir), "split": split_name,
                           "image_key": self.image_key, "label_key": self.label_key,
                           "seed": split_seed, "prepared": prepared}, sort_keys=True)

    def counter(self, splits: dict[str, str], class_names: list[str]):
        """``fn() -> {split: {class: images}}``, which reads every label when called."""
        import tensorflow_datasets as tfds

        def count() -> dict[str, dict[str, int]]:
            out = {}
            for key, split_name in splits.items():
                labels = self.builder.as_dataset(
                    split=split_name, decoders={self.image_key: tfds.decode.SkipDecoding()})
                labels = labels.map(lambda ex: ex[self.label_key]).batch(4096)
                totals = np.zeros(len(class_names), np.int64)
                for batch in labels.as_numpy_iterator():
                    totals += np.bincount(batch, minlength=len(class_names))[:len(class_names)]
                out[key] = {n: int(c) for n, c in zip(class_names, totals)}
            return out

        return count


def _datasets(source: _Source, splits: dict[str, str], num_classes: int, options: Options,
              shuffle_buffer: int) -> dict:
    """``{"train", "val", "test"}`` datasets of the resolved splits (None where absent)."""
    common = dict(read_files=False, kinds=(KIND_JPEG, KIND_GRAPH), oriented=False,
                  **options.dataset_keywords(num_classes))
    file_cache = is_file_cache(options.cache)

    def cache_key(split_name: str, split_seed: int | None) -> str | None:
        # Only a file cache needs one: the prepared directory is not listed otherwise.
        return source.cache_key(split_name, split_seed) if file_cache else None

    train_size = source.num_examples(splits["train"])
    out = {"train": build_dataset(
        source.records(splits["train"], True), training=True, size=train_size,
        shuffle_buffer=min(shuffle_buffer, train_size or shuffle_buffer),
        deterministic=options.deterministic, cache_key=cache_key(splits["train"], options.seed),
        **common)}
    for key in ("val", "test"):
        out[key] = build_dataset(
            source.records(splits[key], False), training=False,
            size=source.num_examples(splits[key]), cache_name=key,
            cache_key=cache_key(splits[key], None), **common) if key in splits else None
    return out


def from_tfds(
    name: str,
    split: str | Sequence[str] | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: Sequence[int] | int | None = None,
    batch_size: int = 32,
    validation_split: float = 0.2,
    seed: int = 0,
    augment: Any = "standard",
    model: str | None = None,
    weights: Any = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    channels: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    label_mode: str | None = None,
    download: bool = True,
    out_dir: str | os.PathLike | None = None,
    manifest_dir: str | os.PathLike | None = None,
    cache: bool | str = False,
    shuffle_buffer: int = 10_000,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    imbalance_warning: float | None = None,
) -> ImageData:
    """Train and validation pipelines from a TFDS image-classification dataset.

    Args:
        name: TFDS name, e.g. ``"tf_flowers"`` or ``"imagenet2012:5.1.0"``.
        split: None (``"train"`` and the dataset's ``validation``/``test`` split, or the
            last ``validation_split`` of ``train`` when it has none), a train split name,
            or ``(train, val[, test])`` split strings such as ``("train[:90%]",
            "train[90%:]")``.
        data_dir: TFDS data directory.
        image_size: Output ``(height, width)``; defaults to the model's, else 224x224.
        batch_size: Batch size.
        validation_split: Fraction of ``train`` held out when the dataset has no validation
            split (by position: TFDS slices are not stratified).
        seed: Seed of file shuffling, the shuffle buffer and the augmentation.
        augment: See :func:`pipelines.augment.resolve`.
        model: A zoo model name whose geometry (with ``weights``) gives size, crop
            fraction, interpolation and channels.
        weights: The model's weights (a catalog tag, a file, or None), as in
            :func:`pipelines.from_folder`.
        crop_fraction: Overrides the model's.
        interpolation: Overrides the model's.
        channels: Overrides the model's (MNIST's single channel becomes RGB by default).
        image_key: The image feature.
        label_key: The ``ClassLabel`` feature.
        label_mode: ``"int"`` or ``"categorical"``, as in :func:`pipelines.from_folder`.
        download: Download and prepare the dataset if it is not in ``data_dir``.
        out_dir: Where to write ``split.json`` (dataset, version and split strings).
        manifest_dir: Another name for ``out_dir``.
        cache: As in :func:`pipelines.from_folder`; off by default since TFDS datasets are
            large. Only the validation and test images are cached here (the train path reads
            TFDS' records every epoch). A file cache is keyed by the dataset's full name and
            version, its prepared directory and files (sizes, mtimes), the split string,
            the features and the geometry: another dataset, split or size in the same
            directory makes another cache.
        shuffle_buffer: Shuffle buffer of the train path (on top of TFDS' file shuffling).
        deterministic: Fix the train order under parallel maps.
        drop_remainder: Drop the last partial batch.
        imbalance_warning: As in :func:`pipelines.from_folder`, but off by default: counting
            labels reads the whole train split, so ``counts`` is computed when first used.

    Returns:
        An :class:`~pipelines.imagedata.ImageData` (``skipped`` is empty: TFDS records are
        pre-validated).
    """
    options = resolve_options(
        model=model, weights=weights, image_size=image_size, crop_fraction=crop_fraction,
        interpolation=interpolation, channels=channels, augment=augment, seed=seed,
        label_mode=label_mode, batch_size=batch_size, validation_split=validation_split,
        out_dir=out_dir, manifest_dir=manifest_dir, cache=cache, deterministic=deterministic,
        drop_remainder=drop_remainder, imbalance_warning=imbalance_warning)
    builder, class_names = _builder(name, data_dir, image_key, label_key, download)
    splits = _resolve_splits(builder.info, split, validation_split)
    source = _Source(builder, image_key, label_key, seed)
    if options.plan.albumentations is not None:
        first = next(iter(source.records(splits["train"], False).take(1)))[0]
        sample = transforms.graph_decode(first).numpy()  # as the train path decodes it
        augment_module.check_albumentations(options.plan.albumentations, sample,
                                            options.geometry.image_size)
    datasets = _datasets(source, splits, len(class_names), options, shuffle_buffer)
    manifest = {
        "format": TFDS_MANIFEST_FORMAT,
        "name": name,
        "version": str(builder.info.version),
        "data_dir": str(builder.data_dir),
        "splits": splits,
        "class_names": class_names,
        "seed": seed,
    }
    manifest_path = write_manifest(options.out_dir, manifest)
    data = ImageData(
        **datasets, class_names=class_names, geometry=options.geometry,
        batch_size=batch_size, label_mode=options.label_mode, plan=options.plan,
        manifest=manifest, manifest_path=str(manifest_path) if manifest_path else None,
        counts=source.counter(splits, class_names), source="tfds")
    if imbalance_warning:
        warn_if_imbalanced(data.counts["train"], class_names, imbalance_warning)
    return data


__all__ = ["TFDS_MANIFEST_FORMAT", "VALIDATION_SPLITS", "from_tfds"]
