"""Faults from issue 20 that reach the pipelines: each is written to disk for real by the
test (a decompression bomb, a symlink loop, swapped files with restored mtimes, ...)."""

from __future__ import annotations

import io
import os
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


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loop_up_to_the_root_puts_no_other_class_in_a_class(tmp_path):
    root = make_folder(tmp_path / "data", {"class_a": 5, "class_b": 5, "class_c": 5})
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes((root / "class_b" / "000.jpg").read_bytes())
    os.symlink("..", root / "class_a" / "loop")  # class_a/loop -> the root
    os.symlink(root / "class_c", root / "class_b" / "c_too")  # another class, linked in
    os.symlink(outside, root / "class_b" / "outside.jpg")  # a file outside the root
    os.symlink("000.jpg", root / "class_c" / "again.jpg")  # the same file, twice
    os.mkdir(root / "class_c" / "sub")
    os.symlink("../001.jpg", root / "class_c" / "sub" / "fine.jpg")  # twice, inside
    before = tree_fingerprint(root)
    with pytest.warns(UserWarning, match="Skipped"):
        data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=False,
                                     augment=None, validation_split=0.4)
    used = data.train_files + data.val_files
    # Every image once, in its own class only, in one split only.
    assert len(used) == 15 and len({p for p, _ in used}) == 15
    for path, label in used:
        assert Path(path).parent.name == data.class_names[label], path
    reasons = {os.path.relpath(p, root): r for p, r in data.skipped}
    for link in ("class_a/loop", "class_b/c_too", "class_b/outside.jpg"):
        assert "symbolic link leading outside" in reasons[link]
    for twice in ("class_c/again.jpg", "class_c/sub/fine.jpg"):
        assert "reached twice" in reasons[twice]
    assert tree_fingerprint(root) == before


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_class_folder_that_is_itself_a_link_is_used(tmp_path):
    store = make_folder(tmp_path / "store", {"dogs": 4})
    root = make_folder(tmp_path / "data", {"cats": 4})
    os.symlink(store / "dogs", root / "dogs")
    data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=False,
                                 augment=None, validation_split=0.25)
    assert data.class_names == ["cats", "dogs"] and not data.skipped


def _same_size_folder(root: Path) -> Path:
    """Two classes of four JPEGs, all padded to 4096 bytes and given one mtime (an archive
    unpacked with one timestamp)."""
    import numpy as np
    from PIL import Image
    from pipeline_helpers import jpeg_bytes

    make_folder(root, {"cat": 4, "dog": 4}, size=(32, 32))
    for path in sorted(root.rglob("*.jpg")):
        data = jpeg_bytes(np.asarray(Image.open(path).convert("RGB")))
        path.write_bytes(data + b"\0" * (4096 - len(data)))  # decoders stop at the end marker
        os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    return root


def _all_pixels(data) -> dict:
    import numpy as np

    return {split: np.concatenate([x.numpy() for x, _ in getattr(data, split)])
            for split in ("train", "val")}


def test_swapped_class_folders_with_same_sizes_and_mtimes_get_a_new_cache(tmp_path):
    import numpy as np

    root = _same_size_folder(tmp_path / "data")
    settings = dict(image_size=(16, 16), validation_split=0.5, augment="none", shuffle=False,
                    deterministic=True, imbalance_warning=None)
    pipelines.from_folder(root, cache=tmp_path / "cache", **settings)  # fills the caches
    stats = {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in root.rglob("*.jpg")}
    (root / "cat").rename(root / "tmp")
    (root / "dog").rename(root / "cat")
    (root / "tmp").rename(root / "dog")
    for rel, (size, mtime) in stats.items():  # every path, size and mtime as before
        assert (root / rel).stat().st_size == size
        os.utime(root / rel, ns=(mtime, mtime))
    expected = _all_pixels(pipelines.from_folder(root, cache=False, **settings))
    got = _all_pixels(pipelines.from_folder(root, cache=tmp_path / "cache", **settings))
    for split in ("train", "val"):
        np.testing.assert_array_equal(got[split], expected[split])


def test_the_check_opens_each_file_once_and_hashes_only_for_a_file_cache(tmp_path,
                                                                         monkeypatch):
    import sys

    # The modules (pipelines' namespace has a function named probe).
    cache_module, probe_module = sys.modules["pipelines.cache"], sys.modules["pipelines.probe"]
    root = _folder(tmp_path)
    opened, hashed = [], []

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return open(path, *args, **kwargs)

    content_digests = cache_module.content_digests

    def counting_digests(paths):
        hashed.extend(paths)
        return content_digests(paths)

    monkeypatch.setattr(probe_module, "open", counting_open, raising=False)
    monkeypatch.setattr(cache_module, "content_digests", counting_digests)
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    check_files(files, full=False)
    assert sorted(opened) == files  # one open per file
    settings = dict(image_size=16, validation_split=0.5, augment="none", batch_size=4)
    pipelines.from_folder(root, cache=False, **settings)
    pipelines.from_folder(root, cache=True, **settings)  # in memory: no key to take
    assert hashed == []
    pipelines.from_folder(root, cache=tmp_path / "cache", **settings)
    assert sorted(hashed) == files  # the file cache's key hashes every file's bytes


