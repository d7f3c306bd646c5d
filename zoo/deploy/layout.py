"""The export directory: TF Serving's numbered versions, the formats' file names, the move.

A version is written into a hidden staging directory inside the export directory, then
renamed into place, so that a server (or a person) never sees a half-written version: a
crash leaves at most a ``.zoo-export-*`` directory, which TF Serving ignores because its
name is not a number, and which the next export into that directory removes (with the
scratch directory a killed export leaves under the temp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPORT_FILE = "export.json"

# When this process started, near enough: staging directories older than this are not ours.
_PROCESS_START = time.time()
SCRATCH_PREFIX = "zoo-export-scratch-"
# zoo's own names only: ".zoo-export-<version>-p<pid>-<mkdtemp's 8 characters>", the
# scratch directory "zoo-export-scratch-p<pid>-<8>", and the staging name of zoo versions
# before the pid was in it (".zoo-export-<version>-<8>").
_STAGING = re.compile(r"^\.zoo-export-\d+-(?:p(?P<pid>\d+)-)?[a-z0-9_]{8}$")
_SCRATCH = re.compile(rf"^{SCRATCH_PREFIX}p(?P<pid>\d+)-[a-z0-9_]{{8}}$")

# Format name -> file name inside the version directory ("savedmodel" is the directory).
FORMATS: dict[str, str] = {
    "savedmodel": ".",
    "tflite": "model.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-dynamic": "model_dynamic.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
    "timm": "timm",
}


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """Normalises ``formats`` (a list or a comma-separated string) to known names, in order.

    Raises:
        ValueError: For an unknown or empty choice, naming the known formats.
    """
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen = [f.strip().lower() for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ValueError(f"Unknown export format(s) {unknown or formats!r}; choose from "
                         f"{', '.join(FORMATS)}.")
    return list(dict.fromkeys(chosen))


def existing_versions(out_dir: str | os.PathLike) -> list[int]:
    """Lists the numeric version directories under an export directory, ascending."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def version_target(out_dir: str | os.PathLike, version: int | None,
                   overwrite: bool) -> tuple[int, Path]:
    """Chooses the version number and its directory, refusing to replace one by accident.

    Args:
        out_dir: The export base directory.
        version: The version asked for, or None for one more than the highest present.
        overwrite: Whether an existing ``version`` may be replaced.

    Returns:
        ``(version, out_dir / str(version))``.

    Raises:
        ValueError: For a version that is not a non-negative integer.
        FileExistsError: When the version exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    if version is not None and (not isinstance(version, int) or version < 0):
        raise ValueError(f"version must be a non-negative integer (TF Serving's version "
                         f"directories are numbers); got {version!r}.")
    if version is None:
        version = (existing_versions(out) or [0])[-1] + 1
    target = out / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists at {target}. Pass overwrite=True (--overwrite) "
            f"to replace it, or leave the version out to write {existing_versions(out)[-1] + 1}.")
    return version, target


def format_path(version_dir: Path, fmt: str) -> Path:
    """Where format ``fmt`` lives inside a version directory."""
    relative = FORMATS[fmt]
    return version_dir if relative == "." else version_dir / relative


def savedmodel_bytes(version_dir: str | os.PathLike) -> int:
    """Size of the SavedModel's own files in a version directory (not TFLite, ONNX, report)."""
    root = Path(version_dir)
    parts = [root / "saved_model.pb", root / "fingerprint.pb",
             *(p for d in ("variables", "assets") for p in (root / d).rglob("*"))]
    return sum(p.stat().st_size for p in parts if p.is_file())


@contextmanager
def staged_version(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yields a staging directory that becomes ``target`` when the block succeeds.

    On any exception (KeyboardInterrupt too) the staging directory is removed and
    ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Inside the export directory, so the final rename stays on one filesystem and is
    # atomic; the leading dot and the non-numeric name keep TF Serving from loading it.
    remove_leftovers(target.parent, _STAGING)
    staging = Path(tempfile.mkdtemp(prefix=f".zoo-export-{target.name}-p{os.getpid()}-",
                                    dir=target.parent))
    try:
        yield staging
        move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    """Renames a finished staging directory to its version directory."""
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a server may run as another user
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"Version directory {target} appeared while exporting; "
                                  f"the export was not moved there. Export again.")
        # POSIX cannot rename a directory over a non-empty one: move the old version aside
        # first. In between the version is briefly absent, never half-written.
        retired = Path(tempfile.mkdtemp(prefix=f".zoo-retired-{target.name}-",
                                        dir=target.parent))
        os.rename(target, retired / target.name)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, target)


def scratch_directory() -> tempfile.TemporaryDirectory:
    """A scratch directory under the temp dir, after removing those killed exports left."""
    remove_leftovers(Path(tempfile.gettempdir()), _SCRATCH)
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}p{os.getpid()}-")


def remove_leftovers(folder: Path, pattern: re.Pattern) -> list[Path]:
    """Removes the staging or scratch directories a killed export left in ``folder``.

    Only directories named as zoo names them are touched, and only those older than this
    process whose writer (the pid in the name) is no longer running: a concurrent export's
    staging directory is kept.

    Args:
        folder: The export directory, or the temp dir.
        pattern: Which names are zoo's.

    Returns:
        The directories removed.
    """
    removed = []
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return removed  # unreadable: nothing of ours can be found there
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = match.groupdict().get("pid")
        try:
            old = entry.stat().st_mtime < _PROCESS_START
        except OSError:
            continue
        if old and (pid is None or not _running(int(pid))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, as another user's process
    return True
