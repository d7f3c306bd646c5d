"""Files from the Hugging Face Hub: ``hf://owner/repo[@revision]`` URIs, download, offline use.

The transfer and the cache are ``huggingface_hub``'s (``hf_hub_download``): files land in
its cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
shared with every other library that reads the Hub, and are written to a unique
``.incomplete`` file renamed into place only when complete. zoo adds what it adds to its
other weights:

* the settings are read when a file is fetched, not when ``huggingface_hub`` is imported
  (its ``constants`` freeze ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` at import),
  and ``ZOO_OFFLINE`` turns the Hub off too;
* every file is checked against the Hub's own hash before use, on download and from the
  cache: the cache names each blob by its ETag, which is the sha256 for LFS files (weights)
  and the git blob sha1 for small ones (``config.json``); where the cache holds plain
  copies (no symlinks), the ETag is asked of the Hub. A cut or damaged file is never
  used; it is removed from the cache (its name proves it wrong) and named in the error;
* the errors name the repository, the file, the revision and where the files can be put by
  hand (a local folder passed as ``weights=``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from zoo.weights.download import (
    HashMismatchError,
    WeightsUnavailableError,
    file_hash,
    is_offline,
)

logger = logging.getLogger("zoo.weights")

SCHEME = "hf://"
DEFAULT_ENDPOINT = "https://huggingface.co"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HEX = re.compile(r"[0-9a-f]+")


class HubNotFoundError(FileNotFoundError):
    """The Hub answered, but has no such repository, revision or file."""


@dataclass(frozen=True)
class HubFiles:
    """A Hub repository's files, fetched into the local cache and verified.

    Attributes:
        folder: The local snapshot folder holding the files (inside huggingface_hub's cache;
            read it, never write to it).
        repo_id: ``owner/name``.
        revision: The revision asked for (a branch, tag or commit), None for the default
            branch.
        commit: The commit the files come from (40 hex digits).
        files: File name to its sha256, in the order fetched (``config.json`` first, then the
            weight file).
    """

    folder: Path
    repo_id: str
    revision: str | None
    commit: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def weights_file(self) -> str | None:
        """The weight file fetched (``model.safetensors`` or ``pytorch_model.bin``), if any."""
        return next((name for name in self.files if name != "config.json"), None)

    @property
    def uri(self) -> str:
        """``hf://owner/repo@<commit>``: the URI that fetches exactly these files again."""
        return f"{SCHEME}{self.repo_id}@{self.commit}"


def parse_hf_uri(uri: str) -> tuple[str, str | None]:
    """Splits ``hf://owner/repo`` or ``hf://owner/repo@revision`` into repo id and revision.

    Args:
        uri: The URI.

    Returns:
        ``(repo_id, revision)``; revision is None when the URI names none.

    Raises:
        ValueError: Not an ``hf://owner/repo[@revision]`` URI.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    example = "hf://timm/resnet50.a1_in1k or hf://timm/resnet50.a1_in1k@<branch, tag or commit>"
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"{uri!r} is not a Hub URI: write {example}.")
    repo_id, at, revision = uri[len(SCHEME):].partition("@")
    if at and not revision.strip():
        raise ValueError(f"{uri!r} has an '@' but no revision after it: write {example}.")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{uri!r} does not name a repository as owner/name: write {example}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{uri!r}: {repo_id!r} is not a valid Hub repository name ({error}); "
                         f"write {example}.") from error
    return repo_id, (revision if at else None)


def hub_endpoint() -> str:
    """The Hub's address: ``$HF_ENDPOINT``, else ``https://huggingface.co`` (read now)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, by its own rule but read now rather than at its import.

    ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.
    """
    env = os.environ
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not hub:
        home = env.get("HF_HOME") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
        hub = os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def hub_offline() -> str | None:
    """Which variable turns the Hub off, as ``NAME=value``, or None.

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) by huggingface_hub's rule (1, ON, YES,
    TRUE), and ``ZOO_OFFLINE`` by zoo's, as for its other weights.
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={os.environ[name]}"
    if is_offline():
        return f"ZOO_OFFLINE={os.environ['ZOO_OFFLINE']}"
    return None


def resolve_url(repo_id: str, filename: str, revision: str | None = None) -> str:
    """The address a file is downloaded from: ``<endpoint>/<repo>/resolve/<revision>/<file>``."""
    return f"{hub_endpoint()}/{repo_id}/resolve/{revision or 'main'}/{filename}"


