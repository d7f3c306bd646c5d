"""The prepared image store: a folder's checked images, re-encoded once, in TFRecord shards.

:func:`prepare` checks and splits a folder as :func:`pipelines.from_folder` does, then writes
every usable image, shrunk to a bounded shorter side and re-encoded as a high-quality JPEG,
into ``<split>-NNNNN-of-MMMMM.tfrecord`` shards with its label, relative path and content
hash, beside ``store.json`` (the manifest) and ``split.json``. :func:`from_store` reads it
back into an :class:`ImageData` through the same ``tf.data`` graph as files (the same
random-resized crop and eval resize + crop on JPEG bytes). A store whose source folder
changed since it was written is refused, naming what changed. The originals are only read;
the store is written into a temporary folder beside ``store_dir`` and renamed at the end, so
an interrupted prepare never leaves a store that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from pipelines.dataset import build_dataset
from pipelines.imagedata import ImageData
from pipelines.options import inside, resolve_options
from pipelines.scan import scan_tree
from pipelines.transforms import KIND_JPEG, pil_to_rgb
from pipelines.warn import warn_user

FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
# Quality 90 with 4:2:0 chroma, as FFCV writes its JPEGs: the train path decodes the
# stored bytes every epoch, and here quality 95 cost about 10 % and full chroma (4:4:4)
# about 35 % more CPU per full decode (one run each, 1,000 photos at a shorter side of 280).
DEFAULT_QUALITY = 90
EVAL_CROP_FRACTION = 0.875
SHARD_IMAGES = 1000
# The train images are shuffled in a buffer of encoded bytes after the shards' order is:
# bounded, so that a store of a million images (about 25 GB at 224) is never held in memory.
SHUFFLE_IMAGES = 10_000
PARSE_BATCH = 256
READ_BUFFER = 8 * 2**20
SHARD_BYTES = 200 * 2**20
FEATURES = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}


def default_short_side(image_size: Sequence[int]) -> int:
    """The stored shorter side for a training size: the eval resize at crop fraction 0.875.

    Larger costs decoding time on every read (the train path's cost grows with the stored
    pixels); smaller makes the eval path upscale.
    """
    return math.ceil(max(image_size) / EVAL_CROP_FRACTION)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_listing(root: Path) -> dict[str, dict]:
    """``{relative path: {size, mtime_ns}}`` of every image file the scan finds."""
    scan = scan_tree(root)
    paths = [p for files in scan.files.values() for p, _ in files]
    paths += [p for p, _ in scan.skipped if os.path.isfile(p)]
    listing = {}
    for path in sorted(set(paths)):
        stat = os.stat(path)
        listing[os.path.relpath(path, root)] = {"size": stat.st_size,
                                                "mtime_ns": stat.st_mtime_ns}
    return listing


def encode_bounded(data: bytes, short_side: int, quality: int) -> tuple[bytes, list[int]]:
    """JPEG bytes of an image whose shorter side is at most ``short_side``, and its size.

    An upright RGB JPEG already small enough keeps its own bytes (no second loss).
    """
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        upright = image.getexif().get(0x0112, 1) == 1
        if (image.format == "JPEG" and upright and image.mode in ("RGB", "L")
                and min(image.size) <= short_side):
            return data, [image.size[1], image.size[0]]
        image = ImageOps.exif_transpose(image)
        pixels = Image.fromarray(pil_to_rgb(image))
    scale = short_side / min(pixels.size)
    if scale < 1:
        size = (max(1, round(pixels.width * scale)), max(1, round(pixels.height * scale)))
        # Antialiased, as a photo shrunk for training should be (tf.image.resize is not).
        pixels = pixels.resize(size, Image.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    # 4:2:0 chroma, as cameras write: full-resolution chroma (4:4:4) doubled the samples
    # to decode and made stored images as slow to decode as the originals (see
    # BENCHMARKS.md, The prepared store).
    pixels.save(out, "JPEG", quality=quality, subsampling="4:2:0")
    return out.getvalue(), [pixels.height, pixels.width]


def _example(encoded: bytes, label: int, relative: str, digest: str) -> bytes:
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[relative.encode()])),
        "sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[digest.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_split(tmp: Path, split: str, entries, root: Path, short_side: int, quality: int,
                 files: dict) -> list[str]:
    """Writes one split's shards; fills ``files[relative path]``; returns the shard names."""
    shards: list[list[bytes]] = [[]]
    size = 0
    for path, label in entries:
        data = Path(path).read_bytes()
        relative = os.path.relpath(path, root)
        encoded, shape = encode_bounded(data, short_side, quality)
        if len(shards[-1]) >= SHARD_IMAGES or size + len(encoded) > SHARD_BYTES:
            shards.append([])
            size = 0
        digest = _sha256(data)
        shards[-1].append(_example(encoded, int(label), relative, digest))
        size += len(encoded)
        files[relative].update(sha256=digest, split=split, label=int(label), stored=shape)
    names = []
    for i, records in enumerate(shards):
        name = f"{split}-{i:05d}-of-{len(shards):05d}.tfrecord"
        with tf.io.TFRecordWriter(str(tmp / name)) as writer:
            for record in records:
                writer.write(record)
        names.append(name)
    return names


