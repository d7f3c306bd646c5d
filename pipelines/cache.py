"""Content-keyed dataset caches: in memory or in files, filled once, under a lock.

A file cache is named ``<directory>/<split>.cache-<key>``, the key a hash of everything
that decides its elements, so that two folders or two settings can share one directory and
a changed file makes a new cache instead of reading a stale one. A fill interrupted by a
crash is removed and done again, and a second process filling the same cache waits.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.probe import ImageFile
from pipelines.warn import warn_user

try:
    import fcntl
except ImportError:  # Windows: file caches then go without a lock (see cache_lock)
    fcntl = None

# The memory budget where the available memory cannot be read.
DEFAULT_CACHE_LIMIT = 2 << 30
# The share of the memory available at start that an in-memory cache may take: the model,
# the decoders' buffers and other processes need the rest.
MEMORY_FRACTION = 0.5
# Part of every file cache's key: changing how cached elements are laid out means a new name.
CACHE_FORMAT = "zoo.pipelines.cache/1"


def is_file_cache(cache: Any) -> bool:
    """Whether a ``cache=`` value names a directory for file caches."""
    return isinstance(cache, (str, os.PathLike))


def files_cache_key(files: Sequence[ImageFile]) -> str:
    """A digest of what decides a split's cached elements, for ``build_dataset(cache_key=)``.

    Covers each file's path, size, modification time (ns), a hash of its bytes, label,
    decoder kind and EXIF orientation, in order: a file rewritten since, added, removed or
    relabelled gives another key, hence another cache. The hash matters where size and
    mtime say nothing: two class folders swapped in an archive unpacked with one timestamp
    keep every path, size and mtime. It is taken here, only for a file cache's key, not by
    every check.

    Args:
        files: The split's checked files, in dataset order.

    Returns:
        A sha256 hex digest.
    """
    digest = hashlib.sha256()
    contents = content_digests([f.path for f in files])
    for f, content in zip(files, contents):
        try:
            stat = os.stat(f.path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # gone since the check: the fill will say so, with the path
            size, mtime = -1, -1
        digest.update(f"{f.path}\0{size}\0{mtime}\0{content}\0{f.label}\0{f.kind}\0"
                      f"{f.orientation}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _content_digest(path: str) -> str:
    # The whole file, not only its ends: two same-size JPEGs padded with zeros (or sharing
    # one camera's EXIF block) can agree on both ends and still hold other pixels.
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=12)
                                       ).hexdigest()
    except OSError:
        return "unreadable"


def content_digests(paths: Sequence[str]) -> list[str]:
    """A short hash of each file's bytes, in order, read in parallel threads."""
    workers = min(8, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_content_digest, paths))


def code_digest(*module_files: str | os.PathLike) -> str:
    """A digest of source files and of the decoding libraries' versions.

    Part of the key of a cache that holds finished pixels: after a change to the code that
    makes them (or to the decoders underneath), the old pixels are stale.
    """
    from PIL import __version__ as pillow_version

    digest = hashlib.sha256(f"{tf.__version__}\0{pillow_version}".encode())
    for module_file in module_files:
        try:
            digest.update(Path(module_file).read_bytes())
        except (OSError, TypeError):
            digest.update(str(module_file).encode())
    return digest.hexdigest()


def cache_prefix(directory: str | os.PathLike, cache_name: str, key: dict) -> Path:
    """``<directory>/<cache_name>.cache-<key>``; the key hashes all that decides the content.

    Args:
        directory: The cache directory.
        cache_name: The split's name.
        key: JSON-able description of what decides the elements.
    """
    parts = {"format": CACHE_FORMAT, "split": cache_name, **key}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return Path(directory) / f"{cache_name}.cache-{digest}"


@contextlib.contextmanager
def cache_lock(prefix: Path) -> Iterator[bool]:
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
            warn_user(f"Waiting for another process that is filling the file cache {prefix}.")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


def remove_unfinished(prefix: Path) -> None:
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
        warn_user(f"Removed {len(removed)} file(s) of an unfinished file cache left by an "
                  f"interrupted run ({', '.join(sorted(removed))}); filling "
                  f"{prefix.name} again.")


def fill(ds: tf.data.Dataset) -> None:
    """Iterates ``ds`` once, so that its cache is complete before anyone else reads it."""
    # Filled now, by one plain pass. Under a distribution strategy (Mirrored on two devices,
    # MultiWorkerMirrored), Keras iterates a rewrite of the dataset that shares this cache,
    # and a cache first filled that way sometimes kept only part of the split (113-119 of
    # 120 validation images, about one run in five) for the rest of the run. The pass does
    # work the first epoch would do anyway.
    ds.reduce(np.int64(0), lambda count, _: count + 1)


# What tf.data's file-cache writer logs when it is destroyed, even after a complete pass
# (its check looks for a shard index that finishing the cache has just merged and removed).
_FALSE_TRUNCATION_LINE = b"The calling iterator did not fully read the dataset being cached"


def _forward_lines(source: int, target: int, dropped: bytes) -> None:
    """Copies lines from fd ``source`` to fd ``target`` until EOF, leaving out ``dropped``."""
    pending = b""
    try:
        while chunk := os.read(source, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if dropped not in line)
            if kept:
                os.write(target, kept)
        if pending and dropped not in pending:
            os.write(target, pending)
    except OSError:  # the terminal went away: nothing left to forward to
        pass
    finally:
        os.close(source)


