"""Image folders as ``tf.data`` input: scan, check, split, manifest, and the datasets.

``from_folder(root)`` accepts ``root/<class>/**`` (split here, stratified and seeded) or
``root/train/<class>`` beside ``root/val/<class>`` (or ``valid``, ``validation``, ``test``).
Every file is checked before training; bad ones are listed in ``.skipped`` with a reason,
reported once, and left where they are. The split is written as a JSON manifest into the
directory the caller names, never into ``root``, and passing that manifest back reproduces
the split exactly.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import functools
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines import augment as augment_module
from pipelines import transforms
from pipelines.transforms import KIND_GRAPH, KIND_JPEG, KIND_PIL

try:
    import fcntl
except ImportError:  # Windows: file caches then go without a lock (see _cache_lock)
    fcntl = None

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp"})
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
MANIFEST_NAME = "split.json"
MANIFEST_FORMAT = "zoo.pipelines.split/1"
# Pillow format names that this module reads; everything else is "unsupported".
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "WEBP"})
# Beyond this, caching would risk the memory of a small machine; the estimate is printed.
DEFAULT_CACHE_LIMIT = 2 << 30
# Part of every file cache's key: changing how cached elements are laid out means a new name.
CACHE_FORMAT = "zoo.pipelines.cache/1"


class BadImage(Exception):
    """A file that cannot be used; the message is the reason shown to the user."""


@dataclass(frozen=True)
class ImageFile:
    """One checked image.

    Attributes:
        path: Absolute path.
        label: Class index.
        kind: ``transforms.KIND_JPEG`` (fused decode), ``KIND_GRAPH`` or ``KIND_PIL``.
        orientation: EXIF orientation (1 to 8) of a ``KIND_JPEG`` file.
        nbytes: File size.
        short_side: The image's shorter side in pixels.
        fmt: Its format as ``transforms.GRAPH_FORMATS`` names it (``"png"``, ...).
    """

    path: str
    label: int
    kind: int
    orientation: int = 1
    nbytes: int = 0
    short_side: int = 0
    fmt: str = ""


@dataclass
class Geometry:
    """Image size and eval crop, usually taken from a model's spec."""

    image_size: tuple[int, int] = (224, 224)
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    channels: int = 3


def resolve_geometry(model: str | None = None, image_size: Sequence[int] | None = None,
                     crop_fraction: float | None = None, interpolation: str | None = None,
                     channels: int | None = None) -> Geometry:
    """Fills what the caller left out from the model's spec, else from ImageNet defaults.

    Args:
        model: A registered zoo model name, or None.
        image_size: ``(height, width)``; overrides the spec's input size.
        crop_fraction: Eval centre-crop fraction; overrides the spec's.
        interpolation: Resize method; overrides the spec's.
        channels: 3 or 1; defaults to the spec's input channels, else 3.

    Returns:
        The geometry.
    """
    geometry = Geometry()
    if model is not None:
        from zoo.registry import get_spec

        spec = get_spec(model)
        geometry = Geometry(tuple(spec.input_size[:2]), float(spec.crop_fraction),
                            spec.interpolation, int(spec.input_size[2]))
    if image_size is not None:
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if len(image_size) != 2 or min(int(s) for s in image_size) < 1:
            raise ValueError(f"image_size is (height, width); got {image_size!r}.")
        geometry.image_size = (int(image_size[0]), int(image_size[1]))
    if crop_fraction is not None:
        geometry.crop_fraction = transforms.check_crop_fraction(crop_fraction)
    if interpolation is not None:
        geometry.interpolation = interpolation
    transforms.check_interpolation(geometry.interpolation)
    if channels is not None:
        geometry.channels = int(channels)
    if geometry.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {geometry.channels!r}.")
    return geometry


# --------------------------------------------------------------------------------------
# Checking one file
# --------------------------------------------------------------------------------------

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"%PDF", "PDF"),
)


def _sniff(head: bytes) -> str | None:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc", b"ftypmsf1"):
        return "HEIC"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    return None


def _looks_like_text(head: bytes) -> str | None:
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML"
    if stripped.startswith((b"<?xml", b"<svg")):
        return "XML/SVG"
    if stripped and all(32 <= c < 127 or c in (9, 10, 13) for c in stripped[:256]):
        return "text"
    return None


def _complete(data_tail: bytes, fmt: str, size: int, header: bytes) -> bool:
    """Whether the file's end looks like a complete image of ``fmt`` (a cheap truncation test).

    A miss is not a verdict: the caller then decodes the file fully, since some valid files
    carry data after their end marker (phone photos append a video or maker notes).
    """
    if fmt in ("JPEG", "MPO"):
        return data_tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" in data_tail[-16:]
    if fmt == "GIF":
        return data_tail.rstrip(b"\x00").endswith(b";")
    if fmt in ("BMP", "DIB") and len(header) >= 6:
        return size >= int.from_bytes(header[2:6], "little")
    if fmt == "WEBP" and len(header) >= 8:
        return size >= int.from_bytes(header[4:8], "little") + 8
    return False


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _graph_decode(data: tf.Tensor) -> tf.Tensor:
    # Traced once: the eager check of thousands of files runs the same graph each time.
    return transforms.graph_decode(data)


def _full_decode(data: bytes, kind: int) -> None:
    """Decodes with the decoder training will use; raises :class:`BadImage` on failure."""
    try:
        if kind == KIND_JPEG:
            tf.io.decode_jpeg(data, channels=3)
        elif kind == KIND_GRAPH:
            _graph_decode(tf.constant(data))
        else:
            transforms.pil_decode(data)
    except Exception as error:  # noqa: BLE001 - every decoder error means the same here
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        # TensorFlow wraps its decoder's words in "{{function_node ...}} ... [Op:DecodeJpeg]".
        message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", message)
        raise BadImage(f"truncated or corrupt image data ({message[:160]})") from None


