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

The same entry also keeps digests of the file's bytes that other stages would otherwise
read every file for (the leakage check's sha256 and perceptual hash,
:func:`indexed_digests`), under the same key: a file checked again gets a new entry, without
the old digests.

``ZOO_CHECK_INDEX=0`` in the environment turns the index off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# A file whose mtime is this close to the check's time may still be being written within
# one timestamp tick; its result is used now but not kept.
RACY_SECONDS = 2.0
INDEX_FORMAT = "zoo.pipelines.index/1"

# Index files kept parsed in this process (a start reads each one three times: the fast
# check, the validation files' full check, the leakage digests), at most this many entries
# in all, so that a folder of millions of images does not stay in memory after its start.
MEMO_ENTRIES = 300_000

Result = tuple | str
Stat = tuple[int, int, int]
# An entry: [size, mtime_ns, inode, checked fully, result] and, once digests were taken,
# {digest name: digest} as a sixth item.
_CHECK_FIELDS = 5
_memo: OrderedDict[Path, tuple[Stat, dict[str, list]]] = OrderedDict()
# The stats taken inside one_look(), by path; None outside it.
_looks: dict[str, Stat | None] | None = None


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
    stat = _stat(str(path))
    if stat is None:
        return {}
    memo = _memo.get(path)
    if memo is not None and memo[0] == stat:
        _memo.move_to_end(path)
        return memo[1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}
    _remember(path, stat, entries)
    return entries


def _remember(path: Path, stat: Stat | None, entries: dict[str, list]) -> None:
    _memo.pop(path, None)
    if stat is None:
        return
    _memo[path] = (stat, entries)
    while len(_memo) > 1 and sum(len(e) for _, e in _memo.values()) > MEMO_ENTRIES:
        _memo.popitem(last=False)


def _save(path: Path, folder: str, entries: dict[str, list]) -> None:
    # Written to a temporary file and renamed: a reader sees the old index or the new one,
    # and a second process writing at the same time only makes one of them win.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        # json.dumps, not json.dump: dump streams through the pure-Python encoder, dumps
        # takes the C one (0.8 s of a first start over 10,000 files, 30 saves, here).
        text = json.dumps({"format": INDEX_FORMAT, "folder": folder, "entries": entries})
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        # A read-only or full home only costs the next start its speed.
        _memo.pop(path, None)
        return
    _remember(path, _stat(str(path)), entries)


@contextlib.contextmanager
def one_look() -> Iterator[None]:
    """Within the block, the index looks at each file (``stat``) once, not once per stage.

    A start asks the index three times about the same files (the fast check, the
    evaluation files' full check, the leakage digests); each answer holds for the file as
    it was at the first look, as if the three were one. A result is still recorded only if
    the file's ``stat`` after its check equals the one before (a fresh look).
    """
    global _looks
    outer = _looks
    _looks = {} if outer is None else outer
    try:
        yield
    finally:
        _looks = outer


def _look(path: str) -> Stat | None:
    """``_stat(path)``, once per path inside :func:`one_look`."""
    looks = _looks
    if looks is None:
        return _stat(path)
    try:
        return looks[path]
    except KeyError:
        found = looks[path] = _stat(path)
        return found


def _stat(path: str) -> Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _current(entry: Any, stat: Stat) -> bool:
    """Whether an index entry was recorded for the file as it is now."""
    return (isinstance(entry, list) and len(entry) in (_CHECK_FIELDS, _CHECK_FIELDS + 1)
            and tuple(entry[:3]) == stat)


def _hit(entry: Any, stat: Stat, full: bool) -> Result | None:
    if not _current(entry, stat) or (full and not entry[3]):
        return None
    result = entry[4]
    return tuple(result) if isinstance(result, list) else result