@contextlib.contextmanager
def _stderr_without(dropped: bytes) -> Iterator[None]:
    """Runs the block with fd 2 passed through a filter that drops lines holding ``dropped``.

    At the file-descriptor level, because TensorFlow's C++ logging writes there directly;
    every other line (Python's too) still reaches the original stderr, in order.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_forward_lines, args=(read_end, saved, dropped),
                            daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end, so the pump sees EOF
        pump.join(timeout=10)
        if not pump.is_alive():  # else a child process still holds the pipe: keep its fd
            os.close(saved)


def file_cache(ds: tf.data.Dataset, prefix: Path) -> tf.data.Dataset:
    """``ds.cache(prefix)``, complete on return; an unfinished cache is never read."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.cache(str(prefix))
    # tf.data writes the index last, once every element is in: with it, the cache is complete
    # and is only ever read (no lock needed, so a read-only cache directory works too).
    index = Path(f"{prefix}.index")
    if index.exists():
        return ds
    with cache_lock(prefix) as locked:
        if index.exists():  # filled meanwhile by the process this one waited for
            return ds
        if locked:
            remove_unfinished(prefix)
        try:
            with _stderr_without(_FALSE_TRUNCATION_LINE):
                fill(ds)
        except tf.errors.AlreadyExistsError:
            raise RuntimeError(
                f"The file cache {prefix} is being filled by another run, or a run filling it "
                f"was interrupted, and this file system has no locks to tell which. If no "
                f"other run uses it, delete the files {prefix.name}_* in {prefix.parent} "
                "that are left and run again.") from None
    return ds


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of ``/proc/meminfo``), None if unknown.

    Read from ``/proc/meminfo`` rather than through psutil, which zoo does not depend on;
    elsewhere the free physical pages (``sysconf``) stand in, and failing that None.
    """
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def memory_budget() -> tuple[int, str]:
    """The most an in-memory cache may take, and how that figure was found.

    ``ZOO_MEMORY_BUDGET`` (bytes) when set; else :data:`MEMORY_FRACTION` of the memory
    available now; else :data:`DEFAULT_CACHE_LIMIT`.
    """
    given = os.environ.get("ZOO_MEMORY_BUDGET", "").strip()
    if given:
        try:
            return int(float(given)), "ZOO_MEMORY_BUDGET"
        except ValueError:
            raise ValueError(f"ZOO_MEMORY_BUDGET must be a number of bytes, e.g. "
                             f"{4 << 30} for 4 GiB; got {given!r}.") from None
    available = available_memory()
    if available is None:
        return DEFAULT_CACHE_LIMIT, "the default, available memory unknown"
    return (int(available * MEMORY_FRACTION),
            f"{MEMORY_FRACTION:.0%} of the {available / 2**30:.1f} GiB available now")


def within_memory_limit(cache: Any, cache_bytes: int | None, what: str,
                        source: str | None = None) -> Any:
    """``cache``, or False (with a warning) for an in-memory cache over the memory budget.

    Args:
        cache: The ``cache=`` value.
        cache_bytes: Estimated size of the cache, when known.
        what: What would be cached (``"train"``, ``"eval"``, or all splits), for the message.
        source: The folder or table the images come from, for the message.
    """
    if cache is not True or cache_bytes is None:
        return cache
    budget, how = memory_budget()
    if cache_bytes <= budget:
        return cache
    of = f" of {source}" if source else ""
    warn_user(f"Not caching the {what} data{of} in memory: it would take about "
              f"{cache_bytes / 2**30:.2f} GiB, over the memory budget of "
              f"{budget / 2**30:.2f} GiB ({how}). Reading the files every epoch instead. "
              "Pass cache='<directory>' for a file cache on disk (content-keyed, filled "
              "once), or cache=False to run without one and without this warning; "
              "ZOO_MEMORY_BUDGET=<bytes> sets the budget.")
    return False


def cached(ds: tf.data.Dataset, cache: Any, *, name: str, key: dict | None) -> tf.data.Dataset:
    """``ds`` cached as ``cache=`` says, and filled: in memory (True), in files, or not.

    Args:
        ds: The dataset.
        cache: True, False, or a directory for file caches.
        name: The split's name, for the file cache's name.
        key: What decides the elements (see :func:`cache_prefix`); a file cache needs it.

    Raises:
        ValueError: For a file cache without ``key``.
    """
    if not cache:
        return ds
    if cache is True:
        ds = ds.cache()
        fill(ds)
        return ds
    if key is None:
        raise ValueError("A file cache needs cache_key= (what decides the elements, e.g. "
                         "the files with their sizes and mtimes); without it a stale or "
                         "another source's cache could be read.")
    return file_cache(ds, cache_prefix(cache, name, key))


__all__ = ["CACHE_FORMAT", "DEFAULT_CACHE_LIMIT", "MEMORY_FRACTION", "available_memory",
           "cache_lock", "memory_budget", "cache_prefix", "cached",
           "code_digest", "file_cache", "files_cache_key", "fill", "is_file_cache",
           "remove_unfinished", "within_memory_limit"]
