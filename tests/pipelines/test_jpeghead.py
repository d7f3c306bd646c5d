"""The fast JPEG header reader gives Pillow's answers, or none: on real files and damaged ones."""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, ImageCms
from pipeline_helpers import jpeg_bytes, photo

from pipelines.jpeghead import read_header

probe = sys.modules["pipelines.probe"]  # the package's name 'probe' is the function
MAX = Image.MAX_IMAGE_PIXELS


def pillow_header(data: bytes):
    """What Pillow says: ``(width, height, orientation)``, or "refused"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in ("JPEG", "MPO"):
                    return "other format"
                width, height = image.size
                return width, height, image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - any refusal is one answer here
        return "refused"


def _exif(orientation: int, extra: bool = False) -> bytes:
    exif = Image.Exif()
    if extra:
        exif[0x010F] = "A camera maker"  # out-of-line ASCII, before the orientation
        exif[0x0110] = "Model 7"
    exif[0x0112] = orientation
    return exif.tobytes()


def _variants() -> dict[str, bytes]:
    rgb = photo("astronaut", (40, 30))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = {
        "baseline": jpeg_bytes(rgb),
        "progressive": jpeg_bytes(rgb, progressive=True),
        "optimized 4:4:4": jpeg_bytes(rgb, optimize=True, subsampling=0),
        "grayscale": jpeg_bytes(rgb[..., 0]),
        "icc profile": jpeg_bytes(rgb, icc_profile=srgb),
        "comment": jpeg_bytes(rgb, comment=b"taken on a Tuesday"),
        "restart interval": jpeg_bytes(rgb, restart_marker_blocks=1),
    }
    for orientation in range(0, 10):
        out[f"exif orientation {orientation}"] = jpeg_bytes(rgb, exif=_exif(orientation))
    out["exif with out-of-line tags"] = jpeg_bytes(rgb, exif=_exif(6, extra=True))
    return out


PLAIN = _variants()


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_jpegs_are_read_as_pillow_reads_them(name):
    data = PLAIN[name]
    assert read_header(data, MAX) is not None, name  # the plain forms take the fast path
    assert read_header(data, MAX) == pillow_header(data)


def test_headers_it_does_not_know_are_left_to_pillow():
    rgb = photo("coffee", (40, 30))
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG")
    xmp = jpeg_bytes(rgb, xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    assert pillow_header(xmp)[2] == 6  # Pillow reads XMP's orientation; so must the check
    for data in (cmyk.getvalue(), xmp, jpeg_bytes(rgb)[:200], b"\xff\xd8\xff\xff\xff"):
        assert read_header(data, MAX) is None
    # Over Pillow's pixel limit: Pillow's own refusal, with its words, is the one given.
    assert read_header(jpeg_bytes(rgb), 100) is None


def _mutations(data: bytes, rng: np.random.Generator, count: int):
    """Damaged copies: bytes changed, dropped, repeated, or the header cut, near the header."""
    header_end = data.index(b"\xff\xda") + 14
    for _ in range(count):
        buffer = bytearray(data)
        how = rng.integers(4)
        at = int(rng.integers(2, header_end))
        if how == 0:
            for _ in range(int(rng.integers(1, 4))):
                buffer[int(rng.integers(2, header_end))] = int(rng.integers(256))
        elif how == 1:
            del buffer[at:at + int(rng.integers(1, 8))]
        elif how == 2:
            buffer[at:at] = buffer[at:at + int(rng.integers(1, 8))]
        else:
            # A length byte or a marker byte set to a boundary value.
            buffer[at] = int(rng.choice([0, 1, 2, 0xFF, 0xD9, 0xDA, 0xE1, 0xE2]))
        yield bytes(buffer)


def test_on_damaged_headers_it_agrees_with_pillow_or_defers():
    rng = np.random.default_rng(0)
    bases = [PLAIN["exif with out-of-line tags"], PLAIN["icc profile"], PLAIN["progressive"],
             PLAIN["grayscale"], PLAIN["exif orientation 3"]]
    answered = refused_by_pillow = 0
    for base in bases:
        for damaged in _mutations(base, rng, 1500):
            fast = read_header(damaged, MAX)
            pillow = pillow_header(damaged)
            refused_by_pillow += pillow == "refused"
            if fast is not None:
                answered += 1
                assert fast == pillow, damaged[:200]
    # The test means something only if both sides were exercised: many damaged headers
    # still read fast (a changed pixel-table byte), and Pillow refused many others.
    assert answered > 1500 and refused_by_pillow > 300, (answered, refused_by_pillow)


def test_the_check_gives_the_same_verdicts_with_and_without_the_fast_reader(tmp_path,
                                                                            monkeypatch):
    rng = np.random.default_rng(1)
    paths = []
    for i, damaged in enumerate(_mutations(PLAIN["exif with out-of-line tags"], rng, 300)):
        path = tmp_path / f"{i:03d}.jpg"
        path.write_bytes(damaged)
        paths.append(str(path))
    with_fast = probe.check_files(paths, full=False, use_index=False)
    monkeypatch.setattr(probe, "read_jpeg_header", lambda data, limit: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pillow_only = probe.check_files(paths, full=False, use_index=False)
    assert with_fast == pillow_only
    assert sum(isinstance(r, str) for r in with_fast.values()) > 10  # some were refused