def _by_folder(paths: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """``{absolute folder: [(path, file name)]}``; each folder spelling resolved once."""
    heads: dict[str, str] = {}
    out: dict[str, list[tuple[str, str]]] = {}
    for p in paths:
        # rpartition, not os.path.split (a few times slower): the folder comes from
        # abspath below, whatever the spelling of the head.
        head, _, name = p.rpartition(os.sep)
        folder = heads.get(head)
        if folder is None:
            folder = heads[head] = os.path.dirname(os.path.abspath(p))
        out.setdefault(folder, []).append((p, name))
    return out


def _settled_before() -> int:
    return time.time_ns() - int(RACY_SECONDS * 1e9)


def indexed_check(paths: Sequence[str], full: bool,
                  check: Callable[[Sequence[str]], tuple[dict[str, Result], dict[str, dict]]]
                  ) -> dict[str, Result]:
    """``check(paths)``'s results, taking those of unchanged files from the index.

    Args:
        paths: The files.
        full: Whether a full decode is asked for; an entry recorded by a full check also
            answers a fast one, not the other way round.
        check: Checks the files the index cannot answer for: ``({path: result},
            {path: {digest name: digest}})``, the digests of the bytes it read (kept as
            :func:`indexed_digests` would keep them; none is fine).

    Returns:
        ``{path: result}`` for every path, as ``check`` gives it.
    """
    base = index_dir()
    by_folder = _by_folder(paths)
    loaded = {folder: _load(_index_file(base, folder)) for folder in by_folder}
    results: dict[str, Result] = {}
    stats: dict[str, Stat | None] = {}
    for folder, members in by_folder.items():
        entries = loaded[folder]
        for p, name in members:
            stat = stats[p] = _look(p)
            found = _hit(entries.get(name), stat, full) if stat is not None else None
            if found is not None:
                results[p] = found
    missing = [p for p in paths if p not in results]
    if not missing:
        return results
    checked_now, digests_now = check(missing)
    results.update(checked_now)
    settled_before, checked = _settled_before(), set(missing)
    changed: set[str] = set()
    for folder, members in by_folder.items():
        entries = loaded[folder]
        for p, name in members:
            stat = stats[p]
            # Not kept: a file answered by the index, or one that vanished, changed while
            # it was checked, or is too new.
            if p not in checked or not _keepable(p, stat, settled_before):
                continue
            result = results[p]
            old = entries.get(name)
            # Digests of the same bytes (a fast entry checked fully now) stay.
            digests = dict(old[-1]) if _current(old, stat) and len(old) > _CHECK_FIELDS \
                and isinstance(old[-1], dict) else {}
            digests.update(digests_now.get(p, {}))
            entries[name] = [*stat, full, list(result) if isinstance(result, tuple) else result,
                             *([digests] if digests else [])]
            changed.add(folder)
    for folder in changed:
        _save(_index_file(base, folder), folder, loaded[folder])
    return results


def _keepable(path: str, stat: Stat | None, settled_before: int) -> bool:
    """Whether what was read of ``path`` (stat'ed as ``stat`` before) may be recorded."""
    return stat is not None and stat[1] <= settled_before and _stat(path) == stat


def indexed_digests(paths: Sequence[str], name: str,
                    compute: Callable[[Sequence[str]], dict[str, Any]]) -> dict[str, Any]:
    """``compute(paths)``'s digests, taking those of unchanged files from the index.

    A digest is kept in the file's check entry, so it is dropped with it when the file
    changes; files without a current entry (not checked, or too new) are computed each
    time and not recorded.

    Args:
        paths: The files.
        name: The digest's name, which says how it was made (e.g. ``"sha256"``): a new way
            of computing needs a new name.
        compute: Digests of the files the index cannot answer for, ``{path: digest}``
            (JSON-able; a path left out is not recorded).

    Returns:
        ``{path: digest}`` for the paths the index or ``compute`` answered.
    """
    base = index_dir()
    by_folder = _by_folder(paths)
    loaded = {folder: _load(_index_file(base, folder)) for folder in by_folder}
    results: dict[str, Any] = {}
    stats: dict[str, Stat | None] = {}
    for folder, members in by_folder.items():
        entries = loaded[folder]
        for p, file_name in members:
            stat = stats[p] = _look(p)
            entry = entries.get(file_name)
            if stat is not None and _current(entry, stat) and len(entry) > _CHECK_FIELDS \
                    and isinstance(entry[-1], dict) and name in entry[-1]:
                results[p] = entry[-1][name]
    missing = [p for p in paths if p not in results]
    if not missing:
        return results
    computed = compute(missing)
    results.update(computed)
    settled_before, asked = _settled_before(), set(missing)
    changed: set[str] = set()
    for folder, members in by_folder.items():
        entries = loaded[folder]
        for p, file_name in members:
            entry, stat = entries.get(file_name), stats[p]
            if p not in asked or p not in computed or stat is None \
                    or not _current(entry, stat) or not _keepable(p, stat, settled_before):
                continue
            if len(entry) == _CHECK_FIELDS or not isinstance(entry[-1], dict):
                entry[_CHECK_FIELDS:] = [{}]
            entry[-1][name] = computed[p]
            changed.add(folder)
    for folder in changed:
        _save(_index_file(base, folder), folder, loaded[folder])
    return results


__all__ = ["INDEX_FORMAT", "MEMO_ENTRIES", "RACY_SECONDS", "enabled", "index_dir",
           "indexed_check", "indexed_digests", "one_look"]