def probe(path: str, full: bool = False) -> tuple[int, int, int, int, str]:
    """Checks one file and says how to decode it.

    The fast check reads the header with Pillow and the file's last bytes; a file whose end
    does not look complete, and every file when ``full`` is set, is decoded fully with the
    decoder training will use.

    Args:
        path: The file.
        full: Decode every file fully.

    Returns:
        ``(kind, orientation, nbytes, short_side, fmt)``, ``fmt`` one of
        ``transforms.GRAPH_FORMATS``.

    Raises:
        BadImage: With the reason the file cannot be used.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        size = os.path.getsize(path)
        if size == 0:
            raise BadImage("empty file (0 bytes)")
        with open(path, "rb") as handle:
            head = handle.read(64)
            handle.seek(max(0, size - 64))
            tail = handle.read(64)
    except BadImage:
        raise
    except OSError as error:
        raise BadImage(f"unreadable ({error.strerror or error})") from None
    fmt = _sniff(head)
    if fmt is None:
        text = _looks_like_text(head)
        if text:
            raise BadImage(f"not an image: the file holds {text} (a saved web page or a "
                           "download error?)")
        raise BadImage("not an image: unknown file format")
    if fmt not in SUPPORTED_FORMATS:
        raise BadImage(f"unsupported format {fmt}; convert it to JPEG or PNG")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise BadImage(f"unreadable ({error.strerror or error})") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            pil_format = image.format or fmt
            width, height = image.size
            orientation = 1
            if pil_format in ("JPEG", "MPO"):
                orientation = int(image.getexif().get(0x0112, 1) or 1)
                if not 1 <= orientation <= 8:
                    orientation = 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"corrupt {fmt} header ({error})") from None
    if pil_format not in SUPPORTED_FORMATS:
        raise BadImage(f"unsupported format {pil_format}; convert it to JPEG or PNG")
    if width < 1 or height < 1:
        raise BadImage(f"empty image ({width}x{height})")
    # JPEGs take the fused crop-and-decode path, the other formats TensorFlow's decoders as
    # in a serving signature; Pillow only what those do not read (transforms.graph_supported).
    if pil_format in ("JPEG", "MPO"):
        kind = KIND_JPEG
    else:
        kind = KIND_GRAPH if transforms.graph_supported(head) else KIND_PIL
    complete = _complete(tail, pil_format, size, head)
    if not complete and kind == KIND_JPEG:
        # Pillow first: it finds a cut-off JPEG as TensorFlow does, without the line
        # TensorFlow's decoder writes to the terminal ("Premature end of JPEG data").
        _full_decode(data, KIND_PIL)
    if full or not complete:
        _full_decode(data, kind)
    format_name = {"JPEG": "jpeg", "MPO": "jpeg", "DIB": "bmp"}.get(pil_format,
                                                                    pil_format.lower())
    return kind, orientation, size, min(width, height), format_name


# --------------------------------------------------------------------------------------
# Walking a folder
# --------------------------------------------------------------------------------------

@dataclass
class _Scan:
    # split ("all" before splitting) -> [(path, class name)]
    files: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    layout: str = "class_folders"
    class_roots: list[Path] = field(default_factory=list)


def _is_hidden(name: str) -> bool:
    # ".DS_Store", "._IMG_0001.jpg" (macOS AppleDouble), ".ipynb_checkpoints", "Thumbs.db".
    return name.startswith(".") or name.lower() in ("thumbs.db", "desktop.ini", "__macosx")


def _walk_class(class_dir: Path, skipped: list) -> list[str]:
    """All candidate image files below one class folder, nested folders included."""
    found: list[str] = []
    seen: set[str] = set()
    for current, dirs, files in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        for name in sorted(dirs):
            if _is_hidden(name):
                skipped.append((os.path.join(current, name), "hidden folder"))
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            path = os.path.join(current, name)
            if _is_hidden(name):
                skipped.append((path, "hidden file"))
            elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                extension = os.path.splitext(name)[1] or "no extension"
                skipped.append((path, f"not an image file name ({extension}); accepted: "
                                      f"{', '.join(sorted(IMAGE_EXTENSIONS))}"))
            else:
                found.append(path)
    return found


def _subdirs(folder: Path, skipped: list) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if _is_hidden(entry.name):
            skipped.append((str(entry), "hidden file" if entry.is_file() else "hidden folder"))
        elif entry.is_dir():
            out.append(entry)
        else:
            reason = ("not inside a class folder: images go in root/<class>/"
                      if entry.suffix.lower() in IMAGE_EXTENSIONS
                      else "not inside a class folder")
            skipped.append((str(entry), reason))
    return out


def _scan_tree(root: Path) -> _Scan:
    scan = _Scan()
    top = _subdirs(root, scan.skipped)
    names = {d.name.lower(): d for d in top}
    split_names = {n for names_ in SPLIT_DIRS.values() for n in names_}
    if names and set(names) == {"train"}:
        # Only root/train/<class>: split it here, like the one-folder layout.
        scan.layout = "train_folder"
        scan.class_roots = [names["train"]]
        scan.files["all"] = _scan_classes(names["train"], scan)
    elif "train" in names and set(names) <= split_names:
        scan.layout = "split_folders"
        val_like = [names[c] for c in SPLIT_DIRS["val"] if c in names]
        test_dir = names.get("test")
        if not val_like and test_dir is not None:
            val_like, test_dir = [test_dir], None  # test/ is the only held-out folder
        for extra in val_like[1:]:
            scan.skipped.append((str(extra), f"second validation folder; {val_like[0].name}/ "
                                             "is used"))
        chosen = {"train": names["train"], "val": val_like[0] if val_like else None,
                  "test": test_dir}
        for split, folder in chosen.items():
            if folder is not None:
                scan.class_roots.append(folder)
                scan.files[split] = _scan_classes(folder, scan)
    else:
        scan.class_roots = [root]
        scan.files["all"] = _scan_classes(root, scan, top=top)
    return scan


def _scan_classes(folder: Path, scan: _Scan, top: list[Path] | None = None) -> list:
    classes = top if top is not None else _subdirs(folder, scan.skipped)
    files = []
    for class_dir in classes:
        for path in _walk_class(class_dir, scan.skipped):
            files.append((path, class_dir.name))
    return files


def _check_files(paths: list[str], full: bool) -> dict[str, tuple | str]:
    """Probes files in parallel threads (I/O and decoders release the GIL)."""
    workers = min(8, 2 * (os.cpu_count() or 1))
    results: dict[str, tuple | str] = {}

    def one(path):
        try:
            return path, probe(path, full=full)
        except BadImage as reason:
            return path, str(reason)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for path, result in pool.map(one, paths):
            results[path] = result
    return results


# --------------------------------------------------------------------------------------
# Split and manifest
# --------------------------------------------------------------------------------------

def _split_key(seed: int, relpath: str) -> str:
    return hashlib.sha256(f"{seed}:{relpath}".encode()).hexdigest()


def stratified_split(items: Sequence[tuple[str, int]], validation_split: float,
                     seed: int) -> tuple[list, list]:
    """Splits ``(relpath, label)`` items per class, by a seeded hash of each path.

    Written by hand rather than with scikit-learn's ``train_test_split`` because the split
    must be the same on every machine and library version for a seed (a hash of the path
    is; a generator's stream is not promised to be), classes with one image must not raise,
    and adding files must not reshuffle the others.

    Args:
        items: ``(relative path, label)`` pairs.
        validation_split: Fraction of each class for validation, in [0, 1).
        seed: Split seed.

    Returns:
        ``(train, val)`` lists of ``(relpath, label)``, each sorted by path.
    """
    by_class: dict[int, list[str]] = {}
    for relpath, label in items:
        by_class.setdefault(label, []).append(relpath)
    train, val = [], []
    for label, paths in sorted(by_class.items()):
        ordered = sorted(paths, key=lambda p: _split_key(seed, p))
        n_val = int(round(len(ordered) * validation_split))
        if validation_split > 0 and len(ordered) >= 2:
            n_val = min(max(n_val, 1), len(ordered) - 1)  # both sides see every class
        else:
            n_val = 0
        val += [(p, label) for p in ordered[:n_val]]
        train += [(p, label) for p in ordered[n_val:]]
    return sorted(train), sorted(val)


def read_manifest(path: str | os.PathLike) -> dict:
    """Reads a split manifest written by :func:`from_folder`.

    Raises:
        ValueError: If the file is not such a manifest.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"No split manifest at {path}; pass the {MANIFEST_NAME} "
                                "written by an earlier from_folder(out_dir=...).") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a JSON split manifest ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a split manifest of format {MANIFEST_FORMAT!r}.")
    return manifest


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------
# The returned object
# --------------------------------------------------------------------------------------

