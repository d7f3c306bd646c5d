"""File caches: keyed by what decides their content, never stale, never half-filled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pipeline_helpers import jpeg_bytes, make_folder, png_bytes, tree_fingerprint

import pipelines

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(image_size=(16, 16), validation_split=0.5, augment="none", shuffle=False,
                deterministic=True, imbalance_warning=None)
PADDED = 4096  # every test JPEG is padded to this size (zeros after the end marker)


def _pad(data: bytes, size: int) -> bytes:
    assert len(data) <= size
    return data + b"\0" * (size - len(data))  # decoders stop at the JPEG end marker


def _folder(root: Path, invert: bool = False) -> Path:
    """Two classes of four 32x32 JPEGs; ``invert`` writes the same names with 255 - pixels."""
    make_folder(root, {"cat": 4, "dog": 4}, size=(32, 32))
    for path in sorted(root.rglob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        path.write_bytes(_pad(jpeg_bytes(255 - pixels if invert else pixels), PADDED))
    return root


def _pixels(data, split: str) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in getattr(data, split)])


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("cache_folders")
    return _folder(base / "one"), _folder(base / "two", invert=True)


@pytest.fixture(scope="module")
def uncached(folders):
    """Val and train pixels of each folder read without a cache: what a cache must give."""
    return {root: {split: _pixels(pipelines.from_folder(root, cache=False, **SETTINGS), split)
                   for split in ("val", "train")} for root in folders}


def test_two_folders_share_one_cache_directory(folders, uncached, tmp_path):
    one, two = folders
    assert np.abs(uncached[one]["val"] - uncached[two]["val"]).mean() > 50  # visibly different
    for root in (one, two):
        data = pipelines.from_folder(root, cache=tmp_path / "cache", **SETTINGS)
        for split in ("val", "train"):
            np.testing.assert_array_equal(_pixels(data, split), uncached[root][split])


def test_an_unchanged_folder_reuses_its_cache_and_only_its_own(folders, uncached, tmp_path):
    one, two = folders
    cache = tmp_path / "cache"
    pipelines.from_folder(one, cache=cache, **SETTINGS)
    after_one = _listing(cache)
    pipelines.from_folder(two, cache=cache, **SETTINGS)
    after_two = _listing(cache)
    # The second folder made caches of its own and left the first one's as they were.
    assert set(after_two) > set(after_one)
    assert {n: after_two[n] for n in after_one} == after_one
    for root in (one, two):
        data = pipelines.from_folder(root, cache=cache, **SETTINGS)
        assert _listing(cache) == after_two  # read, not written again
        np.testing.assert_array_equal(_pixels(data, "val"), uncached[root]["val"])
        np.testing.assert_array_equal(_pixels(data, "train"), uncached[root]["train"])


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_a_rewritten_file_is_read_again(folders, tmp_path, change):
    root = tmp_path / "images"
    shutil.copytree(folders[0], root)
    cache = tmp_path / "cache"
    first = pipelines.from_folder(root, cache=cache, **SETTINGS)
    first_val = _pixels(first, "val")
    # One validation and one training file get new pixels; only their size or only their
    # mtime tells.
    for path, _ in (first.val_files[0], first.train_files[0]):
        stat = os.stat(path)
        pixels = np.asarray(Image.open(path).convert("RGB"))
        size = PADDED + 1 if change == "size" else PADDED
        Path(path).write_bytes(_pad(jpeg_bytes(255 - pixels), size))
        mtime = stat.st_mtime_ns if change == "size" else stat.st_mtime_ns + 10**9
        os.utime(path, ns=(mtime, mtime))
        assert (os.stat(path).st_size != stat.st_size) == (change == "size")
        assert (os.stat(path).st_mtime_ns != stat.st_mtime_ns) == (change == "mtime")
    second = pipelines.from_folder(root, cache=cache, **SETTINGS)
    fresh = pipelines.from_folder(root, cache=False, **SETTINGS)
    for split in ("val", "train"):
        np.testing.assert_array_equal(_pixels(second, split), _pixels(fresh, split))
    assert np.abs(_pixels(second, "val")[0] - first_val[0]).mean() > 50


@pytest.mark.parametrize("setting", [dict(image_size=(24, 20)), dict(crop_fraction=0.5),
                                     dict(interpolation="nearest"), dict(channels=1)],
                         ids=["image_size", "crop_fraction", "interpolation", "channels"])
def test_eval_settings_make_their_own_val_cache(folders, tmp_path, setting):
    cache = tmp_path / "cache"
    pipelines.from_folder(folders[0], cache=cache, **SETTINGS)
    before = _listing(cache)
    changed = {**SETTINGS, **setting}
    data = pipelines.from_folder(folders[0], cache=cache, **changed)
    fresh = pipelines.from_folder(folders[0], cache=False, **changed)
    np.testing.assert_array_equal(_pixels(data, "val"), _pixels(fresh, "val"))
    new = sorted(set(_listing(cache)) - set(before))
    # The train cache holds encoded bytes, which no eval setting changes: it is reused.
    assert new and all(name.startswith("val.cache") for name in new)


# A child process that fills the same folder's train cache through a gate: from the third
# file on, reading waits until the file `go` exists, so the fill is caught half-way on every
# run, whatever the speed of the machine.
_GATED_FILL = """
import itertools, os, sys, time
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
import pipelines
from pipelines import dataset

