"""Faults from issue 20 that reach the pipelines: each is written to disk for real by the
test (a decompression bomb, a symlink loop, swapped files with restored mtimes, ...)."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import pytest
from pipeline_helpers import make_folder, tree_fingerprint

import pipelines
from pipelines.probe import check_files


def _bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A ~100-byte PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few compressed rows only: the header is what makes Pillow refuse it.
    idat = zlib.compress(b"\x00" * (3 * 64 + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def _folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", {"cats": 6, "dogs": 6})


@pytest.mark.parametrize(("side", "claimed"), [
    (30000, "900000000 pixels"),  # Pillow refuses to open it: DecompressionBombError
    (10000, "10000x10000"),  # Pillow only warns, and decoding would take 300 MB
])
def test_decompression_bomb_is_skipped_with_a_reason(tmp_path, side, claimed):
    root = _folder(tmp_path)
    bomb = root / "cats" / "bomb.png"
    bomb.write_bytes(_bomb_png(side, side))
    before = tree_fingerprint(root)
    with pytest.warns(UserWarning, match="bomb.png"):
        data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=False,
                                     augment=None, validation_split=0.25)
    reasons = dict(data.skipped)
    assert str(bomb) in reasons
    assert claimed in reasons[str(bomb)]
    assert str(bomb) not in {p for p, _ in data.train_files + data.val_files}
    assert len(data.train_files) + len(data.val_files) == 12
    assert tree_fingerprint(root) == before  # the user's file is left where it is


def test_decompression_bomb_is_skipped_by_full_check_and_from_files(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bomb_png())
    reasons = check_files([str(bomb)], full=True)
    assert "decompression bomb" in reasons[str(bomb)]
    assert "too large" in reasons[str(bomb)]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        evaluated = pipelines.from_files([str(bomb), str(bomb)], image_size=32)
    assert not evaluated.paths


def test_serving_path_keeps_refusing_a_decompression_bomb():
    import tensorflow as tf

    transform = pipelines.make_eval_transform((32, 32), 0.875, "bilinear", 3)
    with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError)):
        transform(tf.constant(_bomb_png()))