@dataclass
class EvalFiles:
    """Images prepared for evaluation or prediction, in the order given.

    Attributes:
        dataset: Batches of float32 pixels, with int32 labels when labels were given.
        paths: The files that are in ``dataset``, in order.
        skipped: ``(path, reason)`` of the files that could not be used.
    """

    dataset: tf.data.Dataset
    paths: list[str]
    skipped: list[tuple[str, str]]


class ImageData:
    """Train and validation datasets with everything a recipe and an exporter need.

    Attributes:
        train: Batches of (float32 pixels ``[B, H, W, C]`` in [0, 255], labels). Labels are
            int32 ``[B]``, or float32 ``[B, num_classes]`` when ``label_mode`` is
            ``"categorical"`` (always so with mixup / cutmix, where they are soft).
        val: The same for validation (never augmented, always in file order), or None.
        test: A separate test split when the source has one, else None.
        class_names: Class names; the label is the index.
        num_classes: ``len(class_names)``.
        image_size: ``(height, width)``.
        channels: 3 (RGB) or 1 (grayscale models).
        crop_fraction: The eval centre-crop fraction.
        interpolation: Resize method.
        batch_size: Batch size.
        label_mode: ``"int"`` or ``"categorical"``, for train and val alike.
        soft_labels: Whether train labels are mixed (mixup / cutmix).
        augment: Name of the train augmentation.
        skipped: ``(path, reason)`` of every file left out.
        manifest: The split as a dict (also written to ``manifest_path``).
        manifest_path: Where the manifest was written, or None.
        train_files: ``(path, label)`` of the training images.
        val_files: ``(path, label)`` of the validation images.
        test_files: ``(path, label)`` of the test images.
        source: ``"folder"`` or ``"tfds"``.
        root: The image folder, for folder data.
        steps_per_epoch: Batches in one pass of ``train`` (None when unknown).
    """

    def __init__(self, *, train, val, class_names, geometry: Geometry, batch_size: int,
                 label_mode: str, plan, skipped=(), manifest=None, manifest_path=None,
                 train_files=(), val_files=(), test=None, test_files=(),
                 counts: dict | Callable[[], dict] | None = None, source: str = "folder",
                 root: str | None = None):
        self.train = train
        self.val = val
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
    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{"train": {"cat": 40, ...}, "val": {...}}``."""
        if callable(self._counts):
            self._counts = self._counts()
        return self._counts

    @property
    def class_weights(self) -> dict[int, float]:
        """Balanced class weights for ``model.fit(class_weight=...)``, from train counts."""
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
        return from_files(paths, labels, image_size=self.image_size,
                          crop_fraction=self.crop_fraction, interpolation=self.interpolation,
                          channels=self.channels, batch_size=batch_size or self.batch_size,
                          check=check)

    def summary(self) -> str:
        """A few lines for logs: classes, counts, skipped files, augmentation, manifest."""
        counts = self.counts
        lines = [f"{self.num_classes} classes, image size {self.image_size[0]}x"
                 f"{self.image_size[1]}, augment={self.augment!r}, labels={self.label_mode}"]
        for split, per_class in counts.items():
            lines.append(f"  {split}: {sum(per_class.values())} images")
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
                       ratio: float | None) -> None:
    """Warns, with suggested class weights, when classes are imbalanced.

    Args:
        counts: Training images per class name.
        class_names: Class names in label order.
        ratio: Warn when the largest class has this many times the smallest's images.
    """
    if not ratio:
        return
    values = [counts.get(n, 0) for n in class_names]
    smallest, largest = min(values), max(values)
    if smallest == 0 or largest / smallest < ratio:
        return
    weights = balanced_class_weights(values)
    pairs = ", ".join(f"{class_names[i]}: {w:.3g}" for i, w in weights.items())
    warnings.warn(
        f"Classes are imbalanced: {largest} training images in the largest class, {smallest} "
        f"in the smallest. Consider class_weight={{{pairs}}} (by index: "
        f"data.class_weights) or collecting more images of the small classes.",
        UserWarning, stacklevel=3)


# --------------------------------------------------------------------------------------
# tf.data assembly (shared with tfds.py)
# --------------------------------------------------------------------------------------

def _read(source, label, kind, orientation):
    return tf.io.read_file(source), label, kind, orientation


def _files_cache_key(files: Sequence[ImageFile]) -> str:
    """A digest of what decides a split's cached elements, for ``build_dataset(cache_key=)``.

    Covers each file's path, size, modification time (ns), label, decoder kind and EXIF
    orientation, in order: a file rewritten since (a new size or mtime), added, removed or
    relabelled gives another key, hence another cache. The files' contents are not hashed.

    Args:
        files: The split's checked files, in dataset order.

    Returns:
        A sha256 hex digest.
    """
    digest = hashlib.sha256()
    for f in files:
        try:
            stat = os.stat(f.path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # gone since the check: the fill will say so, with the path
            size, mtime = -1, -1
        digest.update(f"{f.path}\0{size}\0{mtime}\0{f.label}\0{f.kind}\0{f.orientation}\n"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _eval_code_digest() -> str:
    # The eval cache holds finished pixels: after a change to the code that makes them (or
    # to the decoders underneath), the old pixels are stale.
    from PIL import __version__ as pillow_version

    digest = hashlib.sha256(f"{tf.__version__}\0{pillow_version}".encode())
    for module_file in (transforms.__file__, __file__):
        try:
            digest.update(Path(module_file).read_bytes())
        except (OSError, TypeError):
            digest.update(str(module_file).encode())
    return digest.hexdigest()


def _cache_prefix(directory: str | os.PathLike, cache_name: str, cache_key: str,
                  training: bool, geometry: Geometry) -> Path:
    """``<directory>/<cache_name>.cache-<key>``; the key hashes all that decides the content."""
    parts: dict[str, Any] = {"format": CACHE_FORMAT, "split": cache_name, "source": cache_key,
                             "path": "train" if training else "eval"}
    if not training:  # finished images, not encoded bytes
        parts.update(image_size=list(geometry.image_size),
                     crop_fraction=float(geometry.crop_fraction),
                     interpolation=geometry.interpolation, channels=int(geometry.channels),
                     code=_eval_code_digest())
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return Path(directory) / f"{cache_name}.cache-{key}"


@contextlib.contextmanager
def _cache_lock(prefix: Path) -> Iterator[bool]:
    """Holds an exclusive lock on ``<prefix>.lock`` while a file cache is filled.

    Another zoo process filling the same cache is waited for, not disturbed: tf.data's own
    lock file only makes a second filler fail, and in failing it deletes the first filler's
    files. The operating system drops the lock of a process that dies, so a tf.data lock file
    found while holding this one was left by an interrupted run.

    Yields:
        Whether the lock is held (False where the system or file system has no file locks).
    """
    if fcntl is None:
        yield False
        return
    with open(f"{prefix}.lock", "a") as handle:
        held = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            warnings.warn(f"Waiting for another process that is filling the file cache "
                          f"{prefix}.", UserWarning, stacklevel=7)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_unfinished(prefix: Path) -> None:
    """Deletes what an interrupted fill of the cache ``prefix`` (and of no other) left behind.

    Only tf.data's names for a cache being written under this exact prefix are touched: its
    ``<prefix>_<n>.lockfile``, the ``.index`` and ``.data-*`` shards and their temporary
    ``.tempstate*`` files. The caller holds the cache's lock and has seen no ``<prefix>.index``.
    """
    pattern = re.compile(re.escape(prefix.name)
                         + r"(_\d+)?\.(lockfile|index|data-\d+-of-\d+)(\.tempstate\d+)?")
    removed = []
    for entry in prefix.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_file():
            entry.unlink()
            removed.append(entry.name)
    if removed:
        warnings.warn(f"Removed {len(removed)} file(s) of an unfinished file cache left by an "
                      f"interrupted run ({', '.join(sorted(removed))}); filling "
                      f"{prefix.name} again.", UserWarning, stacklevel=6)


def _fill(ds: tf.data.Dataset) -> None:
    # Filled now, by one plain pass. Under a distribution strategy (Mirrored on two devices,
    # MultiWorkerMirrored), Keras iterates a rewrite of the dataset that shares this cache,
    # and a cache first filled that way sometimes kept only part of the split (113-119 of
    # 120 validation images, about one run in five) for the rest of the run. The pass does
    # work the first epoch would do anyway.
    ds.reduce(np.int64(0), lambda count, _: count + 1)


def _file_cache(ds: tf.data.Dataset, prefix: Path) -> tf.data.Dataset:
    """``ds.cache(prefix)``, complete on return; an unfinished cache is never read."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.cache(str(prefix))
    # tf.data writes the index last, once every element is in: with it, the cache is complete
    # and is only ever read (no lock needed, so a read-only cache directory works too).
    index = Path(f"{prefix}.index")
    if index.exists():
        return ds
    with _cache_lock(prefix) as locked:
        if index.exists():  # filled meanwhile by the process this one waited for
            return ds
        if locked:
            _remove_unfinished(prefix)
        try:
            _fill(ds)
        except tf.errors.AlreadyExistsError:
            raise RuntimeError(
                f"The file cache {prefix} is being filled by another run, or a run filling it "
                f"was interrupted, and this file system has no locks to tell which. If no "
                f"other run uses it, delete the files {prefix.name}_* in {prefix.parent} "
                "that are left and run again.") from None
    return ds


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
                  cache_key: str | None = None) -> tf.data.Dataset:
    """Turns ``(source, label, kind, orientation)`` elements into batches of pixels and labels.

    Args:
        ds: Elements whose source is a file path (``read_files``) or encoded bytes.
        training: Train path (augmented, shuffled) or eval path (centre crop, in order).
        size: Number of elements, when known.
        geometry: Output size, crop fraction, interpolation, channels.
        plan: The augmentation plan (ignored on the eval path).
        batch_size: Batch size.
        num_classes: For one-hot labels.
        label_mode: ``"int"`` or ``"categorical"``.
        seed: Seed of shuffling and of the per-image random crops and flips.
        read_files: Whether sources are paths to read.
        cache: True caches in memory, a path is a directory for file caches, False does
            not cache. The train path caches encoded bytes (the random crops differ every
            epoch); the eval path caches its finished uint8 images. A cache is filled before
            this returns. File caches are named ``<cache>/<cache_name>.cache-<key>.*``, the
            key a hash of ``cache_key``, the split's name, a format version and, on the eval
            path, the geometry and a digest of the decoding code and library versions: other
            inputs make another cache beside it, and a cache whose fill was interrupted is
            filled again, never read (see ``_file_cache``).
        cache_bytes: Estimated memory the cache would take; over ``DEFAULT_CACHE_LIMIT`` an
            in-memory cache is not made.
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

    Returns:
        The batched, prefetched dataset.
    """
    autotune = tf.data.AUTOTUNE
    size_hw = geometry.image_size
    decoders = dict(kinds=tuple(kinds) or (KIND_JPEG,), oriented=oriented,
                    formats=tuple(formats) or transforms.GRAPH_FORMATS)
    if deterministic is None:
        deterministic = not training
    if cache is True and cache_bytes is not None and cache_bytes > DEFAULT_CACHE_LIMIT:
        warnings.warn(f"Not caching the {'train' if training else 'eval'} data in memory: it "
                      f"would take about {cache_bytes / 2**30:.1f} GiB. Pass cache='<path>' "
                      "for a file cache.", UserWarning, stacklevel=3)
        cache = False

    def _cache(d):
        if not cache:
            return d
        if cache is True:
            d = d.cache()
            _fill(d)
            return d
        if cache_key is None:
            raise ValueError("A file cache needs cache_key= (what decides the elements, e.g. "
                             "the files with their sizes and mtimes); without it a stale or "
                             "another source's cache could be read.")
        return _file_cache(d, _cache_prefix(cache, cache_name, cache_key, training, geometry))

    if training:
        if cache and read_files:
            ds = _cache(ds.map(_read, num_parallel_calls=autotune))
            read_files = False
        if shuffle:
            ds = ds.shuffle(shuffle_buffer or size or 10_000, seed=seed,
                            reshuffle_each_iteration=True)
        # One stateless seed per element: the crop of an image depends on the seed and the
        # epoch only, never on thread timing.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))

        def decode_one(element, element_seed):
            source, label, kind, orientation = element
            data = tf.io.read_file(source) if read_files else source
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(element_seed, 2))
            if plan.crop == "random":
                image = transforms.train_crop(
                    data, kind, orientation, crop_seed, size_hw, scale=plan.scale,
                    ratio=plan.ratio, interpolation=geometry.interpolation,
                    flip_seed=flip_seed if plan.flip else None,
                    dct_scaling=largest_side is None or largest_side >= 2 * max(size_hw),
                    **decoders)
            elif plan.crop == "full":
                image = transforms.decode_upright(data, kind, orientation, **decoders)
            else:
                image = transforms.eval_crop(data, kind, orientation, size_hw,
                                             crop_fraction=geometry.crop_fraction,
                                             interpolation=geometry.interpolation, **decoders)
                if plan.flip:
                    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            return image, tf.cast(label, tf.int32)

        def augment_one(image, label):
            if plan.crop == "full":
                image = augment_module.albumentations_op(image, plan.albumentations, size_hw)
            image = augment_module.apply_image_layers(image, plan)
            image = transforms.to_channels(image, geometry.channels)
            image.set_shape([size_hw[0], size_hw[1], geometry.channels])
            return image, label

        ds = ds.map(decode_one, num_parallel_calls=autotune, deterministic=deterministic)
        if skip_errors:
            # Only decoding is guarded: an error in an augmentation must still surface.
            ds = ds.ignore_errors(log_warning=True)
            if size:
                # An image dropped at run time is replaced by one of the next (reshuffled)
                # pass, so that every epoch has exactly `size` images and the cardinality
                # stays known (Keras' progress, learning-rate schedules); repeat(2), not
                # repeat(), so that files vanishing mid-run end the epoch instead of looping.
                ds = ds.repeat(2).take(size).apply(
                    tf.data.experimental.assert_cardinality(size))
        # With nothing left to do per image (crops already have their static size), one
        # tf.data stage fewer.
        if plan.crop == "full" or plan.image_layers or geometry.channels != 3:
            ds = ds.map(augment_one, num_parallel_calls=autotune, deterministic=deterministic)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                      num_parallel_calls=autotune, deterministic=deterministic)
        ds = augment_module.finish_batches(ds, plan, num_classes=num_classes,
                                           label_mode=label_mode)
    else:
        def eval_one(source, label, kind, orientation):
            data = tf.io.read_file(source) if read_files else source
            image = transforms.eval_crop(data, kind, orientation, size_hw,
                                         crop_fraction=geometry.crop_fraction,
                                         interpolation=geometry.interpolation, **decoders)
            image = transforms.to_channels(image, geometry.channels)
            image.set_shape([size_hw[0], size_hw[1], geometry.channels])
            # uint8 until batching: a quarter of the memory in the cache, and exact, since
            # the eval path rounds to whole pixel values.
            return tf.cast(image, tf.uint8), tf.cast(label, tf.int32)

        # No ignore_errors here: eval files are fully decoded when checked, so the epoch is
        # exact, in file order, and of known length.
        ds = _cache(ds.map(eval_one, num_parallel_calls=autotune, deterministic=deterministic))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                      num_parallel_calls=autotune, deterministic=deterministic)
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=autotune,
                    deterministic=deterministic)
        ds = augment_module.finish_batches(ds, None, num_classes=num_classes,
                                           label_mode=label_mode)
    options = tf.data.Options()
    options.deterministic = deterministic
    # tf.data's model-based autotuning settles, iterator by iterator, in one of two states on
    # this path; in the slow one the same work runs at two thirds of the rate (measured on 2
    # cores: about 1,170 against 1,780 images/s, at the same CPU cost, in about half the
    # epochs, long or short). Off, AUTOTUNE maps use every core and prefetch buffers still
    # grow as the consumer waits. See BENCHMARKS.md, Pipelines.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(autotune)


