"""The ``tf.data`` graph: checked files (or TFDS records) to batches of pixels and labels.

:func:`build_dataset` is shared by every entry point. The train path caches encoded bytes,
shuffles, takes a seeded random crop per image and augments; the eval path takes the
centre crop, caches finished images and keeps file order. :func:`eval_files` is the eval
path over any list of files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from pipelines import augment as augment_module
from pipelines import cache as cache_module
from pipelines import sampling as sampling_module
from pipelines import transforms
from pipelines.probe import ImageFile, check_files, report_skipped
from pipelines.transforms import KIND_GRAPH, KIND_JPEG

if TYPE_CHECKING:
    from zoo import Geometry

AUTOTUNE = tf.data.AUTOTUNE
# The modules whose code decides the eval path's pixels: their source is part of the key of
# every cache of finished images.
EVAL_PIXEL_CODE = (transforms.__file__, __file__)


def as_written(fn):
    """``fn`` marked to be traced as written, without AutoGraph's rewrite of its source.

    The per-element functions of these graphs branch on tensors only through
    ``tf.cond`` / ``tf.switch_case`` (their Python ``if`` statements test options fixed
    when the graph is built), so the rewrite changes nothing in the graph; it cost about
    0.75 s of every fresh process's first ``from_folder`` on 2 cores (issue 19).
    """
    return tf.autograph.experimental.do_not_convert(fn)


@as_written
def read_element(source, label, kind, orientation):
    """``(path, ...)`` to ``(file bytes, ...)``: the train path's read, before its cache."""
    return tf.io.read_file(source), label, kind, orientation


def multi_hot(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """float32 ``[N, num_classes]``: 1 where an image carries the class."""
    out = np.zeros((len(labels), num_classes), np.float32)
    for row, indices in enumerate(labels):
        out[row, list(indices)] = 1.0
    return out


def records(files: Sequence[ImageFile], multi_label_classes: int | None = None
            ) -> tf.data.Dataset:
    """``(path, label, kind, orientation)`` elements of checked files, for :func:`build_dataset`.

    Args:
        files: The checked files.
        multi_label_classes: For multi-label files (labels are tuples of class indices),
            the number of classes: labels become float32 multi-hot rows of that width.
            None: labels are int32 class indices.
    """
    labels = [f.label for f in files]
    return tf.data.Dataset.from_tensor_slices((
        # Bytes, as the file system has them: a name that is not valid UTF-8 still opens.
        tf.constant([os.fsencode(f.path) for f in files], tf.string),
        tf.constant(multi_hot(labels, multi_label_classes)) if multi_label_classes
        else tf.constant(labels, tf.int32),
        tf.constant([f.kind for f in files], tf.int32),
        tf.constant([f.orientation for f in files], tf.int32),
    ))


def decoders(files: Sequence[ImageFile]) -> dict:
    """What checked files need of the decoders, as :func:`build_dataset` keywords."""
    # What the scan knows lets the graph leave out decoders, rotations and DCT downscaling
    # that no file needs: fewer ops per image.
    return dict(kinds=tuple(sorted({f.kind for f in files})) or (KIND_JPEG,),
                oriented=any(f.orientation != 1 for f in files),
                formats=tuple(sorted({f.fmt for f in files if f.kind == KIND_GRAPH})),
                largest_side=max((f.short_side for f in files), default=0))


@functools.lru_cache(maxsize=1)
def eval_code_digest() -> str:
    """A digest of the code that makes eval pixels (and of the decoders' versions)."""
    return cache_module.code_digest(*EVAL_PIXEL_CODE)


def _cache_key(cache: Any, cache_key: str | None, training: bool,
               geometry: Geometry) -> dict | None:
    """The file cache's key (see ``cache.cache_prefix``), or None when none is needed."""
    if not cache_module.is_file_cache(cache) or cache_key is None:
        return None
    key: dict[str, Any] = {"source": cache_key, "path": "train" if training else "eval"}
    if not training:  # finished images, not encoded bytes
        key.update(image_size=list(geometry.image_size),
                   crop_fraction=float(geometry.crop_fraction),
                   interpolation=geometry.interpolation, channels=int(geometry.channels),
                   code=eval_code_digest())
    return key


def int_or_multi_hot(label: tf.Tensor) -> tf.Tensor:
    """Class indices as int32; multi-hot rows (float32) as they are."""
    return label if label.dtype == tf.float32 else tf.cast(label, tf.int32)


def _train_decoder(plan, geometry: Geometry, read_files: bool, decoding: dict,
                   dct_scaling: bool):
    """``fn((source, label, kind, orientation), seed) -> (image, label)`` of the train path."""
    size_hw = geometry.image_size

    @as_written
    def decode_one(element, element_seed):
        source, label, kind, orientation = element
        data = tf.io.read_file(source) if read_files else source
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(element_seed, 2))
        if plan.crop == "random":
            image = transforms.train_crop(
                data, kind, orientation, crop_seed, size_hw, scale=plan.scale,
                ratio=plan.ratio, interpolation=geometry.interpolation,
                flip_seed=flip_seed if plan.flip else None, dct_scaling=dct_scaling,
                **decoding)
        elif plan.crop == "full":
            image = transforms.decode_upright(data, kind, orientation, **decoding)
        else:
            image = transforms.eval_crop(data, kind, orientation, size_hw,
                                         crop_fraction=geometry.crop_fraction,
                                         interpolation=geometry.interpolation, **decoding)
            if plan.flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return image, int_or_multi_hot(label)

    return decode_one


