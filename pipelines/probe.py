"""Checking image files: sniffing the format, a cheap look at the end, full decodes.

:func:`probe` says whether a file can be used and how to decode it; every bad file gets a
reason (:class:`BadImage`) that is shown to the user, and the file is left where it is.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from pipelines import transforms
from pipelines.transforms import KIND_GRAPH, KIND_JPEG, KIND_PIL
from pipelines.warn import warn_user

# A check expected to take longer than this shows a progress bar.
PROGRESS_AFTER_SECONDS = 10.0
# Pillow format names that this module reads; everything else is "unsupported".
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "WEBP"})


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
    """``(Pillow's format, width, height, EXIF orientation)`` from the header, by Pillow."""
    from PIL import Image, UnidentifiedImageError

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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"corrupt {fmt} header ({error})") from None
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        # Between Pillow's warning and its refusal: decoding would take gigabytes per file
        # (and the serving graph refuses such files too), so it is no training image either.
        raise BadImage(_too_large(width * height, f"{width}x{height}"))
    if pil_format not in SUPPORTED_FORMATS:
        raise BadImage(f"unsupported format {pil_format}; convert it to JPEG or PNG")
    if width < 1 or height < 1:
        raise BadImage(f"empty image ({width}x{height})")
    return pil_format, width, height, orientation


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
    # One read of the whole file: Pillow's header read, the end test and a full decode all
    # work on these bytes.
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
    if full or not complete:
        _full_decode(data, kind)
    format_name = {"JPEG": "jpeg", "MPO": "jpeg", "DIB": "bmp"}.get(pil_format,
                                                                    pil_format.lower())
    return kind, orientation, size, min(width, height), format_name


def check_files(paths: Sequence[str], full: bool,
                use_index: bool | None = None) -> dict[str, tuple | str]:
    """Probes files in parallel threads (I/O and decoders release the GIL).

    Results of files unchanged since an earlier check are taken from the check index
    (:mod:`pipelines.index`), so a repeated start on the same folder reads only what changed.

    Args:
        paths: The files.
        full: Decode every file fully (see :func:`probe`).
        use_index: Use the check index; None follows ``ZOO_CHECK_INDEX`` (on by default).

    Returns:
        ``{path: probe's tuple}`` for a good file, ``{path: reason}`` for a bad one.
    """
    from pipelines import index

    if use_index is None:
        use_index = index.enabled()
    if use_index and paths:
        return index.indexed_check(paths, full, lambda missing: _check_now(missing, full))
    return _check_now(paths, full)


# Files a thread probes per task, at most.
_CHUNK = 64


def _check_now(paths: Sequence[str], full: bool) -> dict[str, tuple | str]:
    workers = min(8, 2 * (os.cpu_count() or 1))
    results: dict[str, tuple | str] = {}

    def chunk_of(chunk):
        out = []
        for path in chunk:
            try:
                out.append((path, probe(path, full=full)))
            except BadImage as reason:
                out.append((path, str(reason)))
        return out

    # Chunks, not one task a file: a future, its lock and its wake-up cost about as much
    # as probing a small file's header. Small lists keep small chunks, so that every
    # worker has some and the progress bar still moves.
    size = max(1, min(_CHUNK, len(paths) // (8 * workers)))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    progress = _Progress(len(paths), "full check" if full else "check")
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done in pool.map(chunk_of, chunks):
            results.update(done)
            progress.update(len(results))
    progress.close()
    return results


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
        # Every 256 files or so, whatever the chunks' size.
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


__all__ = ["SUPPORTED_FORMATS", "BadImage", "ImageFile", "check_files", "probe",
           "report_skipped"]
