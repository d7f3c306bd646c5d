"""Checking image files: sniffing the format, a cheap look at the end, full decodes.

:func:`probe` says whether a file can be used and how to decode it; every bad file gets a
reason (:class:`BadImage`) that is shown to the user, and the file is left where it is.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from pipelines import transforms
from pipelines.jpeghead import read_header as read_jpeg_header
from pipelines.transforms import KIND_GRAPH, KIND_JPEG, KIND_PIL
from pipelines.warn import warn_user

# A check expected to take longer than this shows a progress bar.
PROGRESS_AFTER_SECONDS = 10.0
# Pillow format names that this module reads; everything else is "unsupported".
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "WEBP"})
# The check index's name for the sha256 of a file's bytes, taken while the check reads them.
BYTES_DIGEST = "sha256"


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


def _read(path: str) -> tuple[bytes, str]:
    """``(the whole file, the format its first bytes name)``, in one open.

    The format is checked before the rest is read: a large file that is no image (a video
    named .jpg) is refused after 64 bytes, not read whole.

    Raises:
        BadImage: If the file is empty, unreadable, not an image or of another format.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if not head:
                raise BadImage("empty file (0 bytes)")
            fmt = _check_sniffed(head)
            return head + handle.read(), fmt
    except OSError as error:
        raise BadImage(f"unreadable ({error.strerror or error})") from None


def _check_sniffed(head: bytes) -> str:
    """The format the first bytes name; :class:`BadImage` for non-images and other formats."""
    fmt = _sniff(head)
    if fmt is None:
        text = _looks_like_text(head)
        if text:
            raise BadImage(f"not an image: the file holds {text} (a saved web page or a "
                           "download error?)")
        raise BadImage("not an image: unknown file format")
    if fmt not in SUPPORTED_FORMATS:
        raise BadImage(f"unsupported format {fmt}; convert it to JPEG or PNG")
    return fmt


def _too_large(pixels: int | None, size: str | None = None) -> str:
    """The reason for a file whose header claims more pixels than Pillow will decode."""
    from PIL import Image

    claimed = f"{size} = {pixels} pixels" if size else f"{pixels} pixels"
    return (f"image too large: its header claims {claimed}, over the limit of "
            f"{Image.MAX_IMAGE_PIXELS} (a decompression bomb?); resize it if it is a real "
            "photo")


def _read_header(data: bytes, fmt: str) -> tuple[str, int, int, int]:
    """``(Pillow's format, width, height, EXIF orientation)`` from the header, as Pillow reads it.

    A plain JPEG header is read by :func:`pipelines.jpeghead.read_header` (Pillow's
    answers at a tenth of the cost); every other file, by Pillow.
    """
    from PIL import Image, UnidentifiedImageError

    if fmt == "JPEG":
        plain = read_jpeg_header(data, Image.MAX_IMAGE_PIXELS)
        if plain is not None:
            width, height, orientation = plain
            return "JPEG", width, height, orientation if 1 <= orientation <= 8 else 1
    try:
        with Image.open(io.BytesIO(data)) as image:
            pil_format = image.format or fmt
            width, height = image.size
            orientation = 1
            if pil_format in ("JPEG", "MPO"):
                orientation = int(image.getexif().get(0x0112, 1) or 1)
                if not 1 <= orientation <= 8:
                    orientation = 1
    except Image.DecompressionBombError as error:
        # Pillow refuses to open it (over twice its MAX_IMAGE_PIXELS); so must training.
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        raise BadImage(_too_large(int(claimed.group(1)) if claimed else None)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, IndexError, TypeError,
            struct.error) as error:
        # The last three from Pillow's EXIF reader on a damaged block (an orientation of
        # two values, a directory cut short), which would otherwise stop the whole check.
        # Pillow names the in-memory file ("<_io.BytesIO object at 0x...>"): no help to anyone.
        said = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
        raise BadImage(f"corrupt {fmt} header ({said})") from None
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        # Between Pillow's warning and its refusal: decoding would take gigabytes per file
        # (and the serving graph refuses such files too), so it is no training image either.
        raise BadImage(_too_large(width * height, f"{width}x{height}"))
    if pil_format not in SUPPORTED_FORMATS:
        raise BadImage(f"unsupported format {pil_format}; convert it to JPEG or PNG")
    if width < 1 or height < 1:
        raise BadImage(f"empty image ({width}x{height})")
    return pil_format, width, height, orientation


