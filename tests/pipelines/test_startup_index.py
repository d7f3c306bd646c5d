"""The check index: a repeated start reads only changed files, and nothing beside the images."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from pipeline_helpers import jpeg_bytes, make_folder, photo, png_bytes, tree_fingerprint

import pipelines
from pipelines import index

probe = sys.modules["pipelines.probe"]  # the package's name 'probe' is the function


def _settle(root: Path) -> None:
    # Files written a moment ago are not recorded (see index.RACY_SECONDS): date them back.
    past = time.time() - 60
    for current, _, files in os.walk(root):
        for name in files:
            os.utime(Path(current) / name, (past, past))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_CHECK_INDEX", "1")
    return tmp_path / "home"


@pytest.fixture
def counted(monkeypatch):
    """The paths the checker actually reads, call by call."""
    read: list[str] = []
    real = probe._inspect

    # Every check of a file starts here (its full decode, if any, comes after).
    def inspecting(path, full=False, digest=False):
        read.append(path)
        return real(path, full, digest)

    monkeypatch.setattr(probe, "_inspect", inspecting)
    return read


def _folder(tmp_path: Path) -> Path:
    root = make_folder(tmp_path / "photos", {"astronaut": 12, "coffee": 12})
    (root / "coffee" / "cut.jpg").write_bytes(jpeg_bytes(photo("coffee"))[:900])
    _settle(root)
    return root


def test_repeated_start_reads_nothing_and_gives_the_same_data(tmp_path, home, counted):
    root = _folder(tmp_path)
    before = tree_fingerprint(root)
    first = pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    # Every file once: the validation files' full check decodes them without reading
    # their headers again.
    assert sorted(counted) == sorted(str(p) for p in root.rglob("*.jpg"))
    counted.clear()
    second = pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    assert counted == []
    assert second.val_files == first.val_files
    assert second.train_files == first.train_files
    # The bad file is reported again from the index, with the same reason.
    assert second.skipped == first.skipped
    assert any(p.endswith("cut.jpg") for p, _ in second.skipped)
    assert tree_fingerprint(root) == before
    assert list(home.glob("check-index/*/*.json"))


def test_changed_added_and_removed_files_are_checked_again(tmp_path, home, counted):
    root = _folder(tmp_path)
    pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    changed = root / "astronaut" / "003.jpg"
    changed.write_bytes(jpeg_bytes(photo("astronaut"))[:700])  # now cut off
    added = root / "coffee" / "new.jpg"
    added.write_bytes(jpeg_bytes(photo("chelsea", (40, 30))))
    (root / "coffee" / "004.jpg").unlink()
    past = time.time() - 30
    for path in (changed, added):
        os.utime(path, (past, past))
    counted.clear()
    data = pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    used = {str(root / p) if not os.path.isabs(p) else p
            for p, _ in [*data.train_files, *data.val_files]}
    val = {str(root / p) if not os.path.isabs(p) else p for p, _ in data.val_files}
    assert {str(changed), str(added)} <= set(counted)
    # Besides those, only files the new split moved into validation (decoded fully now).
    assert set(counted) - {str(changed), str(added)} <= val
    assert str(changed) in dict(data.skipped)
    assert str(added) in used
    assert str(root / "coffee" / "004.jpg") not in used


def test_a_fast_entry_does_not_answer_a_full_check(tmp_path, home, counted):
    root = _folder(tmp_path)
    paths = sorted(str(p) for p in (root / "astronaut").glob("*.jpg"))
    fast = probe.check_files(paths, full=False)
    counted.clear()
    assert probe.check_files(paths, full=False) == fast
    assert counted == []
    full = probe.check_files(paths, full=True)
    assert sorted(counted) == paths
    counted.clear()
    assert probe.check_files(paths, full=False) == full == fast
    assert counted == []


def test_new_files_are_not_recorded_and_the_index_can_be_turned_off(tmp_path, home, counted,
                                                                    monkeypatch):
    root = make_folder(tmp_path / "fresh", {"a": 3})
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    probe.check_files(paths, full=False)
    probe.check_files(paths, full=False)
    assert len(counted) == 6  # modified just now: within RACY_SECONDS, not kept
    _settle(root)
    monkeypatch.setenv("ZOO_CHECK_INDEX", "0")
    counted.clear()
    probe.check_files(paths, full=False)
    probe.check_files(paths, full=False)
    assert len(counted) == 6
    assert not list(home.glob("check-index/*/*.json"))


def test_a_damaged_index_file_is_ignored(tmp_path, home, counted):
    root = _folder(tmp_path)
    paths = sorted(str(p) for p in (root / "coffee").glob("*.jpg"))
    first = probe.check_files(paths, full=False)
    for stored in home.glob("check-index/*/*.json"):
        stored.write_text("{not json")
    counted.clear()
    assert probe.check_files(paths, full=False) == first
    assert sorted(counted) == paths
    assert index.INDEX_FORMAT in next(home.glob("check-index/*/*.json")).read_text()


def test_a_long_check_shows_progress_and_a_short_one_does_not(tmp_path, home, monkeypatch,
                                                              capsys):
    root = make_folder(tmp_path / "few", {"a": 5})
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    probe.check_files(paths, full=False, use_index=False)
    assert "Checking" not in capsys.readouterr().err
    monkeypatch.setattr(probe, "PROGRESS_AFTER_SECONDS", 0.0)
    probe.check_files(paths, full=True, use_index=False)
    captured = capsys.readouterr()
    assert "Checking 5 files (full check):" in captured.err
    assert "5/5" in captured.out


@pytest.fixture
def fingerprinted(monkeypatch):
    """The paths the leakage check actually reads, call by call."""
    leakage = sys.modules["pipelines.leakage"]
    read: list[str] = []
    real = leakage._fingerprint

    def counting(path, near=True):
        read.append(path)
        return real(path, near=near)

    monkeypatch.setattr(leakage, "_fingerprint", counting)
    return read


def _pairs(data) -> list[tuple[str, str, str]]:
    return [(p["train"], p["other"], p["kind"]) for p in data.manifest["leakage"]["pairs"]]


def test_leakage_digests_come_from_the_index_until_a_file_changes(tmp_path, home,
                                                                   fingerprinted, monkeypatch):
    root = tmp_path / "split"
    make_folder(root / "train", {"astronaut": 6, "coffee": 6})
    make_folder(root / "val", {"astronaut": 2, "coffee": 2}, size=(56, 42))  # other bytes
    copy = root / "val" / "coffee" / "copy.jpg"
    copy.write_bytes((root / "train" / "coffee" / "003.jpg").read_bytes())
    _settle(root)
    first = pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    assert _pairs(first) == [("train/coffee/003.jpg", "val/coffee/copy.jpg", "exact")]
    # The byte hashes were taken by the check from the bytes it read: no file read again.
    assert fingerprinted == []
    second = pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    assert fingerprinted == []
    assert _pairs(second) == _pairs(first)
    # Rewritten with other bytes: checked and hashed again by the check, and the pair is gone.
    copy.write_bytes(jpeg_bytes(photo("chelsea")))
    past = time.time() - 20
    os.utime(copy, (past, past))
    third = pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)
    assert fingerprinted == []
    assert _pairs(third) == []
    # Without the index the leakage stage hashes every file itself, to the same pairs.
    monkeypatch.setenv("ZOO_CHECK_INDEX", "0")
    assert _pairs(pipelines.from_folder(root, image_size=32, batch_size=8, cache=False)) == []
    assert len(fingerprinted) == 17
    monkeypatch.setenv("ZOO_CHECK_INDEX", "1")
    # The perceptual hash is another digest: taken once for every file, then kept too.
    fingerprinted.clear()
    pipelines.from_folder(root, image_size=32, batch_size=8, cache=False, dedupe_near=True)
    assert len(fingerprinted) == 17
    fingerprinted.clear()
    pipelines.from_folder(root, image_size=32, batch_size=8, cache=False, dedupe_near=True)
    assert fingerprinted == []


def test_full_decodes_in_one_pipeline_find_what_single_decodes_find(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "many", {"a": 20, "b": 20})  # over probe._BATCH_DECODES
    good = jpeg_bytes(photo("astronaut", (64, 48)))
    # A JPEG cut in its scan with its end marker put back, and a PNG with garbage pixels:
    # both pass the fast check (header and end look fine). TensorFlow's decoder, the one
    # training uses, reads the first (grey below the cut) and refuses the second.
    (root / "a" / "cut.jpg").write_bytes(good[:len(good) // 2] + b"\xff\xd9")
    png = bytearray(png_bytes(photo("rocket")))
    start = png.index(b"IDAT") + 4
    png[start + 40:start + 400] = bytes(range(256)) + bytes(range(104))
    (root / "b" / "garbage.png").write_bytes(bytes(png))
    paths = sorted(str(p) for p in root.rglob("*.*"))
    fast = probe.check_files(paths, full=False, use_index=False)
    assert not any(isinstance(r, str) for r in fast.values())
    batched = probe.check_files(paths, full=True, use_index=False)
    monkeypatch.setattr(probe, "_BATCH_DECODES", 10**9)  # each file decoded eagerly
    single = probe.check_files(paths, full=True, use_index=False)
    assert batched == single
    bad = {Path(p).name: r for p, r in batched.items() if isinstance(r, str)}
    assert set(bad) == {"garbage.png"}
    assert all("truncated or corrupt image data" in r for r in bad.values()), bad
    # Given the fast results, the full check decodes the same files to the same verdicts.
    assert probe.check_files(paths, full=True, use_index=False, known=fast) == single