def unavailable_message(repo_id: str, filename: str, revision: str | None, reason: str) -> str:
    """The error text for a Hub file that is neither cached nor downloadable.

    Args:
        repo_id: ``owner/name``.
        filename: The file.
        revision: The revision asked for (None: the default branch).
        reason: Why it cannot be downloaded.

    Returns:
        A message with the repository, file, revision, URL and the two ways to supply the
        files by hand (a local folder, or a copy of the Hub cache).
    """
    return (
        f"{filename} of the Hub repository {repo_id!r} (revision "
        f"{revision or 'main'!r}) is not in the cache and cannot be downloaded: {reason}\n"
        f"  url:   {resolve_url(repo_id, filename, revision)}\n"
        f"  cache: {hub_cache_dir() / _repo_folder(repo_id)}\n"
        f"To use it without network, download the repository's config.json and its weight "
        f"file ({' or '.join(WEIGHT_FILES)}) elsewhere (any tool, or `hf download {repo_id}` "
        f"on a connected machine), put both in one folder and pass that folder as "
        f"weights=\"path/to/folder\" (--weights on the command line); or copy the cache folder "
        f"above from a connected machine to the same place here (HF_HOME moves it).")


def fetch_hub_folder(repo_id: str, revision: str | None = None,
                     filenames: tuple[str, ...] = ("config.json", *WEIGHT_FILES)) -> HubFiles:
    """Fetches a repository's ``config.json`` and its weight file, verified, via the Hub cache.

    The first name is required; of the others, the first one the repository has is
    fetched (so the default takes ``model.safetensors`` over ``pytorch_model.bin``). All
    files come from one commit: the one the first file resolved to.

    Args:
        repo_id: ``owner/name``.
        revision: A branch, tag or commit; None for the default branch.
        filenames: The required file, then the alternatives in order of preference.

    Returns:
        The files, their snapshot folder, the commit and each file's sha256.

    Raises:
        WeightsUnavailableError: Offline (``HF_HUB_OFFLINE`` or ``ZOO_OFFLINE``) with the
            files not cached, or the Hub unreachable; says where to put the files by hand.
        HubNotFoundError: No such repository, revision or file.
        HashMismatchError: A file is not the one the Hub publishes (it is removed).
    """
    first, *alternatives = filenames
    path = _download(repo_id, first, revision)
    commit = Path(path).parent.name
    files = {first: _verified_sha256(path, repo_id, first, commit)}
    not_cached: WeightsUnavailableError | None = None
    for name in alternatives:
        try:
            path = _download(repo_id, name, commit, asked=revision)
        except HubNotFoundError:
            continue
        except WeightsUnavailableError as error:
            if not hub_offline():
                raise  # the Hub failed midway: another file would hide that
            not_cached = not_cached or error  # offline, another file may be cached
            continue
        files[name] = _verified_sha256(path, repo_id, name, commit)
        break
    else:
        if not_cached:
            raise not_cached
        if alternatives:
            raise HubNotFoundError(
                f"The Hub repository {repo_id!r} (revision {revision or 'main'!r}, commit "
                f"{commit}) has none of {', '.join(alternatives)}: it holds no weights in "
                f"timm's hub layout. Check the repository's files at "
                f"{hub_endpoint()}/{repo_id}/tree/{revision or 'main'}.")
    return HubFiles(Path(path).parent, repo_id, revision, commit, files)