def _inspect(path: str, full: bool, digest: bool = False) -> tuple[tuple, int | None, str]:
    """The part of :func:`probe` that runs in Python: everything but TensorFlow's decode.

    Returns:
        ``(probe's tuple, the kind to decode fully with or None, the sha256 of the bytes
        as hex or "" unless digest)``.

    Raises:
        BadImage: With the reason the file cannot be used.
    """
    # One read of the whole file: Pillow's header read, the end test, a full decode and the
    # byte digest all work on these bytes.
    data, fmt = _read(path)
    size, head, tail = len(data), data[:64], data[-64:]
    pil_format, width, height, orientation = _read_header(data, fmt)
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
    decode = None
    if full or not complete:
        if kind == KIND_PIL:
            _full_decode(data, kind)
        else:
            decode = kind
    format_name = {"JPEG": "jpeg", "MPO": "jpeg", "DIB": "bmp"}.get(pil_format,
                                                                    pil_format.lower())
    hexdigest = hashlib.sha256(data).hexdigest() if digest else ""
    return (kind, orientation, size, min(width, height), format_name), decode, hexdigest


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
    result, decode, _ = _inspect(path, full)
    if decode is not None:
        _full_decode(_read(path)[0], decode)
    return result


def check_files(paths: Sequence[str], full: bool, use_index: bool | None = None,
                digest: bool = False,
                known: dict[str, tuple | str] | None = None) -> dict[str, tuple | str]:
    """Probes files: the headers in this thread, the full decodes in parallel in tf.data.

    Results of files unchanged since an earlier check are taken from the check index
    (:mod:`pipelines.index`), so a repeated start on the same folder reads only what changed.

    Args:
        paths: The files.
        full: Decode every file fully (see :func:`probe`).
        use_index: Use the check index; None follows ``ZOO_CHECK_INDEX`` (on by default).
        digest: Also hash each file's bytes (sha256) while they are read, and keep the
            digest in the check index under :data:`BYTES_DIGEST` (the leakage check's
            exact-copy test then reads no file again). Without the index it is not kept.
        known: Fast results of these files from a check just made (``{path: probe's
            tuple}``): for a file found there, a full check only decodes it.

    Returns:
        ``{path: probe's tuple}`` for a good file, ``{path: reason}`` for a bad one.
    """
    from pipelines import index

    if use_index is None:
        use_index = index.enabled()
    if use_index and paths:
        return index.indexed_check(paths, full,
                                   lambda missing: _check_now(missing, full, digest, known))
    return _check_now(paths, full, digest, known)[0]


# Fewer full decodes than this run eagerly: a tf.data pipeline costs tens of milliseconds
# to build.
_BATCH_DECODES = 16


def _check_now(paths: Sequence[str], full: bool, digest: bool = False,
               known: dict[str, tuple | str] | None = None
               ) -> tuple[dict[str, tuple | str], dict[str, dict]]:
    """``({path: result}, {path: {BYTES_DIGEST: hex}})`` of checking ``paths`` now.

    The Python part runs in this thread, one file after another: with the JPEG header read
    by :mod:`pipelines.jpeghead` it is about 70 us a small file, most of it under the GIL,
    and threads only queued on the lock (measured on 10,000 small files with a warm page
    cache: 1 thread 70-99 us a file, 2 threads 103-130, 4 threads 159-302; with the page
    cache dropped, 1 and 4 threads alike, 242 and 247). The full decodes, the costly part,
    run in parallel in a tf.data pipeline (:func:`_decode_all`).
    """
    results: dict[str, tuple | str] = {}
    digests: dict[str, dict] = {}
    to_decode: list[tuple[str, int]] = []
    progress = _Progress(len(paths), "full check" if full else "check")
    known = known if full and known and not digest else {}
    for done, path in enumerate(paths, 1):
        fast = known.get(path)
        if isinstance(fast, tuple) and fast[0] != KIND_PIL:
            # Its header and end were read a moment ago; a full check adds the decode only
            # (a file Pillow decodes is inspected again, which decodes it: few and rare).
            results[path] = fast
            to_decode.append((path, fast[0]))
            progress.update(done)
            continue
        try:
            results[path], decode, hexdigest = _inspect(path, full, digest)
        except BadImage as reason:
            results[path] = str(reason)
        else:
            if hexdigest:
                digests[path] = {BYTES_DIGEST: hexdigest}
            if decode is not None:
                to_decode.append((path, decode))
        progress.update(done)
    progress.close()
    for path, reason in _decode_all(to_decode).items():
        results[path] = reason
        digests.pop(path, None)
    return results, digests