def prepare(root: str | os.PathLike, store_dir: str | os.PathLike, *,
            image_size: Sequence[int] | int = 224, short_side: int | None = None,
            quality: int = DEFAULT_QUALITY, validation_split: float = 0.2, seed: int = 0,
            check: str = "fast", dedupe: str = "warn") -> dict:
    """Checks, splits and writes a folder's images once into a prepared store.

    Args:
        root: The image folder, as for :func:`pipelines.from_folder`; only read.
        store_dir: The store to create; must not exist yet, nor be inside ``root``.
        image_size: The largest training size the store is meant for.
        short_side: The stored images' shorter side at most; defaults to
            :func:`default_short_side` (256 for 224: the eval resize of crop fraction
            0.875, so that evaluation reads the same pixels as from files).
        quality: JPEG quality of re-encoded images (1-100); 90 by default, with 4:2:0
            chroma.
        validation_split: As for :func:`pipelines.from_folder`.
        seed: Seed of the split.
        check: ``"fast"`` or ``"full"``, as for :func:`pipelines.from_folder`.
        dedupe: As for :func:`pipelines.from_folder`.

    Returns:
        The manifest written to ``store_dir/store.json``.

    Raises:
        ValueError: For bad arguments, a ``store_dir`` that exists or lies inside ``root``.
    """
    from pipelines.folder import from_folder

    root = Path(root).expanduser().absolute()
    store = Path(store_dir).expanduser().absolute()
    if root.is_file():
        raise ValueError(f"prepare takes an image folder (root/<class>/*); {str(root)!r} is "
                         "a file. A label table (one label or several an image) cannot be "
                         "prepared yet: read it with pipelines.from_csv.")
    size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
    short_side = short_side or default_short_side(size)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100; got {quality!r}.")
    if short_side < max(size):
        raise ValueError(f"short_side={short_side} is below image_size {size}; the store "
                         "must hold images at least as large as the training size.")
    if store.exists():
        raise ValueError(f"Store {str(store)!r} exists already; name a new folder (a store "
                         "is never overwritten).")
    if root.is_dir() and inside(store, root):
        raise ValueError(f"Store {str(store)!r} is inside the image folder {str(root)!r}; "
                         "nothing is written next to the images. Name a folder outside it.")
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{store.name}.partial-", dir=store.parent))
    try:
        manifest = _fill(root, tmp, size, short_side, quality, validation_split, seed,
                         check, dedupe, from_folder)
        os.rename(tmp, store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _fill(root, tmp, size, short_side, quality, validation_split, seed, check, dedupe,
          from_folder) -> dict:
    listing = _source_listing(root) if root.is_dir() else {}
    data = from_folder(root, image_size=size, validation_split=validation_split, seed=seed,
                       check=check, out_dir=tmp, cache=False, dedupe=dedupe,
                       imbalance_warning=None)
    shards = {}
    for split in ("train", "val", "test"):
        entries = getattr(data, f"{split}_files")
        if entries:
            shards[split] = _write_split(tmp, split, entries, root, short_side, quality,
                                         listing)
    manifest = {
        "format_version": FORMAT_VERSION, "source_root": str(root),
        "class_names": data.class_names, "image_size": size, "short_side": short_side,
        "quality": quality, "seed": seed, "validation_split": validation_split,
        "counts": {split: sum(1 for f in listing.values() if f.get("split") == split)
                   for split in shards},
        "shards": shards, "files": listing,
        "skipped": [[os.path.relpath(p, root), r] for p, r in data.skipped],
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_manifest(store_dir: str | os.PathLike) -> dict:
    """The manifest of a complete store; refuses a folder that is not one."""
    path = Path(store_dir).expanduser().absolute() / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(path.parent)!r} is not a prepared store (no "
                                f"{MANIFEST_NAME}); write one with pipelines.prepare(root, "
                                "store_dir) or `zoo prepare ROOT STORE`.")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"Store {str(path.parent)!r} has format version "
                         f"{manifest.get('format_version')!r}; this zoo reads version "
                         f"{FORMAT_VERSION}. Prepare it again.")
    return manifest


