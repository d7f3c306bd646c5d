"""Download, verify and cache weight files; offline use; manifests for air-gapped machines.

Why not ``keras.utils.get_file`` as it is (Keras 3.15):

* it compares the full hex digest, so torchvision's hashes, which are sha256 *prefixes*
  (the 8+ hex digits in the file name that ``torch.hub`` checks), can never match;
* it downloads straight to the final file name: a process killed mid-download (SIGKILL,
  power loss) leaves a partial file where a complete one is expected, and a file that
  fails the hash check after download is left in place;
* offline it fails with "URL fetch failure" and no word on where the file could be put.

So this module keeps ``get_file``'s contract (hash-checked, progress bar, cache directory)
and adds the missing parts: the file is streamed into a unique temporary file in the cache
directory, hashed on the way, and renamed over the final name (``os.replace``, atomic on
POSIX and Windows) only once the size and the hash are right. A final name therefore
only ever holds a complete, verified file, and a cached file is verified again before use.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request

from zoo.registry import Weights

logger = logging.getLogger("zoo.weights")

_CHUNK = 1 << 20


class WeightsUnavailableError(FileNotFoundError):
    """A weight file is not in the cache and cannot be downloaded (offline or no network)."""


class HashMismatchError(ValueError):
    """A file's hash is not the publisher's: damaged, truncated or a different file."""


def zoo_home() -> str:
    """The zoo cache directory: ``$ZOO_HOME``, else ``zoo`` in the Keras cache directory."""
    home = os.environ.get("ZOO_HOME")
    if home:
        return os.path.expanduser(home)
    return os.path.join(_keras_home(), "zoo")


def _keras_home() -> str:
    # Keras' own rule (keras/src/backend/config.py), read at call time rather than once at
    # import: $KERAS_HOME, else ~/.keras, else /tmp/.keras when the home is read-only.
    if "KERAS_HOME" in os.environ:
        return os.path.expanduser(os.environ["KERAS_HOME"])
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def weights_dir() -> str:
    """Where downloaded weight files are kept: ``<zoo_home()>/weights``."""
    return os.path.join(zoo_home(), "weights")


def cache_path(entry: Weights) -> str:
    """The path a catalog file has in zoo's cache (whether or not it is there yet)."""
    return os.path.join(weights_dir(), entry.file_name)


