"""Broken files in a real folder: each is written for real, found before training, listed
with its reason, reported once and left untouched; training then runs a whole epoch."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image
from pipeline_helpers import jpeg_bytes, make_folder, photo, png_bytes, tree_fingerprint

import pipelines


def _corrupt_png() -> bytes:
    # A PNG whose header and end are fine but whose compressed pixels are garbage: only a
    # full decode finds it.
    data = bytearray(png_bytes(photo("rocket")))
    start = data.index(b"IDAT") + 4
    data[start + 40:start + 400] = bytes(range(256)) + bytes(range(104))
    return bytes(data)


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("messy"), {"cats": 6, "dogs": 6})
    good_jpeg = jpeg_bytes(photo("coffee"))
    tiff = io.BytesIO()
    Image.fromarray(photo("coffee")).save(tiff, "TIFF")
    bad = {
        "cats/empty.jpg": b"",
        "cats/truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "cats/page.jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "dogs/notes.png": b"remember to label these\n",
        "dogs/scan.jpg": tiff.getvalue(),
        "dogs/scan.tif": tiff.getvalue(),
        "dogs/noise.jpg": bytes(range(7, 250)) * 20,
        "cats/.DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 64,
        "cats/._000.jpg": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ",
        "only_broken/zero.jpg": b"",
        "cats/corrupt.png": _corrupt_png(),
        # A valid JPEG followed by other data (phone "motion photos" append a video).
        "dogs/motion.jpg": good_jpeg + b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000),
    }
    for rel, data in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty_class").mkdir()
    os.symlink(root / "nowhere.jpg", root / "dogs" / "broken_link.jpg")
    return root


EXPECTED_REASONS = {
    "cats/empty.jpg": "empty file (0 bytes)",
    "cats/truncated.jpg": "truncated or corrupt",
    "cats/page.jpg": "HTML",
    "dogs/notes.png": "text",
    "dogs/scan.jpg": "unsupported format TIFF",
    "dogs/scan.tif": "not an image file name (.tif)",
    "dogs/noise.jpg": "unknown file format",
    "dogs/broken_link.jpg": "unreadable",
    "cats/.DS_Store": "hidden file",
    "cats/._000.jpg": "hidden file",
    "only_broken/zero.jpg": "empty file",
    "only_broken": "without usable images",
    "empty_class": "without usable images",
}


def test_bad_files_are_skipped_with_reasons_and_training_runs(messy_folder, tmp_path):
    before = tree_fingerprint(messy_folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = pipelines.from_folder(messy_folder, image_size=32, batch_size=4,
                                     validation_split=0.25, out_dir=tmp_path)
    reports = [w for w in caught if "Skipped" in str(w.message)]
    assert len(reports) == 1  # reported once
    assert "left untouched" in str(reports[0].message)
    reasons = {os.path.relpath(p, messy_folder): r for p, r in data.skipped}
    for rel, expected in EXPECTED_REASONS.items():
        assert expected in reasons.get(rel, ""), (rel, reasons.get(rel))
    # The decoder's own words, without TensorFlow's op and device wrapping.
    assert not any("function_node" in r or "[Op:" in r for r in reasons.values()), reasons
    assert "dogs/motion.jpg" not in reasons
    assert data.class_names == ["cats", "dogs"]  # empty folders are not classes
    # The corrupt PNG passes the fast check; validation files are decoded fully, training
    # files are not (the next test covers one failing while training).
    corrupt = str(messy_folder / "cats" / "corrupt.png")
    assert (corrupt in [p for p, _ in data.train_files]) != ("cats/corrupt.png" in reasons)
    # A whole epoch of each split runs, of exactly the listed files.
    assert sum(int(y.shape[0]) for _, y in data.train) == len(data.train_files)
    assert sum(int(y.shape[0]) for _, y in data.val) == len(data.val_files)
    assert len(data.train_files) + len(data.val_files) in (13, 14)  # good + motion (+ PNG)
    assert tree_fingerprint(messy_folder) == before  # nothing moved, changed or deleted
    assert len(data.manifest["skipped"]) == len(data.skipped)


def test_full_check_finds_corrupt_data_behind_a_good_header(messy_folder):
    with pytest.warns(UserWarning, match="Skipped"):
        data = pipelines.from_folder(messy_folder, image_size=32, check="full")
    reasons = {os.path.relpath(p, messy_folder): r for p, r in data.skipped}
    assert "corrupt" in reasons["cats/corrupt.png"]
    assert "dogs/motion.jpg" not in reasons


# What the unreadable-file test runs in a process of its own; as root, without the
# capabilities that let root read any file (setpriv), so that a file's mode counts as it
# does for a user.
_SKIPPED_OF = """
import json, sys, warnings
import pipelines
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    data = pipelines.from_folder(sys.argv[1], image_size=32)
print(json.dumps({"skipped": data.skipped, "warned": [str(w.message) for w in caught]}))
"""
_NO_READ_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                     "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file(tmp_path):
    root = make_folder(tmp_path, {"a": 2, "b": 2})
    locked = root / "a" / "locked.jpg"
    locked.write_bytes(jpeg_bytes(photo("coffee")))
    locked.chmod(0)
    try:
        prefix = []
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root, and setpriv (util-linux) is not installed")
            prefix = _NO_READ_OVERRIDE
        done = subprocess.run(
            [*prefix, sys.executable, "-c", _SKIPPED_OF, str(root)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(Path(pipelines.__file__).parents[1])})
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.splitlines()[-1])
        skipped, warned = result["skipped"], result["warned"]
        assert [r for p, r in skipped if p == str(locked)] == ["unreadable (Permission denied)"]
        assert any("Skipped 1 file" in w and "locked.jpg" in w for w in warned)
        assert locked.stat().st_mode & 0o777 == 0  # left as it was
    finally:
        locked.chmod(0o644)


def test_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "readme.txt").write_text("no photos yet")
    (tmp_path / "loose.jpg").write_bytes(jpeg_bytes(photo("coffee")))
    with pytest.raises(ValueError, match=r"No usable images.*root/<class>/\*\.jpg"), \
            pytest.warns(UserWarning):
        pipelines.from_folder(tmp_path)


def test_single_class_is_a_clear_error(tmp_path):
    make_folder(tmp_path, {"cats": 3})
    (tmp_path / "dogs").mkdir()
    with pytest.raises(ValueError, match="Only one class .'cats'.*at least two class folders"), \
            pytest.warns(UserWarning):
        pipelines.from_folder(tmp_path)


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipelines.from_folder(tmp_path / "nope")
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        pipelines.from_folder(tmp_path / "x.jpg")


def test_from_files_leaves_out_bad_files_and_keeps_order(messy_folder):
    paths = [messy_folder / "cats" / "001.jpg", messy_folder / "cats" / "empty.jpg",
             messy_folder / "dogs" / "000.jpg"]
    with pytest.warns(UserWarning, match="empty.jpg: empty file"):
        result = pipelines.from_files(paths, [0, 0, 1], image_size=32, batch_size=8)
    assert result.paths == [str(paths[0]), str(paths[2])]
    labels = [y.numpy().tolist() for _, y in result.dataset]
    assert labels == [[0, 1]]


def test_a_file_failing_at_run_time_is_replaced_not_fatal(tmp_path):
    root = make_folder(tmp_path, {"cats": 3, "dogs": 3})
    (root / "cats" / "corrupt.png").write_bytes(_corrupt_png())
    data = pipelines.from_folder(root, image_size=32, batch_size=4, validation_split=0)
    assert len(data.train_files) == 7 and not data.skipped  # the fast check passes it
    for _ in range(2):  # two epochs of exactly 7 images each, no error
        assert sum(int(y.shape[0]) for _, y in data.train) == 7
    assert int(data.train.cardinality()) == data.steps_per_epoch == 2


def test_a_cut_off_jpeg_is_reported_without_decoder_noise(tmp_path, capfd):
    root = make_folder(tmp_path, {"a": 3, "b": 3})
    good = jpeg_bytes(photo("coffee"))
    (root / "a" / "cut.jpg").write_bytes(good[: len(good) * 2 // 3])
    with pytest.warns(UserWarning, match="Skipped 1 file"):
        data = pipelines.from_folder(root, image_size=32)
    reason = dict(data.skipped)[str(root / "a" / "cut.jpg")]
    assert reason.startswith("truncated or corrupt image data (image file is truncated")
    # Only zoo's own report reaches the terminal, not a line of TensorFlow's C++ log.
    assert "Premature end of JPEG" not in capfd.readouterr().err


def test_a_file_name_that_is_not_utf8_is_checked_split_and_read(tmp_path):
    # Names copied from old archives or other systems can hold bytes that are not UTF-8;
    # Python sees them with surrogates, TensorFlow needs the bytes.
    root = make_folder(tmp_path / "names", {"cats": 10, "dogs": 10})
    odd = os.path.join(os.fsencode(str(root / "cats")), b"\xff\xfe photo.jpg")
    with open(odd, "wb") as out:
        out.write(jpeg_bytes(photo("coffee")))
    before = tree_fingerprint(root)
    settings = dict(image_size=32, batch_size=4, validation_split=0.5, augment=None,
                    out_dir=tmp_path / "run")
    data = pipelines.from_folder(root, cache=False, check="full", **settings)
    used = [p for p, _ in data.train_files + data.val_files]
    assert os.fsdecode(odd) in used and data.skipped == []
    assert sum(int(y.shape[0]) for _, y in data.train) == len(data.train_files)
    assert sum(int(y.shape[0]) for _, y in data.val) == len(data.val_files)
    again = pipelines.from_folder(root, manifest=tmp_path / "run" / "split.json",
                                  **dict(settings, out_dir=None))
    assert again.val_files == data.val_files
    assert tree_fingerprint(root) == before