def manifest_hash(store_dir: str | os.PathLike) -> str:
    """The sha256 of a store's manifest: what a run records to name the store it read."""
    return _sha256((Path(store_dir).expanduser().absolute() / MANIFEST_NAME).read_bytes())


def source_changes(manifest: dict) -> dict[str, list[str]]:
    """``{"added", "removed", "changed"}``: relative paths whose state differs from the store.

    A file whose size or mtime differ is hashed; only a different content counts as changed.
    """
    root = Path(manifest["source_root"])
    if not root.is_dir():
        return {"added": [], "removed": ["(the whole folder) " + str(root)], "changed": []}
    now, then = _source_listing(root), manifest["files"]
    changed = []
    for rel in sorted(now.keys() & then.keys()):
        old = then[rel]
        if (now[rel]["size"], now[rel]["mtime_ns"]) == (old["size"], old["mtime_ns"]):
            continue
        if "sha256" not in old or now[rel]["size"] != old["size"] or \
                _sha256((root / rel).read_bytes()) != old["sha256"]:
            changed.append(rel)
    return {"added": sorted(now.keys() - then.keys()),
            "removed": sorted(then.keys() - now.keys()), "changed": changed}


def _refuse_if_changed(store: Path, manifest: dict) -> None:
    changes = source_changes(manifest)
    if not any(changes.values()):
        return
    said = "; ".join(f"{len(v)} {k} (e.g. {', '.join(v[:3])})"
                     for k, v in changes.items() if v)
    raise ValueError(f"Store {str(store)!r} was written from {manifest['source_root']!r}, "
                     f"which changed since: {said}. Prepare a new store from the folder "
                     "(pipelines.prepare / zoo prepare), or pass check_source=False to read "
                     "the store as it is.")


def _check_geometry(store: Path, manifest: dict, geometry) -> None:
    stored = manifest["short_side"]
    if max(geometry.image_size) > stored:
        raise ValueError(f"image_size {list(geometry.image_size)} is larger than store "
                         f"{str(store)!r} holds (shorter side {stored}, prepared for "
                         f"{manifest['image_size']}); prepare a store with a larger "
                         "image_size.")
    resize = max(geometry.image_size) / geometry.crop_fraction
    if resize > stored + 0.5:
        warn_user(f"The eval path resizes to a shorter side of {resize:.0f}, above the "
                  f"{stored} store {str(store)!r} holds: validation images are upscaled. "
                  "Prepare the store with a larger short_side for exact parity with files.")