def _train_augmenter(plan, geometry: Geometry):
    """``fn(image, label)`` of the per-image steps after decoding, or None if there are none."""
    size_hw = geometry.image_size
    # With nothing left to do per image (crops already have their static size), one tf.data
    # stage fewer.
    if not (plan.crop == "full" or plan.image_layers or geometry.channels != 3):
        return None

    @as_written
    def augment_one(image, label):
        if plan.crop == "full":
            image = augment_module.albumentations_op(image, plan.albumentations, size_hw)
        image = augment_module.apply_image_layers(image, plan)
        image = transforms.to_channels(image, geometry.channels)
        image.set_shape([size_hw[0], size_hw[1], geometry.channels])
        return image, label

    return augment_one


def _keep_length(ds: tf.data.Dataset, size: int | None) -> tf.data.Dataset:
    """Drops images whose decoding fails, keeping the epoch at ``size`` images."""
    # Only decoding is guarded: an error in an augmentation must still surface.
    ds = ds.ignore_errors(log_warning=True)
    if size:
        # An image dropped at run time is replaced by one of the next (reshuffled) pass, so
        # that every epoch has exactly `size` images and the cardinality stays known (Keras'
        # progress, learning-rate schedules); repeat(2), not repeat(), so that files
        # vanishing mid-run end the epoch instead of looping.
        ds = ds.repeat(2).take(size).apply(tf.data.experimental.assert_cardinality(size))
    return ds