def is_offline() -> bool:
    """Whether ``ZOO_OFFLINE`` asks zoo never to touch the network."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _other_caches(entry: Weights) -> list[str]:
    # Files keras.applications or torch.hub already downloaded are just as good once their
    # hash checks out; a user who has used either library need not download them again.
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    places = [os.path.join(_keras_home(), "models", entry.file_name),
              os.path.join(os.path.expanduser(torch_home), "hub", "checkpoints",
                           entry.file_name)]
    return [p for p in places if os.path.isfile(p)]


def file_hash(path: str, algorithm: str) -> str:
    """The hex digest of a file.

    Args:
        path: The file.
        algorithm: ``"md5"`` or ``"sha256"``.

    Returns:
        The full hex digest.
    """
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def hash_matches(digest: str, expected: str) -> bool:
    """Whether a full hex digest matches the publisher's hash, which may be a prefix.

    A prefix must have at least 8 hex digits, as torch.hub requires.
    """
    expected = expected.lower()
    return len(expected) >= 8 and digest.lower().startswith(expected)


def verify(path: str, entry: Weights) -> bool:
    """Whether a local file is the catalog entry's file (by the publisher's hash)."""
    return hash_matches(file_hash(path, entry.hash_algorithm), entry.hash)


def _describe_hash(entry: Weights) -> str:
    if entry.hash_algorithm == "sha256" and len(entry.hash) < 64:
        return f"sha256 starting with {entry.hash}"
    return f"{entry.hash_algorithm} {entry.hash}"


def unavailable_message(entry: Weights, reason: str) -> str:
    """The error text for a file that is neither cached nor downloadable.

    Args:
        entry: The catalog entry.
        reason: Why it cannot be downloaded.

    Returns:
        A message with the URL, the file name, the hash and the exact path to put it at.
    """
    return (
        f"Pretrained weights {entry.tag!r} of {entry.model!r} are not in the cache and "
        f"cannot be downloaded: {reason}\n"
        f"  file: {entry.file_name}\n"
        f"  url:  {entry.url}\n"
        f"  hash: {_describe_hash(entry)}\n"
        f"To use them without network, download the file elsewhere (or run `zoo pull "
        f"{entry.model} {entry.tag}` on a connected machine) and put it at:\n"
        f"  {cache_path(entry)}\n"
        f"(set ZOO_HOME to use another directory; `zoo pull --from DIR` copies and verifies "
        f"a directory of such files).")


def find_cached(entry: Weights) -> str | None:
    """A verified local copy of a catalog file, or None.

    Looks in zoo's cache, then in keras.applications' and torch.hub's caches. A file whose
    hash does not match is never used (a warning says so).
    """
    for path in [cache_path(entry), *_other_caches(entry)]:
        if not os.path.isfile(path):
            continue
        if verify(path, entry):
            return path
        logger.warning("Ignoring %s: its hash is not the publisher's (%s); it is damaged, "
                       "incomplete or another file.", path, _describe_hash(entry))
    return None


def fetch(entry: Weights, *, progress: bool = True, timeout: float = 60.0) -> str:
    """The local path of a catalog file: from a cache if there, else downloaded and verified.

    Args:
        entry: A catalog entry with a URL and a hash.
        progress: Show a progress bar while downloading.
        timeout: Seconds without data after which the download fails.

    Returns:
        The path of a file whose hash is the publisher's.

    Raises:
        WeightsUnavailableError: Offline (``ZOO_OFFLINE=1``) or unreachable, with where
            to put the file by hand.
        HashMismatchError: The download's hash is not the publisher's (nothing is kept).
    """
    if entry.path:
        return entry.path
    found = find_cached(entry)
    if found:
        return found
    if is_offline():
        raise WeightsUnavailableError(unavailable_message(entry, "zoo is offline (ZOO_OFFLINE="
                                                          f"{os.environ['ZOO_OFFLINE']})."))
    target = cache_path(entry)
    try:
        download(entry.url, target, expected_hash=entry.hash, algorithm=entry.hash_algorithm,
                 progress=progress, timeout=timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        if isinstance(error, (HashMismatchError, WeightsUnavailableError)):
            raise
        reason = getattr(error, "reason", None) or error
        raise WeightsUnavailableError(unavailable_message(
            entry, f"downloading failed ({reason}).")) from error
    return target


def download(url: str, target: str, *, expected_hash: str, algorithm: str,
             progress: bool = True, timeout: float = 60.0) -> str:
    """Downloads ``url`` to ``target`` atomically, verifying the publisher's hash.

    Args:
        url: An http(s) or file URL.
        target: Final path; its directory is created.
        expected_hash: Hex digest or prefix of one (at least 8 digits).
        algorithm: ``"md5"`` or ``"sha256"``.
        progress: Show a Keras progress bar.
        timeout: Socket timeout in seconds.

    Returns:
        ``target``.

    Raises:
        HashMismatchError: The downloaded bytes do not have the expected hash.
        OSError: On network errors or a short read; no file is left behind.
    """
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    _remove_stale_parts(target)
    fd, partial = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".part",
                                   dir=directory)
    hasher = hashlib.new(algorithm)
    received = 0
    try:
        logger.info("Downloading %s", url)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total) if progress else None
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(received)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise OSError(f"connection closed after {received} of {total} bytes")
        digest = hasher.hexdigest()
        if not hash_matches(digest, expected_hash):
            raise HashMismatchError(
                f"The file downloaded from {url} has {algorithm} {digest}, not the "
                f"publisher's {expected_hash}: it was damaged in transit or the server sent "
                "another file. Nothing was kept; try again, or fetch it by hand and check it.")
        os.replace(partial, target)
    except BaseException:
        # Also on KeyboardInterrupt: a partial file must never outlive its download.
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return target


def _progress_bar(total: int | None):
    from keras.utils import Progbar

    return Progbar(total, unit_name="B")


def _remove_stale_parts(target: str, max_age_seconds: float = 24 * 3600) -> None:
    # Temporary files of downloads killed hard (SIGKILL) are never read; clear old ones.
    # Young ones may belong to a download running in another process.
    now = time.time()
    for part in glob.glob(glob.escape(target) + ".*.part"):
        try:
            if now - os.path.getmtime(part) > max_age_seconds:
                os.remove(part)
        except OSError:
            pass


def manifest(entries: list[Weights]) -> dict:
    """A manifest of catalog files: what to download and where it goes, with hashes.

    Args:
        entries: Catalog entries (duplicates and aliases are listed once).

    Returns:
        A JSON-ready dict: ``cache_dir`` and one record per file with ``models`` (model and
        tag pairs), ``file_name``, ``url``, ``hash``, ``hash_algorithm``, ``path`` relative
        to the cache directory, and whether a verified copy is ``present`` here.
    """
    files: dict[str, dict] = {}
    for entry in entries:
        record = files.get(entry.file_name)
        if record is None:
            cached = find_cached(entry)
            record = files[entry.file_name] = {
                "file_name": entry.file_name, "url": entry.url, "hash": entry.hash,
                "hash_algorithm": entry.hash_algorithm,
                "path": os.path.join("weights", entry.file_name),
                "present": cached is not None,
                "size": os.path.getsize(cached) if cached else None,
                "models": [],
            }
        pair = f"{entry.model}:{entry.tag}"
        if pair not in record["models"]:
            record["models"].append(pair)
    return {
        "format": "zoo-weights-manifest/1",
        "cache_dir": zoo_home(),
        "how_to_use": "Download each url (any tool), copy the files to <ZOO_HOME>/<path> on "
                      "the offline machine or run `zoo pull --from DIR` there; zoo checks "
                      "every hash before use.",
        "files": list(files.values()),
    }


def write_manifest(entries: list[Weights], path: str) -> dict:
    """Writes :func:`manifest` as JSON to ``path`` and returns it."""
    data = manifest(entries)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return data


def fill_from(directory: str, entries: list[Weights]) -> tuple[list[str], list[str]]:
    """Copies catalog files from a directory (a copy made elsewhere) into the cache.

    Each file is looked for as ``DIR/<file_name>`` and ``DIR/weights/<file_name>``, verified
    against the catalog's hash (not against any manifest, which could be edited) and copied
    atomically.

    Args:
        directory: Where the copied files are.
        entries: The catalog entries wanted.

    Returns:
        ``(installed, missing)`` file names; a file with a wrong hash counts as missing and
        is reported in the log.
    """
    installed, missing = [], []
    seen = set()
    for entry in entries:
        if entry.file_name in seen:
            continue
        seen.add(entry.file_name)
        if find_cached(entry):
            installed.append(entry.file_name)
            continue
        candidates = [os.path.join(directory, entry.file_name),
                      os.path.join(directory, "weights", entry.file_name)]
        source = next((c for c in candidates if os.path.isfile(c)), None)
        if source is None or not verify(source, entry):
            if source is not None:
                logger.warning("%s has the wrong hash (expected %s); not copied.", source,
                               _describe_hash(entry))
            missing.append(entry.file_name)
            continue
        target = cache_path(entry)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=entry.file_name + ".", suffix=".part",
                                       dir=os.path.dirname(target))
        os.close(fd)
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
        installed.append(entry.file_name)
    return installed, missing