root, cache, ready, go = sys.argv[2:6]
calls = itertools.count()
deadline = time.monotonic() + 600

def gate(data):
    if next(calls) >= 2:
        open(ready, "a").close()
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.05)
    return data

def gated_read(source, label, kind, orientation):
    data = tf.py_function(gate, [tf.io.read_file(source)], tf.string)
    data.set_shape([])
    return data, label, kind, orientation

dataset.read_element = gated_read
pipelines.from_folder(root, cache=cache, image_size=(16, 16), validation_split=0.5,
                      augment="none", shuffle=False, deterministic=True, imbalance_warning=None)
print("filled", flush=True)
"""


def _start_gated_fill(root: Path, cache: Path, tmp_path: Path):
    ready, go, log = tmp_path / "ready", tmp_path / "go", tmp_path / "child.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-c", _GATED_FILL, str(ROOT), str(root),
                                  str(cache), str(ready), str(go)], stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
    # Wait (without a time limit on the fill itself) until the child is inside its fill.
    deadline = time.monotonic() + 300
    while not (ready.exists() and cache.is_dir()
               and any(p.name.endswith(".lockfile") for p in cache.iterdir())):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            child.wait()
            pytest.fail(f"the gated fill did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return child, go, log


def test_an_interrupted_fill_is_filled_again_and_nothing_else_is_touched(folders, uncached,
                                                                          tmp_path):
    root = folders[0]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "notes.txt").write_text("not a cache")
    images = tree_fingerprint(root)
    child, _, _ = _start_gated_fill(root, cache, tmp_path)
    child.kill()  # SIGKILL: tf.data cannot clean up after itself
    child.wait()
    assert any(p.name.endswith(".lockfile") for p in cache.iterdir())
    assert not any(p.name.endswith(".index") for p in cache.iterdir())
    with pytest.warns(UserWarning, match="unfinished file cache left by an interrupted run"):
        data = pipelines.from_folder(root, cache=cache, **SETTINGS)
    np.testing.assert_array_equal(_pixels(data, "train"), uncached[root]["train"])
    np.testing.assert_array_equal(_pixels(data, "val"), uncached[root]["val"])
    names = {p.name for p in cache.iterdir()}
    assert not any(".lockfile" in n or ".tempstate" in n for n in names)
    assert (cache / "notes.txt").read_text() == "not a cache"
    assert tree_fingerprint(root) == images


def test_without_file_locks_a_leftover_lock_file_gives_a_clear_error(folders, tmp_path,
                                                                      monkeypatch):
    # Where there are no file locks (Windows), a tf.data lock file may be another run's: it
    # is not deleted, and the error says what to do.
    cache = tmp_path / "cache"
    pipelines.from_folder(folders[0], cache=cache, **SETTINGS)
    (index,) = cache.glob("train.cache*.index")
    prefix = index.name[:-len(".index")]
    for path in cache.glob(f"{prefix}.*"):
        if not path.name.endswith(".lock"):
            path.unlink()
    (cache / f"{prefix}_0.lockfile").write_text("Created at: 0")
    monkeypatch.setattr(pipelines.cache, "fcntl", None, raising=False)
    with pytest.raises(RuntimeError, match="no locks to tell which.*delete the files"):
        pipelines.from_folder(folders[0], cache=cache, **SETTINGS)


def _waiters_on(directory: Path) -> bool:
    """Whether some process waits for a file lock held on a file in ``directory``."""
    inodes = {str(p.stat().st_ino) for p in directory.iterdir()}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[-3].rsplit(":", 1)[-1] in inodes:
            return True
    return False


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux' /proc/locks")
def test_a_second_process_waits_for_a_fill_in_progress(folders, uncached, tmp_path):
    root = folders[0]
    cache = tmp_path / "cache"
    child, go, log = _start_gated_fill(root, cache, tmp_path)
    stop = threading.Event()

    def release_when_waited_for():
        # The child's fill goes on only once this process is seen waiting for it.
        while not stop.is_set():
            if _waiters_on(cache):
                go.touch()
                return
            time.sleep(0.05)

    releaser = threading.Thread(target=release_when_waited_for, daemon=True)
    releaser.start()
    try:
        with pytest.warns(UserWarning, match="Waiting for another process"):
            data = pipelines.from_folder(root, cache=cache, **SETTINGS)
    finally:
        stop.set()
        go.touch()
        releaser.join()
        child.wait(timeout=300)
    assert child.returncode == 0 and "filled" in log.read_text(), log.read_text()
    np.testing.assert_array_equal(_pixels(data, "train"), uncached[root]["train"])
    np.testing.assert_array_equal(_pixels(data, "val"), uncached[root]["val"])


def test_tfds_datasets_share_one_cache_directory(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    shade = {"mnist": 30, "fashion_mnist": 200}

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False,
                   **kwargs):
        images = [png_bytes(np.full((28, 28), shade[self.name] + i, np.uint8))
                  for i in range(10)]
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": np.arange(10, dtype=np.int64)})

    val = {}
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        for name in ("mnist", "fashion_mnist"):
            for cache in (tmp_path / "cache", False):
                data = pipelines.from_tfds(name, image_size=16, batch_size=4, cache=cache)
                val[name, bool(cache)] = _pixels(data, "val")
    for name, value in shade.items():
        np.testing.assert_array_equal(val[name, True], val[name, False])
        assert abs(float(val[name, True].mean()) - value) < 10
