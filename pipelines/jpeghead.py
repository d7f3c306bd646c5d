"""The JPEG header facts the check needs, read without Pillow where the header is plain.

The fast check needs a JPEG's width, height and EXIF orientation, and whether Pillow (the
decoder of record for what the check refuses) would open it. ``PIL.Image.open`` walks the
markers in Python, about 0.1 ms a file: most of a first start on a folder of small photos,
and all of it under the GIL, so threads do not share it. :func:`read_header` walks the
segments with a few slices and struct reads instead, and answers only where the header is
of the common plain form whose reading by Pillow is known here (Pillow 10 to 13's
``JpegImagePlugin`` and ``Image.Exif``): baseline, extended or progressive DCT, 8 bits, 1 or
3 components, JFIF/EXIF/ICC/comment segments, one EXIF block whose orientation is a single
inline SHORT. Anything else (an XMP or MPO segment, a second EXIF block, fill bytes, odd
lengths, an EXIF directory that runs past its block, an image over Pillow's pixel limit)
gets None, and the caller asks Pillow, so every verdict stays Pillow's. The tests hold the
two readers to the same answers on real files and on thousands of damaged headers.
"""

from __future__ import annotations

import struct

# SOF markers read here: baseline, extended sequential and progressive DCT (Huffman).
_SOF = frozenset({0xC0, 0xC1, 0xC2})
# Segments that only carry a length to skip (Huffman tables, restart interval).
_SKIPPED = frozenset({0xC4, 0xDD})
_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_ORIENTATION = 0x0112
_SHORT = 3


def _unit_sizes() -> dict[int, int]:
    """``{TIFF type: bytes per value}`` as Pillow's EXIF reader has them (empty if unknown)."""
    try:
        from PIL import TiffImagePlugin

        return {typ: size for typ, (size, _) in
                TiffImagePlugin.ImageFileDirectory_v2._load_dispatch.items()}
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}


_UNIT_SIZES = _unit_sizes()


def _orientation(tiff: bytes) -> int | None:
    """The EXIF orientation Pillow reads from a TIFF block (1 if absent); None if unsure."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*") or not _UNIT_SIZES:
        return None
    endian = "<" if tiff[:2] == b"II" else ">"
    (start,) = struct.unpack_from(endian + "L", tiff, 4)
    if start + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(endian + "H", tiff, start)
    # The whole directory and its next-directory pointer inside the block: Pillow stops
    # reading (and warns) at a directory cut short.
    if start + 2 + 12 * count + 4 > len(tiff):
        return None
    entry = struct.Struct(endian + "HHL4s")
    for i in range(count):
        tag, typ, n, value = entry.unpack_from(tiff, start + 2 + 12 * i)
        unit = _UNIT_SIZES.get(typ)
        if unit is None:
            return None
        if tag == _ORIENTATION:
            if typ != _SHORT or n != 1:
                return None
            return struct.unpack_from(endian + "H", value)[0]
        size = n * unit
        if size > 4:
            # Pillow reads an out-of-line value and stops at one that lies outside the block.
            (offset,) = struct.unpack_from(endian + "L", value)
            if offset + size > len(tiff):
                return None
    return 1


def _dqt_ok(s: bytes) -> bool:
    # Pillow's DQT handler: tables of 1 + 64 or 1 + 128 bytes until the segment ends.
    pos = 0
    while pos < len(s):
        length = 1 + (64 if s[pos] < 16 else 128)
        if len(s) - pos < length:
            return False
        pos += length
    return True


def read_header(data: bytes, max_pixels: int | None) -> tuple[int, int, int] | None:
    """``(width, height, EXIF orientation)`` of a plain JPEG header, as Pillow would read them.

    Args:
        data: The file's bytes.
        max_pixels: Pillow's ``Image.MAX_IMAGE_PIXELS``; larger images get None (so that
            Pillow's words refuse them).

    Returns:
        The three numbers (orientation as stored, not yet clamped to 1-8), or None where
        the header is not of the plain form read here; the caller then asks Pillow.
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos, end = 2, len(data)
    size = exif = None
    u16 = struct.Struct(">H").unpack_from
    while True:
        if pos + 4 > end or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        (length,) = u16(data, pos + 2)
        body_end = pos + 2 + length
        if length < 2 or body_end > end:
            return None
        s = data[pos + 4:body_end]
        if marker == 0xDA:  # start of scan: the header is over
            break
        if marker in _SOF:
            # One frame header, 8 bits, 1 or 3 components of 3 bytes each.
            if size is not None or len(s) < 6 or s[0] != 8 or s[5] not in (1, 3) \
                    or (len(s) - 6) % 3:
                return None
            size = u16(s, 3)[0], u16(s, 1)[0]
        elif marker == 0xDB:
            if not _dqt_ok(s):
                return None
        elif 0xE0 <= marker <= 0xEF:
            if marker == 0xE1 and s.startswith(_EXIF):
                if exif is not None or s[6:12] == _EXIF:
                    return None
                exif = s[6:]
            elif (marker == 0xE1 and s.startswith(_XMP)) \
                    or (marker == 0xE2 and (s.startswith(b"MPF\x00") or (
                        s.startswith(b"ICC_PROFILE\x00") and len(s) < 14))) \
                    or (marker == 0xED and s.startswith(b"Photoshop 3.0\x00")) \
                    or (marker == 0xE0 and s.startswith(b"JFIF") and len(s) < 7) \
                    or (marker == 0xEE and s.startswith(b"Adobe") and len(s) < 7):
                return None
        elif marker != 0xFE and marker not in _SKIPPED:
            return None
        pos = body_end
    if size is None or size[0] < 1 or size[1] < 1 \
            or (max_pixels and size[0] * size[1] > max_pixels):
        return None
    orientation = 1 if exif is None else _orientation(exif)
    if orientation is None:
        return None
    return size[0], size[1], orientation


__all__ = ["read_header"]