def _train_batches(ds: tf.data.Dataset, *, size, geometry, plan, batch_size, num_classes,
                   label_mode, seed, read_files, cache, cache_name, key, shuffle,
                   shuffle_buffer, deterministic, drop_remainder, decoding, dct_scaling,
                   skip_errors, balanced_over) -> tf.data.Dataset:
    in_memory = False
    if cache and read_files:
        ds = cache_module.cached(ds.map(read_element, num_parallel_calls=AUTOTUNE), cache,
                                 name=cache_name, key=key)
        read_files, in_memory = False, cache is True
    if balanced_over:
        ds = sampling_module.balanced(ds, balanced_over, size=size, seed=seed, shuffle=shuffle,
                                      in_memory=in_memory)
    elif shuffle:
        ds = ds.shuffle(shuffle_buffer or size or 10_000, seed=seed,
                        reshuffle_each_iteration=True)
    # One stateless seed per element: the crop of an image depends on the seed and the
    # epoch only, never on thread timing.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))
    decode_one = _train_decoder(plan, geometry, read_files, decoding, dct_scaling)
    ds = ds.map(decode_one, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if skip_errors:
        ds = _keep_length(ds, size)
    augment_one = _train_augmenter(plan, geometry)
    if augment_one is not None:
        ds = ds.map(augment_one, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                  deterministic=deterministic)
    return augment_module.finish_batches(ds, plan, num_classes=num_classes,
                                         label_mode=label_mode)


def cached_dtype(channels: int) -> tf.DType:
    """The dtype the eval path caches its finished images in, for ``channels``."""
    # uint8 RGB: a quarter of the memory of float32, and exact, since the eval crop rounds
    # to whole pixel values. A grey level is not whole (157.74), so 1-channel images stay
    # float32, as the bytes path gives them (truncating them to uint8 was up to one level
    # off). Converting cached uint8 RGB to grey after the cache instead made TensorFlow log
    # an error line on this CPU ("oneDNN supports DT_UINT8 only on platforms with AVX-512").
    return tf.uint8 if channels == 3 else tf.float32


def _eval_batches(ds: tf.data.Dataset, *, geometry, batch_size, num_classes, label_mode,
                  read_files, cache, cache_name, key, deterministic, drop_remainder,
                  decoding) -> tf.data.Dataset:
    size_hw = geometry.image_size

    @as_written
    def eval_one(source, label, kind, orientation):
        data = tf.io.read_file(source) if read_files else source
        image = transforms.eval_crop(data, kind, orientation, size_hw,
                                     crop_fraction=geometry.crop_fraction,
                                     interpolation=geometry.interpolation, **decoding)
        image = transforms.to_channels(image, geometry.channels)
        image.set_shape([size_hw[0], size_hw[1], geometry.channels])
        return tf.cast(image, cached_dtype(geometry.channels)), int_or_multi_hot(label)

    # No ignore_errors here: eval files are fully decoded when checked, so the epoch is
    # exact, in file order, and of known length.
    ds = cache_module.cached(
        ds.map(eval_one, num_parallel_calls=AUTOTUNE, deterministic=deterministic), cache,
        name=cache_name, key=key)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                  deterministic=deterministic)
    ds = ds.map(as_written(lambda x, y: (tf.cast(x, tf.float32), y)),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return augment_module.finish_batches(ds, None, num_classes=num_classes,
                                         label_mode=label_mode)


def _without_autotuning(ds: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    # tf.data's model-based autotuning settles, iterator by iterator, in one of two states on
    # this path; in the slow one the same work runs at two thirds of the rate (measured on 2
    # cores: about 1,170 against 1,780 images/s, at the same CPU cost, in about half the
    # epochs, long or short). Off, AUTOTUNE maps use every core and prefetch buffers still
    # grow as the consumer waits. See BENCHMARKS.md, Pipelines.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(AUTOTUNE)


def build_dataset(ds: tf.data.Dataset, *, training: bool, size: int | None,
                  geometry: Geometry, plan, batch_size: int, num_classes: int,
                  label_mode: str, seed: int, read_files: bool, cache: bool | str,
                  cache_bytes: int | None = None, shuffle: bool = True,
                  shuffle_buffer: int | None = None, deterministic: bool | None = None,
                  drop_remainder: bool = False,
                  kinds: Sequence[int] = transforms.ALL_KINDS,
                  oriented: bool = True, largest_side: int | None = None,
                  formats: Sequence[str] = transforms.GRAPH_FORMATS,
                  skip_errors: bool = True,
                  cache_name: str = "train",
                  cache_key: str | None = None,
                  balanced_over: Sequence[int] | None = None) -> tf.data.Dataset:
    """Turns ``(source, label, kind, orientation)`` elements into batches of pixels and labels.

    Args:
        ds: Elements whose source is a file path (``read_files``) or encoded bytes.
        training: Train path (augmented, shuffled) or eval path (centre crop, in order).
        size: Number of elements, when known.
        geometry: Output size, crop fraction, interpolation, channels.
        plan: The augmentation plan (ignored on the eval path).
        batch_size: Batch size.
        num_classes: For one-hot labels.
        label_mode: ``"int"``, ``"categorical"`` or ``"multi_hot"`` (the elements' labels
            are then multi-hot rows already).
        seed: Seed of shuffling and of the per-image random crops and flips.
        read_files: Whether sources are paths to read.
        cache: True caches in memory, a path is a directory for file caches, False does
            not cache. The train path caches encoded bytes (the random crops differ every
            epoch); the eval path caches its finished images (see :func:`cached_dtype`). A
            cache is filled before this returns. File caches are named
            ``<cache>/<cache_name>.cache-<key>.*``, the key a hash of ``cache_key``, the
            split's name, a format version and, on the eval path, the geometry and a digest
            of the decoding code and library versions: other inputs make another cache
            beside it, and a cache whose fill was interrupted is filled again, never read
            (see :func:`pipelines.cache.file_cache`).
        cache_bytes: Estimated memory the cache would take; over the memory budget
            (:func:`pipelines.cache.memory_budget`) an in-memory cache is not made, with a
            warning.
        shuffle: Shuffle the train path every epoch (seeded).
        shuffle_buffer: Shuffle buffer; defaults to the whole dataset.
        deterministic: Keep element order under parallel maps; defaults to True on the
            eval path (predictions must line up with files) and False on the train path
            (faster; the crops themselves are seeded per element either way).
        drop_remainder: Drop the last partial batch (static batch shapes for TPUs).
        kinds: The decoder kinds that occur (only their decoders enter the graph).
        oriented: Whether any JPEG needs an EXIF rotation.
        formats: The formats of ``KIND_GRAPH`` files (only their decoders enter the graph).
        largest_side: The largest shorter side among the images, when known; below twice
            the output size no crop can be DCT-downscaled and that machinery is left out.
        cache_name: Name of this split's file cache.
        cache_key: What decides the elements (a digest of the files with their sizes and
            mtimes, or a TFDS dataset, version and split); needed for a file cache.
        skip_errors: On the train path, drop (with a logged warning) an image whose
            decoding fails although it passed the fast check, which does not decode every
            file, rather than stop training mid-epoch; the epoch keeps its length. The eval
            path never drops: its files are fully checked.
        balanced_over: On the train path, the class indices to sample equally often
            (``sampling="balanced"``, :func:`pipelines.sampling.balanced`); None keeps
            every image once per epoch.

    Returns:
        The batched, prefetched dataset.
    """
    decoding = dict(kinds=tuple(kinds) or (KIND_JPEG,), oriented=oriented,
                    formats=tuple(formats) or transforms.GRAPH_FORMATS)
    if deterministic is None:
        deterministic = not training
    cache = cache_module.within_memory_limit(cache, cache_bytes,
                                             "train" if training else "eval")
    common = dict(geometry=geometry, batch_size=batch_size, num_classes=num_classes,
                  label_mode=label_mode, read_files=read_files, cache=cache,
                  cache_name=cache_name, key=_cache_key(cache, cache_key, training, geometry),
                  deterministic=deterministic, drop_remainder=drop_remainder,
                  decoding=decoding)
    if training:
        dct_scaling = largest_side is None or largest_side >= 2 * max(geometry.image_size)
        ds = _train_batches(ds, size=size, plan=plan, seed=seed, shuffle=shuffle,
                            shuffle_buffer=shuffle_buffer, dct_scaling=dct_scaling,
                            skip_errors=skip_errors, balanced_over=balanced_over, **common)
    else:
        ds = _eval_batches(ds, **common)
    return _without_autotuning(ds, deterministic)


# --------------------------------------------------------------------------------------
# The eval path over a list of files
# --------------------------------------------------------------------------------------

@dataclass
class EvalFiles:
    """Images prepared for evaluation or prediction, in the order given.

    Attributes:
        dataset: Batches of float32 pixels, with int32 labels when labels were given.
        paths: The files that are in ``dataset``, in order.
        skipped: ``(path, reason)`` of the files that could not be used.
        files: The checked files behind ``paths`` (for :meth:`five_crops`).
        geometry: The eval geometry of ``dataset``.
        batch_size: Its batch size.
        labelled: Whether ``dataset`` yields labels.
    """

    dataset: tf.data.Dataset
    paths: list[str]
    skipped: list[tuple[str, str]]
    files: list[ImageFile] = field(default_factory=list, repr=False)
    geometry: Geometry | None = field(default=None, repr=False)
    batch_size: int = 32
    labelled: bool = False

    def five_crops(self) -> tf.data.Dataset:
        """The same files, in order, as batches of their five views ``[B, 5, H, W, C]``.

        The views are :func:`pipelines.transforms.eval_five_crop`'s (four corners and the
        centre of the resized image, before the centre crop), for test-time augmentation;
        with labels when the files were given labels, as :attr:`dataset`.
        """
        size_hw, channels = self.geometry.image_size, self.geometry.channels
        decoding = decoders(self.files)
        decoding.pop("largest_side")

        def views_of(source, label, kind, orientation):
            views = transforms.eval_five_crop(
                tf.io.read_file(source), kind, orientation, size_hw,
                crop_fraction=self.geometry.crop_fraction,
                interpolation=self.geometry.interpolation, **decoding)
            views = transforms.to_channels(views, channels)
            views.set_shape([5, size_hw[0], size_hw[1], channels])
            return views, int_or_multi_hot(label)

        ds = records(self.files).map(views_of, num_parallel_calls=AUTOTUNE,
                                     deterministic=True)
        ds = ds.batch(self.batch_size, num_parallel_calls=AUTOTUNE, deterministic=True)
        if not self.labelled:
            ds = ds.map(lambda x, y: x)
        return _without_autotuning(ds, True)


def eval_files(paths: Iterable[str | os.PathLike], labels: Sequence[int] | None, *,
               geometry: Geometry, batch_size: int = 32, check: str = "full") -> EvalFiles:
    """The eval path (resize shorter side, centre crop) over a list of files, in order.

    Args:
        paths: Image files.
        labels: Optional class index per file; the dataset then yields (pixels, labels).
        geometry: Size, crop fraction, interpolation and channels.
        batch_size: Batch size.
        check: ``"full"`` (every file is decoded once first, so that the dataset lines up
            with ``paths`` and never fails mid-way) or ``"fast"``.

    Returns:
        An :class:`EvalFiles`; unusable files are left out, listed and reported once.
    """
    paths = [str(Path(p)) for p in paths]
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"Got {len(labels)} labels for {len(paths)} files.")
    results = check_files(paths, full=check == "full")
    kept, skipped = [], []
    for i, path in enumerate(paths):
        if isinstance(results[path], str):
            skipped.append((path, results[path]))
        else:
            kept.append(ImageFile(path, int(labels[i]) if labels is not None else -1,
                                  *results[path]))
    report_skipped(skipped, None)
    ds = build_dataset(records(kept), training=False, size=len(kept), geometry=geometry,
                       plan=None, batch_size=batch_size, num_classes=1, label_mode="int",
                       seed=0, read_files=True, cache=False, skip_errors=False,
                       **decoders(kept))
    if labels is None:
        ds = ds.map(lambda x, y: x)
    return EvalFiles(ds, [f.path for f in kept], skipped, files=kept, geometry=geometry,
                     batch_size=batch_size, labelled=labels is not None)


__all__ = ["EVAL_PIXEL_CODE", "EvalFiles", "build_dataset", "cached_dtype", "decoders",
           "eval_code_digest",
           "eval_files", "int_or_multi_hot", "multi_hot", "read_element", "records"]