def _download(repo_id: str, filename: str, revision: str | None,
              asked: str | None = None) -> str:
    # One file through huggingface_hub's cache; its errors become zoo's, naming what to do.
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    asked = revision if asked is None else asked
    offline = hub_offline()
    try:
        return hf_hub_download(repo_id, filename, revision=revision, endpoint=hub_endpoint(),
                               cache_dir=hub_cache_dir(), local_files_only=offline is not None)
    except hf_errors.GatedRepoError as error:
        raise HubNotFoundError(
            f"The Hub repository {repo_id!r} is gated: accept its terms at "
            f"{hub_endpoint()}/{repo_id} and give zoo a token (HF_TOKEN, or `hf auth login`)."
        ) from error
    except hf_errors.RepositoryNotFoundError as error:
        raise HubNotFoundError(
            f"The Hub at {hub_endpoint()} has no model repository {repo_id!r}: check the "
            f"name (owner/name, as in {hub_endpoint()}/timm/resnet50.a1_in1k); a private "
            f"repository needs a token (HF_TOKEN, or `hf auth login`).") from error
    except hf_errors.RevisionNotFoundError as error:
        raise HubNotFoundError(
            f"The Hub repository {repo_id!r} has no revision {asked!r}: give a branch, tag "
            f"or commit it has (see {hub_endpoint()}/{repo_id}/commits/main), or leave the "
            f"'@{asked}' out for the default branch.") from error
    except hf_errors.RemoteEntryNotFoundError as error:
        raise HubNotFoundError(
            f"The Hub repository {repo_id!r} (revision {asked or 'main'!r}) has no file "
            f"{filename}.") from error
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as error:
        if not offline and _offline_when_imported(error):
            offline = "HF_HUB_OFFLINE was set when huggingface_hub was imported"
        reason = (f"the Hub is turned off ({offline})." if offline else
                  f"the Hub at {hub_endpoint()} could not be reached ({_cause(error)}).")
        raise WeightsUnavailableError(
            unavailable_message(repo_id, filename, asked, reason)) from error
    except OSError as error:
        # A transfer that failed midway (cut connection, server error): huggingface_hub has
        # removed its .incomplete file, nothing was kept.
        raise WeightsUnavailableError(unavailable_message(
            repo_id, filename, asked, f"the download failed ({_cause(error)}); nothing was "
            "kept, try again.")) from error


def _offline_when_imported(error: BaseException) -> bool:
    # huggingface_hub refuses every request when HF_HUB_OFFLINE was set at its import, even
    # if it is unset now.
    from huggingface_hub.errors import OfflineModeIsEnabled

    while error is not None:
        if isinstance(error, OfflineModeIsEnabled):
            return True
        error = error.__cause__ or error.__context__
    return False


def _cause(error: BaseException) -> str:
    # huggingface_hub's connection errors wrap the socket's; the innermost says what happened.
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _verified_sha256(path: str, repo_id: str, filename: str, commit: str) -> str:
    """The sha256 of a cached file, after checking it against the Hub's ETag.

    The cache names each blob by its ETag; where it could not link blobs (no symlinks on
    the file system) the file is a plain copy and the ETag is asked of the Hub instead.
    """
    blob = Path(os.path.realpath(path))
    expected = blob.name if _is_etag(blob.name) else _published_etag(repo_id, filename, commit)
    sha256 = file_hash(str(blob), "sha256")
    if expected is None:
        logger.warning("%s of %s could not be checked against the Hub's hash: the cache holds "
                       "a plain copy and the Hub cannot be asked now.", filename, repo_id)
        return sha256
    # An LFS file's ETag is its sha256; a small file's is its git blob id.
    actual = sha256 if len(expected) == 64 else _git_blob_sha1(blob)
    if actual != expected:
        _remove_damaged(Path(path), blob)
        raise HashMismatchError(
            f"{filename} of the Hub repository {repo_id!r} in the cache ({blob}) is damaged or "
            f"incomplete: its hash is {actual}, the Hub's is {expected}. It was removed from "
            f"the cache; run again to download it afresh.")
    return sha256


def _is_etag(name: str) -> bool:
    return len(name) in (40, 64) and _HEX.fullmatch(name) is not None


def _published_etag(repo_id: str, filename: str, commit: str) -> str | None:
    # One HEAD request for the file's ETag at that commit; None offline or on failure
    # (the caller warns that the check was not made).
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    if hub_offline():
        return None
    url = hf_hub_url(repo_id, filename, revision=commit, endpoint=hub_endpoint())
    try:
        etag = get_hf_file_metadata(url).etag
    except (OSError, httpx2.HTTPError):
        return None
    return etag if etag and _is_etag(etag) else None


def _git_blob_sha1(path: Path) -> str:
    # git's object id of a file: sha1 over "blob <size>\0" and the bytes.
    hasher = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _remove_damaged(pointer: Path, blob: Path) -> None:
    # Both live in huggingface_hub's cache and the blob's name is the hash it fails, so
    # neither can ever be right; left in place, every later call would fail the same way.
    for path in (pointer, blob):
        path.unlink(missing_ok=True)


def _repo_folder(repo_id: str) -> str:
    # The cache's folder name for a model repository (huggingface_hub's repo_folder_name).
    return "models--" + repo_id.replace("/", "--")