def _decoders(files: Sequence[ImageFile]) -> dict:
    # What the scan knows lets the graph leave out decoders, rotations and DCT downscaling
    # that no file needs: fewer ops per image.
    return dict(kinds=tuple(sorted({f.kind for f in files})) or (KIND_JPEG,),
                oriented=any(f.orientation != 1 for f in files),
                formats=tuple(sorted({f.fmt for f in files if f.kind == KIND_GRAPH})),
                largest_side=max((f.short_side for f in files), default=0))


def _records(files: Sequence[ImageFile]) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((
        tf.constant([f.path for f in files], tf.string),
        tf.constant([f.label for f in files], tf.int32),
        tf.constant([f.kind for f in files], tf.int32),
        tf.constant([f.orientation for f in files], tf.int32),
    ))


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------

def _report_skipped(skipped: list[tuple[str, str]], root: Path | None, limit: int = 10) -> None:
    if not skipped:
        return
    lines = []
    for path, reason in skipped[:limit]:
        shown = os.path.relpath(path, root) if root is not None else path
        lines.append(f"  {shown}: {reason}")
    more = f"\n  ... and {len(skipped) - limit} more (see .skipped)" if len(skipped) > limit else ""
    warnings.warn(f"Skipped {len(skipped)} file(s) that cannot be used; they were left "
                  f"untouched:\n" + "\n".join(lines) + more, UserWarning, stacklevel=3)