def _decode_all(files: Sequence[tuple[str, int]]) -> dict[str, str]:
    """Full decodes of ``(path, kind)`` with TensorFlow's decoders; ``{path: reason}`` of failures.

    Many files go through one tf.data pipeline, in parallel and without Python per file (an
    eager decode costs about half a millisecond of dispatch, more than decoding a small
    image); a file it fails on is decoded again alone for its reason.
    """
    if len(files) < _BATCH_DECODES:
        failed = list(files)
    else:
        progress = _Progress(len(files), "full decode")
        decoded: set[int] = set()
        for kind in (KIND_JPEG, KIND_GRAPH):
            chosen = [i for i, (_, k) in enumerate(files) if k == kind]
            if chosen:
                for ids in _decoded_by_dataset([files[i][0] for i in chosen], kind, chosen):
                    decoded.update(ids)
                    progress.update(len(decoded))
        progress.close()
        failed = [file for i, file in enumerate(files) if i not in decoded]
    reasons = {}
    for path, kind in failed:
        try:
            _full_decode(_read(path)[0], kind)
        except BadImage as reason:
            reasons[path] = str(reason)
    return reasons


def _decoded_by_dataset(paths: Sequence[str], kind: int,
                        ids: Sequence[int]) -> Iterator[list[int]]:
    """Batches of the ``ids`` of the ``paths`` that TensorFlow's decoder for ``kind`` reads."""
    def decode(path, i):
        data = tf.io.read_file(path)
        image = (tf.io.decode_jpeg(data, channels=3) if kind == KIND_JPEG
                 else transforms.graph_decode(data))
        # The shape is returned so that the decode is not pruned from the graph.
        return i, tf.shape(image)

    # Bytes, as the file system has them: a name that is not valid UTF-8 still opens.
    dataset = (tf.data.Dataset.from_tensor_slices(([os.fsencode(p) for p in paths], list(ids)))
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors()
               .batch(256))
    for batch_ids, _ in dataset.as_numpy_iterator():
        yield batch_ids.tolist()


class _Progress:
    """A progress bar shown only for a check that looks long.

    Long means over :data:`PROGRESS_AFTER_SECONDS` at the pace of the first second.
    """

    def __init__(self, total: int, what: str):
        self.total, self.what = total, what
        self.start = time.perf_counter()
        self.bar = None
        self.shown = 0

    def update(self, done: int) -> None:
        if self.bar is None:
            elapsed = time.perf_counter() - self.start
            if elapsed < min(1.0, PROGRESS_AFTER_SECONDS) or done == self.total:
                return
            if elapsed / done * self.total < PROGRESS_AFTER_SECONDS:
                return
            from keras.utils import Progbar

            print(f"Checking {self.total} files ({self.what}):", file=sys.stderr)
            self.bar = Progbar(self.total, unit_name="file")
        # Every 256 files or so: a redraw costs more than checking a small file.
        if done - self.shown >= 256 or done == self.total:
            self.bar.update(done)
            self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.total, finalize=True)


def report_skipped(skipped: Sequence[tuple[str, str]], root: Path | None,
                   limit: int = 10, listed_in: str | os.PathLike | None = None) -> None:
    """Warns once, listing up to ``limit`` skipped files with their reasons.

    Args:
        skipped: ``(path, reason)`` pairs.
        root: Paths are shown relative to it, when given.
        limit: At most this many are listed.
        listed_in: The split manifest (``split.json``) that lists them all, when one was
            written: the place a command-line user can look (``.skipped`` is the API's).
    """
    if not skipped:
        return
    lines = []
    for path, reason in skipped[:limit]:
        shown = os.path.relpath(path, root) if root is not None else path
        lines.append(f"  {shown}: {reason}")
    where = (f"all are listed in {listed_in}, under \"skipped\"" if listed_in is not None
             else "see .skipped")
    more = (f"\n  ... and {len(skipped) - limit} more ({where})" if len(skipped) > limit
            else "")
    warn_user(f"Skipped {len(skipped)} file(s) that cannot be used; they were left "
              f"untouched:\n" + "\n".join(lines) + more)


__all__ = ["BYTES_DIGEST", "SUPPORTED_FORMATS", "BadImage", "ImageFile", "check_files", "probe",
           "report_skipped"]