def _split_dataset(store: Path, shards: list[str], training: bool, seed: int, size: int):
    names = [str(store / n) for n in shards]
    if training and len(names) > 1:
        files = tf.data.Dataset.from_tensor_slices(names).shuffle(len(names), seed=seed)
        ds = files.interleave(
            lambda name: tf.data.TFRecordDataset(name, buffer_size=READ_BUFFER),
            cycle_length=min(4, len(names)), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False)
    else:  # validation keeps the store's (sorted file) order
        ds = tf.data.TFRecordDataset(names, buffer_size=READ_BUFFER)

    def elements(records):
        parsed = tf.io.parse_example(records, FEATURES)
        labels = tf.cast(parsed["label"], tf.int32)
        return (parsed["image"], labels, tf.fill(tf.shape(labels), KIND_JPEG),
                tf.ones_like(labels))

    # Parsed a few hundred records at a time: one parse per record cost about twice as
    # much CPU (0.06 against 0.04 ms an image here), a few % of the train path.
    ds = ds.batch(PARSE_BATCH).map(elements, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    # A known length, as files have: Keras' progress and its validation steps rely on it.
    return ds.apply(tf.data.experimental.assert_cardinality(size))


def _entries(manifest: dict, split: str) -> list[tuple[str, int]]:
    root = Path(manifest["source_root"])
    return sorted((str(root / rel), f["label"]) for rel, f in manifest["files"].items()
                  if f.get("split") == split)


def from_store(store_dir: str | os.PathLike, *, image_size: Sequence[int] | int | None = None,
               batch_size: int = 32, seed: int = 0, augment: Any = "standard",
               model: str | None = None, weights: Any = None,
               crop_fraction: float | None = None, interpolation: str | None = None,
               channels: int | None = None, label_mode: str | None = None,
               cache: bool = True, shuffle: bool = True, deterministic: bool | None = None,
               drop_remainder: bool = False, check_source: bool = True) -> ImageData:
    """Train and validation pipelines read from a prepared store (see :func:`prepare`).

    Args:
        store_dir: A store written by :func:`prepare`.
        image_size: Output size; defaults to the size the store was prepared for.
        batch_size: Batch size.
        seed: Seed of the shuffling and the augmentation.
        augment: See :func:`pipelines.augment.resolve`.
        model: A zoo model name whose geometry (with ``weights``) applies.
        weights: The model's weights (a catalog tag, a file, or None).
        crop_fraction: Eval centre-crop fraction.
        interpolation: Resize method.
        channels: 3 (RGB) or 1 (grey, from the stored RGB); defaults to the model's.
        label_mode: ``"int"`` or ``"categorical"``; the store's labels are one class an
            image (a folder's), so ``"multi_hot"`` is refused.
        shuffle: Shuffle the training images every epoch: the shards' order, then the
            images in a buffer of :data:`SHUFFLE_IMAGES` (the whole split when smaller).
        deterministic: Fix the train order under parallel maps.
        drop_remainder: Drop the last partial batch.
        cache: Cache the finished validation images in memory (the train bytes are read
            from the shards every epoch).
        check_source: Refuse the store when its source folder changed since it was written.

    Returns:
        An :class:`ImageData` whose ``source`` is ``"store"`` and whose ``manifest`` is the
        store's, with ``store`` (its path) and ``store_hash`` (the manifest's sha256).

    Raises:
        FileNotFoundError: If ``store_dir`` is not a complete store.
        ValueError: If the source folder changed, or the size asked exceeds the store's.
    """
    store = Path(store_dir).expanduser().absolute()
    manifest = read_manifest(store)
    if label_mode == "multi_hot":
        raise ValueError(f"label_mode='multi_hot' cannot read store {str(store)!r}: a store "
                         "is prepared from a folder, one class an image. Use 'int' or "
                         "'categorical', or read a multi-label table with pipelines.from_csv.")
    if check_source:
        _refuse_if_changed(store, manifest)
    options = resolve_options(
        model=model, weights=weights, image_size=image_size or manifest["image_size"],
        crop_fraction=crop_fraction, interpolation=interpolation, channels=channels,
        augment=augment, seed=seed, label_mode=label_mode, batch_size=batch_size,
        cache=bool(cache), deterministic=deterministic, drop_remainder=drop_remainder)
    _check_geometry(store, manifest, options.geometry)
    class_names = manifest["class_names"]
    common = dict(geometry=options.geometry, plan=options.plan, batch_size=batch_size,
                  num_classes=len(class_names), label_mode=options.label_mode, seed=seed,
                  read_files=False, kinds=(KIND_JPEG,), oriented=False,
                  largest_side=manifest["short_side"], drop_remainder=drop_remainder)
    out = {}
    for split in ("train", "val", "test"):
        shards = manifest["shards"].get(split)
        size = manifest["counts"].get(split, 0)
        out[split] = build_dataset(
            _split_dataset(store, shards, split == "train", seed, size), training=split == "train",
            size=size, cache=bool(cache) and split != "train", shuffle=shuffle,
            shuffle_buffer=min(size, SHUFFLE_IMAGES), deterministic=deterministic,
            cache_name=split, **common) if shards else None
    counts = {split: {n: 0 for n in class_names} for split in manifest["shards"]}
    for f in manifest["files"].values():
        if f.get("split") in counts:
            counts[f["split"]][class_names[f["label"]]] += 1
    record = dict(manifest, store=str(store), store_hash=manifest_hash(store))
    return ImageData(
        **out, class_names=class_names, geometry=options.geometry, batch_size=batch_size,
        label_mode=options.label_mode, plan=options.plan,
        skipped=[(str(Path(manifest["source_root"]) / p), r) for p, r in manifest["skipped"]],
        manifest=record, manifest_path=str(store / MANIFEST_NAME),
        train_files=_entries(manifest, "train"), val_files=_entries(manifest, "val"),
        test_files=_entries(manifest, "test"), counts=counts, source="store",
        root=manifest["source_root"])


def from_store_of(root: str | os.PathLike, store_dir: str | os.PathLike,
                  **options: Any) -> ImageData:
    """:func:`from_store`, refusing a store prepared from another folder than ``root``."""
    manifest = read_manifest(store_dir)
    if Path(manifest["source_root"]) != Path(root).expanduser().absolute():
        raise ValueError(f"Store {str(store_dir)!r} was prepared from "
                         f"{manifest['source_root']!r}, not from {str(root)!r}; pass that "
                         "folder, or prepare a store of this one.")
    return from_store(store_dir, **options)


__all__ = ["FORMAT_VERSION", "encode_bounded", "from_store", "from_store_of", "manifest_hash",
           "prepare", "read_manifest", "source_changes"]