def from_folder(
    root: str | os.PathLike,
    *,
    image_size: Sequence[int] | int | None = None,
    batch_size: int = 32,
    validation_split: float = 0.2,
    seed: int = 0,
    augment: Any = "standard",
    model: str | None = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    channels: int | None = None,
    check: str = "fast",
    out_dir: str | os.PathLike | None = None,
    manifest_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    label_mode: str | None = None,
    cache: bool | str = True,
    shuffle: bool = True,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    imbalance_warning: float | None = 3.0,
) -> ImageData:
    """Train and validation ``tf.data`` pipelines from a folder of images.

    Args:
        root: ``root/<class>/**`` (split here) or ``root/train/<class>`` with
            ``root/val/<class>`` (``valid``, ``validation`` or ``test`` also work; with both
            a validation folder and ``test/``, the latter becomes ``.test``).
        image_size: Output ``(height, width)``; defaults to the model's input size, else
            224x224.
        batch_size: Batch size.
        validation_split: Fraction of each class held out, for the one-folder layout.
        seed: Seed of the split, the shuffling and the augmentation.
        augment: See :func:`pipelines.augment.resolve`.
        model: A zoo model name; its spec gives image size, crop fraction, interpolation
            and channels unless given here.
        crop_fraction: Eval centre-crop fraction (default 0.875).
        interpolation: Resize method (default bilinear).
        channels: 3 (RGB) or 1 (grayscale).
        check: ``"fast"`` reads headers and ends of training files (and fully decodes any
            file that looks incomplete, and every validation and test file); ``"full"``
            decodes every file with the decoder training uses.
        out_dir: Where to write the split manifest (``split.json``), usually the run dir.
            It may not be inside ``root``: nothing is written next to the images.
        manifest_dir: Another name for ``out_dir``.
        manifest: A manifest written earlier (file or directory); its split is used
            as it is. Files listed there that are now missing or broken are skipped, files
            added since are ignored, and both are reported.
        label_mode: ``"int"`` (default) or ``"categorical"`` (one-hot float32), for train
            and val alike; mixup and cutmix need and default to ``"categorical"``.
        cache: Cache the train bytes and finished val images in memory (True), in files
            under a directory (a path, e.g. inside the run dir; not inside ``root``), or
            not (False). Caches are filled before this returns. A file cache is named by a
            key over everything that decides its content (each file's path, size, mtime,
            label and decoder; on the val and test splits also image size, crop fraction,
            interpolation, channels and the decoding code), so folders and settings can
            share one directory, and a changed file makes a new cache rather than reading
            the old one. Caches of other keys are left in place (delete the directory to
            reclaim the space); an unfinished cache left by an interrupted run is deleted
            and filled again, and another process filling the same cache is waited for.
        shuffle: Shuffle the training images every epoch.
        deterministic: Fix the order of the train path under parallel maps (slower); the
            val path is always in order.
        drop_remainder: Drop the last partial batch.
        imbalance_warning: Warn when the largest class has this many times the images of
            the smallest; None turns the warning off.

    Returns:
        An :class:`ImageData`.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        ValueError: If no usable images or only one class are found, or for bad arguments.
        RuntimeError: If a file cache may be in use by another run and, without file locks
            on this system, that cannot be told from a run that was interrupted.
    """
    # Absolute (symlinks kept): the datasets read these paths later, whatever the cwd.
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is a file; from_folder needs a folder with one "
                         "sub-folder per class (root/<class>/*.jpg).")
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}.")
    if check not in ("fast", "full"):
        raise ValueError(f"check must be 'fast' or 'full'; got {check!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size!r}.")
    geometry = resolve_geometry(model, image_size, crop_fraction, interpolation, channels)
    plan = augment_module.resolve(augment, seed=seed)
    label_mode = _label_mode(label_mode, plan)
    out_dir = _out_dir(out_dir, manifest_dir)
    if out_dir is not None and _inside(Path(out_dir), root):
        raise ValueError(f"out_dir {str(out_dir)!r} is inside the image folder {str(root)!r}; "
                         "nothing is written next to the images. Use a run directory outside it.")
    if isinstance(cache, (str, os.PathLike)) and _inside(Path(cache), root):
        raise ValueError(f"cache {str(cache)!r} is inside the image folder {str(root)!r}; "
                         "nothing is written next to the images. Put it in the run directory.")

    scan = _scan_tree(root)
    skipped = list(scan.skipped)
    listed: dict[str, list[tuple[str, str]]]
    if manifest is not None:
        loaded = read_manifest(manifest)
        class_names = list(loaded["class_names"])
        listed = {split: [(str(root / rel), class_names[label]) for rel, label in entries]
                  for split, entries in loaded["splits"].items()}
        on_disk = {p for files in scan.files.values() for p, _ in files}
        in_manifest = {p for files in listed.values() for p, _ in files}
        new = sorted(on_disk - in_manifest)
        if new:
            warnings.warn(f"{len(new)} image(s) under {root} are not in the manifest "
                          f"{manifest} and are left out, e.g. {os.path.relpath(new[0], root)}.",
                          UserWarning, stacklevel=2)
        for path in sorted(in_manifest - on_disk):
            skipped.append((path, "listed in the manifest but missing now"))
        listed = {split: [(p, c) for p, c in files if p in on_disk]
                  for split, files in listed.items()}
    else:
        listed = scan.files

    all_paths = sorted({p for files in listed.values() for p, _ in files})
    results = _check_files(all_paths, full=check == "full")
    for path in all_paths:
        if isinstance(results[path], str):
            skipped.append((path, results[path]))

    def good(files):
        return [(p, c) for p, c in files if not isinstance(results[p], str)]

    listed = {split: good(files) for split, files in listed.items()}
    if manifest is None:
        present = sorted({c for files in listed.values() for _, c in files})
        class_names = present
        _skip_empty_classes(root, scan, listed, skipped)
    try:
        _require_classes(root, class_names, listed, skipped)
    except ValueError:
        _report_skipped(skipped, root)
        raise
    index = {name: i for i, name in enumerate(class_names)}

    if manifest is None and "all" in listed:
        relative = [(os.path.relpath(p, root), index[c]) for p, c in listed["all"]]
        train_rel, val_rel = stratified_split(relative, validation_split, seed)
        split_files = {"train": train_rel, "val": val_rel}
    else:
        split_files = {split: sorted((os.path.relpath(p, root), index[c]) for p, c in files)
                       for split, files in listed.items()}

    def to_files(entries):
        out = []
        for rel, label in entries:
            path = str(root / rel)
            out.append(ImageFile(path, label, *results[path]))
        return out

    # Evaluation files are decoded fully even with the fast check: a validation epoch must
    # be exact (no file silently missing) and they are the smaller part.
    if check != "full":
        eval_paths = [str(root / rel) for split in ("val", "test")
                      for rel, _ in split_files.get(split, [])]
        for path, result in _check_files(eval_paths, full=True).items():
            if isinstance(result, str):
                results[path] = result
                skipped.append((path, result))
        split_files = {split: [(rel, label) for rel, label in entries
                               if not isinstance(results[str(root / rel)], str)]
                       for split, entries in split_files.items()}
    _report_skipped(skipped, root)

    files = {split: to_files(entries) for split, entries in split_files.items()}
    train_files = files.get("train", [])
    if not train_files:
        raise ValueError(f"No training images left under {str(root)!r} after the split "
                         f"({len(skipped)} file(s) skipped; see the warning above).")
    counts = {split: {name: 0 for name in class_names} for split in files}
    for split, fs in files.items():
        for f in fs:
            counts[split][class_names[f.label]] += 1
    for name in class_names:
        if counts["train"][name] == 0:
            warnings.warn(f"Class {name!r} has no training images (only validation ones).",
                          UserWarning, stacklevel=2)

    manifest_dict = {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "root": str(root.resolve()),
        "layout": scan.layout,
        "seed": seed,
        "validation_split": validation_split,
        "class_names": class_names,
        "splits": {split: [[rel, label] for rel, label in entries]
                   for split, entries in split_files.items()},
        "skipped": [[os.path.relpath(p, root), r] for p, r in skipped],
    }
    if manifest is not None:
        manifest_dict["from_manifest"] = str(Path(manifest).resolve())
        manifest_dict["seed"] = loaded.get("seed", seed)
        manifest_dict["validation_split"] = loaded.get("validation_split", validation_split)
    manifest_path = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        manifest_path = out / MANIFEST_NAME
        manifest_path.write_text(json.dumps(manifest_dict, indent=1))

    warn_if_imbalanced(counts["train"], class_names, imbalance_warning)
    if plan.albumentations is not None:
        sample = transforms.pil_decode(Path(train_files[0].path).read_bytes())
        augment_module.check_albumentations(plan.albumentations, sample, geometry.image_size)

    common = dict(geometry=geometry, plan=plan, batch_size=batch_size,
                  num_classes=len(class_names), label_mode=label_mode, seed=seed,
                  read_files=True, cache=cache, drop_remainder=drop_remainder)
    file_cache = isinstance(cache, (str, os.PathLike))

    def cache_key(fs):
        # Stat'ed only for a file cache, and before it is filled: a file rewritten during the
        # fill can then only leave the cache newer than its key, never older (stat'ed after,
        # the old bytes could be filed under the new file's key).
        return _files_cache_key(fs) if file_cache else None

    train_bytes = sum(f.nbytes for f in train_files)
    train = build_dataset(_records(train_files), training=True, size=len(train_files),
                          cache_bytes=train_bytes, shuffle=shuffle, deterministic=deterministic,
                          cache_key=cache_key(train_files), **_decoders(train_files), **common)
    per_image = geometry.image_size[0] * geometry.image_size[1] * geometry.channels

    def eval_split(split):
        fs = files.get(split) or []
        if not fs:
            return None
        return build_dataset(_records(fs), training=False, size=len(fs), cache_name=split,
                             cache_key=cache_key(fs), cache_bytes=len(fs) * per_image,
                             **_decoders(fs), **common)

    return ImageData(
        train=train, val=eval_split("val"), test=eval_split("test"), class_names=class_names,
        geometry=geometry, batch_size=batch_size, label_mode=label_mode, plan=plan,
        skipped=skipped, manifest=manifest_dict,
        manifest_path=str(manifest_path) if manifest_path else None,
        train_files=[(f.path, f.label) for f in train_files],
        val_files=[(f.path, f.label) for f in files.get("val", [])],
        test_files=[(f.path, f.label) for f in files.get("test", [])],
        counts=counts, source="folder", root=str(root))


