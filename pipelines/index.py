"""A persistent index of file-check results, so that a second start on a folder is cheap.

:func:`pipelines.probe.check_files` reads and, for evaluation files, decodes every image;
on a large folder that is most of the time before the first batch. The results are kept
here, one small JSON file per image folder, under ``<ZOO_HOME>/check-index/<checker>/``
(``ZOO_HOME`` as for weight files; ``<checker>`` a digest of probe.py and of the TensorFlow
and Pillow versions, so a changed checker starts afresh). Nothing is written next to the
images.

An entry is reused while the file's size, modification time (ns) and inode are those it
was recorded with: a changed, replaced, added or removed file is checked again (a removed
one is simply not asked for). A rewrite that keeps size, mtime and inode (a deliberate
``touch -r``, or a write within the file system's timestamp granularity) is not seen by
the index; a file cache's key still hashes the bytes (:func:`pipelines.cache.files_cache_key`),
so cached pixels are never stale, and a file that then fails to decode in training is
skipped as any file the fast check let through. To narrow the second case, as git does
for its index, a file modified within :data:`RACY_SECONDS` of its check is not recorded.

``ZOO_CHECK_INDEX=0`` in the environment turns the index off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# A file whose mtime is this close to the check's time may still be being written within
# one timestamp tick; its result is used now but not kept.
RACY_SECONDS = 2.0
INDEX_FORMAT = "zoo.pipelines.index/1"

Result = tuple | str
Stat = tuple[int, int, int]


def enabled() -> bool:
    """Whether the index is on (``ZOO_CHECK_INDEX`` not ``0``/``off``/``false``)."""
    return os.environ.get("ZOO_CHECK_INDEX", "1").strip().lower() not in ("0", "off",
                                                                          "false", "no")


@functools.cache
def _checker_digest() -> str:
    from pipelines.cache import code_digest

    return code_digest(Path(__file__).with_name("probe.py"), __file__)[:16]


def index_dir() -> Path:
    """The folder holding the index files of the current checker.

    ``$ZOO_HOME``, else ``zoo`` in the Keras home (``$KERAS_HOME``, else ``~/.keras``): the
    rule of ``zoo.weights.download.zoo_home``, restated because pipelines ties itself to zoo
    by ``zoo.geometry`` alone.
    """
    home = os.environ.get("ZOO_HOME") or os.path.join(
        os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"), "zoo")
    return Path(os.path.expanduser(home)) / "check-index" / _checker_digest()


def _index_file(base: Path, folder: str) -> Path:
    return base / (hashlib.sha256(folder.encode()).hexdigest()[:32] + ".json")


def _load(path: Path) -> dict[str, list]:
    # A missing, unreadable or foreign file is an empty index: the files are checked again.
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save(path: Path, folder: str, entries: dict[str, list]) -> None:
    # Written to a temporary file and renamed: a reader sees the old index or the new one,
    # and a second process writing at the same time only makes one of them win.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump({"format": INDEX_FORMAT, "folder": folder, "entries": entries}, out)
        os.replace(temporary, path)
    except OSError:
        # A read-only or full home only costs the next start its speed.
        pass


def _stat(path: str) -> Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _hit(entry: Any, stat: Stat, full: bool) -> Result | None:
    if not isinstance(entry, list) or len(entry) != 5:
        return None
    size, mtime_ns, inode, was_full, result = entry
    if (size, mtime_ns, inode) != stat or (full and not was_full):
        return None
    return tuple(result) if isinstance(result, list) else result


def indexed_check(paths: Sequence[str], full: bool,
                  check: Callable[[Sequence[str]], dict[str, Result]]) -> dict[str, Result]:
    """``check(paths)``'s results, taking those of unchanged files from the index.

    Args:
        paths: The files.
        full: Whether a full decode is asked for; an entry recorded by a full check also
            answers a fast one, not the other way round.
        check: Checks the files the index cannot answer for.

    Returns:
        ``{path: result}`` for every path, as ``check`` gives it.
    """
    base = index_dir()
    stats = {p: _stat(p) for p in paths}
    by_folder: dict[str, list[str]] = {}
    for p in paths:
        by_folder.setdefault(os.path.dirname(os.path.abspath(p)), []).append(p)
    loaded = {folder: _load(_index_file(base, folder)) for folder in by_folder}
    results: dict[str, Result] = {}
    for folder, members in by_folder.items():
        for p in members:
            found = (_hit(loaded[folder].get(os.path.basename(p)), stats[p], full)
                     if stats[p] is not None else None)
            if found is not None:
                results[p] = found
    missing = [p for p in paths if p not in results]
    if not missing:
        return results
    results.update(check(missing))
    _record(base, missing, stats, results, loaded, full)
    return results


def _record(base: Path, checked: Sequence[str], stats: dict, results: dict,
            loaded: dict[str, dict], full: bool) -> None:
    settled_before = time.time_ns() - int(RACY_SECONDS * 1e9)
    changed: set[str] = set()
    for p in checked:
        stat, now = stats[p], _stat(p)
        # Not kept: a file that vanished, changed while it was checked, or is too new.
        if stat is None or now != stat or stat[1] > settled_before:
            continue
        folder = os.path.dirname(os.path.abspath(p))
        result = results[p]
        loaded[folder][os.path.basename(p)] = [
            *stat, full, list(result) if isinstance(result, tuple) else result]
        changed.add(folder)
    for folder in changed:
        _save(_index_file(base, folder), folder, loaded[folder])


__all__ = ["INDEX_FORMAT", "RACY_SECONDS", "enabled", "index_dir", "indexed_check"]