def test_validation_split_zero_beside_a_val_folder_warns(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", {"cats": 4, "dogs": 4})
    make_folder(root / "val", {"cats": 2, "dogs": 2})
    # val/ repeats train/'s first images (make_folder's one seed), which the leakage check
    # would rightly warn about; this test is about validation_split alone.
    settings = dict(image_size=32, batch_size=4, cache=False, augment=None, dedupe="off")
    with pytest.warns(UserWarning, match=r"validation_split=0 is not used: .*val holds the "
                      r"validation images.*To train without validation") as caught:
        data = pipelines.from_folder(root, validation_split=0, **settings)
    assert caught[0].filename == __file__  # names the caller's line
    assert len(data.val_files) == 4  # decided: val/ is still used, and the user is told
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipelines.from_folder(root, **settings)  # the default says nothing


_FILL_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
from pathlib import Path
from pipeline_helpers import make_folder
import pipelines
base = Path({base!r})
root = make_folder(base / "data", {{"a": 6, "b": 6}})
print("BEFORE", file=sys.stderr, flush=True)
for _ in range(2):  # a fill, then a read of the finished cache
    data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=base / "cache",
                                 augment=None, imbalance_warning=None)
    for batch in data.train:
        pass
print("AFTER", file=sys.stderr, flush=True)
"""


def test_a_complete_file_cache_fill_logs_no_truncation_line(tmp_path):
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    script = _FILL_SCRIPT.format(tests=tests, root=str(Path(tests).parents[1]),
                                 base=str(tmp_path))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}  # TensorFlow logs its warnings
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "did not fully read the dataset being cached" not in done.stderr
    # stderr is whole again around and after the fill: other lines still get through.
    assert "BEFORE" in done.stderr and "AFTER" in done.stderr
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.index"))  # filled for real


def _offset_gif(transparent: bool = True) -> bytes:
    """A 16x16 canvas holding one 8x8 frame at (4, 4), as trimming tools write them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    indices = rng.integers(0, 15, (8, 8), dtype=np.uint8)
    indices[0, :3] = 15  # a few transparent pixels inside the frame too
    frame = Image.fromarray(indices, "P")
    palette = rng.integers(0, 256, 48, dtype=np.uint8).tolist()
    frame.putpalette(palette)
    buffer = io.BytesIO()
    frame.save(buffer, "GIF", **({"transparency": 15} if transparent else {}))
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 16, 16)  # the logical screen
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[pos] == 0x21:  # skip extensions: label, then sub-blocks up to the empty one
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C and struct.unpack("<HH", data[pos + 5:pos + 9]) == (8, 8)
    data[pos + 1:pos + 5] = struct.pack("<HH", 4, 4)  # the frame's offset on the canvas
    return bytes(data)


@pytest.mark.parametrize("transparent", [True, False])
def test_a_gif_frame_smaller_than_its_canvas_decodes_as_pillow_shows_it(tmp_path,
                                                                      transparent):
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from pipelines import transforms

    data = _offset_gif(transparent)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (16, 16)
    expected = transforms.pil_decode(data)  # Pillow: the frame at (4, 4) on the canvas
    assert expected.shape == (16, 16, 3)
    graph = transforms.graph_decode(tf.constant(data)).numpy()
    np.testing.assert_array_equal(graph, expected)
    # The serving bytes path and the folder path (training, evaluation) agree with it.
    served = pipelines.make_eval_transform((16, 16), 1.0, "bilinear", 3)(tf.constant(data))
    np.testing.assert_allclose(served.numpy(), expected, atol=1)
    (tmp_path / "one.gif").write_bytes(data)
    files = pipelines.from_files([str(tmp_path / "one.gif")], image_size=16, crop_fraction=1.0)
    pixels = next(iter(files.dataset)).numpy()[0]
    np.testing.assert_allclose(pixels, expected, atol=1)


def test_skip_warning_points_to_the_manifest_that_lists_every_skipped_file(tmp_path):
    import json

    root = _folder(tmp_path)
    for i in range(12):
        (root / "cats" / f"broken{i:02d}.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 12 file") as caught:
        data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=False,
                                     augment=None, out_dir=tmp_path / "run")
    message = next(str(w.message) for w in caught if "Skipped" in str(w.message))
    manifest = tmp_path / "run" / "split.json"
    assert f"all are listed in {manifest}" in message and ".skipped" not in message
    assert len(json.loads(manifest.read_text())["skipped"]) == 12 == len(data.skipped)
    with pytest.warns(UserWarning, match=r"2 more \(see \.skipped\)"):  # no manifest: the API
        pipelines.from_folder(root, image_size=32, batch_size=4, cache=False, augment=None)


def test_a_class_with_one_image_left_out_of_validation_warns(tmp_path):
    root = make_folder(tmp_path / "data", {"cats": 6, "dogs": 6, "rare": 1})
    with pytest.warns(UserWarning, match=r"1 class\(es\) have no validation images: 'rare' "
                      r"\(1 image\(s\)\)") as caught:
        data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=False,
                                     augment=None, imbalance_warning=None)
    assert data.counts["val"]["rare"] == 0 and data.counts["train"]["rare"] == 1
    assert any(w.filename == __file__ for w in caught)
    with warnings.catch_warnings():  # no validation split at all: nothing to say
        warnings.simplefilter("error")
        pipelines.from_folder(root, image_size=32, batch_size=4, cache=False, augment=None,
                              imbalance_warning=None, validation_split=0)