def _out_dir(out_dir, manifest_dir):
    if out_dir is not None and manifest_dir is not None and Path(out_dir) != Path(manifest_dir):
        raise ValueError(f"out_dir={str(out_dir)!r} and manifest_dir={str(manifest_dir)!r} "
                         "name different places; pass one of them.")
    return out_dir if out_dir is not None else manifest_dir


def _label_mode(label_mode: str | None, plan) -> str:
    if label_mode is None:
        return "categorical" if plan.soft_labels else "int"
    if label_mode not in ("int", "categorical"):
        raise ValueError(f"label_mode must be 'int' or 'categorical'; got {label_mode!r}.")
    if plan.soft_labels and label_mode != "categorical":
        raise ValueError(f"augment={plan.name!r} mixes labels, which needs "
                         "label_mode='categorical'.")
    return label_mode


def _skip_empty_classes(root: Path, scan: _Scan, listed: dict, skipped: list) -> None:
    # Keras makes an empty folder a class the model must predict but never sees; here it is
    # not a class, and it is reported.
    del root
    folders = set()
    for split_dir in scan.class_roots:
        for class_dir in split_dir.iterdir():
            if class_dir.is_dir() and not _is_hidden(class_dir.name):
                folders.add(class_dir)
    with_images = {c for files in listed.values() for _, c in files}
    for folder in sorted(folders):
        if folder.name not in with_images and not any(p == str(folder) for p, _ in skipped):
            skipped.append((str(folder), "class folder without usable images; not a class"))


def _require_classes(root: Path, class_names: list[str], listed: dict, skipped: list) -> None:
    total = sum(len(files) for files in listed.values())
    if total == 0:
        examples = "; ".join(f"{os.path.relpath(p, root)}: {r}" for p, r in skipped[:3])
        raise ValueError(
            f"No usable images under {str(root)!r}. Expected root/<class>/*.jpg (or .png, "
            f".bmp, .gif, .webp), or root/train/<class>/ with root/val/<class>/. "
            f"{len(skipped)} file(s) skipped" + (f", e.g. {examples}." if examples else "."))
    if len(class_names) < 2:
        only = class_names[0] if class_names else "?"
        raise ValueError(
            f"Only one class ({only!r}) has usable images under {str(root)!r}; a classifier "
            "needs at least two class folders, e.g. root/cats/ and root/dogs/.")


def from_files(
    paths: Iterable[str | os.PathLike],
    labels: Sequence[int] | None = None,
    *,
    model: str | None = None,
    image_size: Sequence[int] | int | None = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    channels: int | None = None,
    batch_size: int = 32,
    check: str = "full",
) -> EvalFiles:
    """The eval path (resize shorter side, centre crop) over a list of files, in order.

    Args:
        paths: Image files.
        labels: Optional class index per file; the dataset then yields (pixels, labels).
        model: A zoo model name whose spec gives size, crop fraction and interpolation.
        image_size: ``(height, width)``; overrides the model's.
        crop_fraction: Overrides the model's.
        interpolation: Overrides the model's.
        channels: Overrides the model's.
        batch_size: Batch size.
        check: ``"full"`` (default: every file is decoded once first, so that the dataset
            lines up with ``paths`` and never fails mid-way) or ``"fast"``.

    Returns:
        An :class:`EvalFiles`; unusable files are left out, listed and reported once.
    """
    geometry = resolve_geometry(model, image_size, crop_fraction, interpolation, channels)
    paths = [str(Path(p)) for p in paths]
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"Got {len(labels)} labels for {len(paths)} files.")
    results = _check_files(paths, full=check == "full")
    kept, skipped = [], []
    for i, path in enumerate(paths):
        if isinstance(results[path], str):
            skipped.append((path, results[path]))
        else:
            kept.append(ImageFile(path, int(labels[i]) if labels is not None else -1,
                                  *results[path]))
    _report_skipped(skipped, None)
    ds = build_dataset(_records(kept), training=False, size=len(kept), geometry=geometry,
                       plan=None, batch_size=batch_size, num_classes=1, label_mode="int",
                       seed=0, read_files=True, cache=False, skip_errors=False,
                       **_decoders(kept))
    if labels is None:
        ds = ds.map(lambda x, y: x)
    return EvalFiles(ds, [f.path for f in kept], skipped)


__all__ = ["BadImage", "EvalFiles", "Geometry", "ImageData", "ImageFile", "KIND_GRAPH",
           "balanced_class_weights", "build_dataset", "from_files", "from_folder", "probe",
           "read_manifest", "resolve_geometry", "stratified_split"]
