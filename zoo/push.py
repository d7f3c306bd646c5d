"""``zoo push``: an export to a Hugging Face Hub model repository.

What is pushed is an export folder as it is: timm's hub layout (``config.json`` with the
architecture, ``model.safetensors`` and the model card ``README.md``, which PyTorch users
load with ``timm.create_model``), else a SavedModel export version. The upload is
``huggingface_hub.HfApi.upload_folder``, one commit (a SavedModel's card, kept in
``assets/README.md``, follows in a second one as the repository's ``README.md``, which the
Hub shows); the token is huggingface_hub's (``HF_TOKEN``, else the one ``hf auth login``
stored).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zoo.weights.hub import hub_endpoint, hub_offline, parse_hf_uri

TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SKIPPED_DIRS = ("samples", "variables", "assets")
_SEARCH_DEPTH = 3


class PushError(ValueError):
    """``zoo push`` cannot start (no export, no token, offline) or the Hub refused it."""


@dataclass(frozen=True)
class Pushed:
    """What a push did.

    Attributes:
        folder: The local folder uploaded.
        kind: ``"timm"`` or ``"savedmodel"``.
        repo_id: ``owner/name``.
        revision: The branch pushed to (``"main"`` unless one was asked for).
        commit: The new commit on the Hub.
        url: The commit's address.
        files: The paths uploaded, relative to ``folder`` (and ``README.md``, the model
            card a SavedModel keeps in ``assets/``, which is also put at the top).
    """

    folder: Path
    kind: str
    repo_id: str
    revision: str
    commit: str
    url: str
    files: tuple[str, ...]


def export_kind(folder: Path) -> str | None:
    """``"timm"`` for timm's hub layout, ``"savedmodel"`` for a SavedModel, else None."""
    config = folder / "config.json"
    if config.is_file() and any((folder / name).is_file() for name in TIMM_WEIGHT_FILES):
        try:
            if "architecture" in json.loads(config.read_text(encoding="utf-8")):
                return "timm"
        except (ValueError, TypeError, UnicodeDecodeError):
            pass  # not timm's config.json; the folder may still be a SavedModel
    if (folder / "saved_model.pb").is_file():
        return "savedmodel"
    return None


def find_export(source: str | os.PathLike) -> tuple[Path, str]:
    """The export folder to push from ``source``, and its kind.

    ``source`` is an export folder itself (timm's layout or a SavedModel), an export
    directory (``OUT`` of ``zoo export --out OUT``: its newest version) or a run directory
    (the newest export inside it). Found up to three levels down; timm's layout is taken
    before a SavedModel, a newer version before an older one.

    Args:
        source: The folder given.

    Returns:
        ``(folder, kind)``.

    Raises:
        PushError: ``source`` is not a folder or holds no export, saying how to make one.
    """
    root = Path(source)
    if not root.is_dir():
        raise PushError(f"{source} is not a folder: give a run directory or an export "
                        "directory (zoo export ... --out DIR).")
    found = [(folder, kind) for folder in _folders(root, _SEARCH_DEPTH)
             if (kind := export_kind(folder))]
    if not found:
        raise PushError(
            f"{source} holds no export to push (timm's layout, config.json with "
            f"model.safetensors, or a SavedModel): make one with `zoo export RUN_DIR --out "
            f"{Path(source) / 'export'} --format timm` (or --format savedmodel) and push again.")
    return min(found, key=lambda item: (item[1] != "timm", -_version(item[0], root),
                                        len(item[0].parts)))


def _folders(root: Path, depth: int):
    yield root
    if depth == 0:
        return
    for child in sorted(root.iterdir()):
        # Hidden folders are staging (.zoo-export-*) or tools' own; the others hold no export.
        if child.is_dir() and not child.name.startswith(".") and child.name not in _SKIPPED_DIRS:
            yield from _folders(child, depth - 1)


def _version(folder: Path, root: Path) -> int:
    # The TF Serving version number in the path below root (an export's numbered folder).
    numbers = [int(part) for part in folder.relative_to(root).parts if part.isdigit()]
    return max(numbers, default=-1)


def push(source: str | os.PathLike, uri: str, *, revision: str | None = None,
         private: bool = False, message: str | None = None) -> Pushed:
    """Uploads a run's export to a Hub model repository, creating the repository if needed.

    Args:
        source: A run directory, an export directory or an export folder (see
            :func:`find_export`).
        uri: ``hf://owner/repo`` or ``hf://owner/repo@branch``.
        revision: The branch to push to (created from ``main`` if missing); the same as
            the URI's ``@branch``, which may be given instead.
        private: Create the repository as private (an existing one keeps its visibility).
        message: The commit message (default: says what was pushed, from where).

    Returns:
        What was pushed and the new commit.

    Raises:
        PushError: No export, no token, offline, two different revisions, or the Hub
            refused the upload (with its reason).
    """
    from huggingface_hub import HfApi, get_token

    repo_id, uri_revision = parse_hf_uri(uri)
    if revision and uri_revision and revision != uri_revision:
        raise PushError(f"Two revisions: {uri} names {uri_revision!r}, --revision names "
                        f"{revision!r}; give one.")
    branch = revision or uri_revision or "main"
    folder, kind = find_export(source)
    offline = hub_offline()
    if offline:
        raise PushError(f"Cannot push to {repo_id} while the Hub is turned off ({offline}).")
    token = get_token()
    if not token:
        raise PushError("zoo push needs a Hugging Face token with write access: set HF_TOKEN "
                        "or run `hf auth login`.")
    api = HfApi(endpoint=hub_endpoint(), token=token)
    message = message or f"zoo push: {kind} export {folder.name} ({_model_name(folder)})"
    with _hub_errors(repo_id, branch):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=branch,
                                 commit_message=message)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        card = folder / "assets" / "README.md"
        if "README.md" not in files and card.is_file():
            # A SavedModel keeps its card in assets/; the Hub shows the one at the top.
            info = api.upload_file(path_or_fileobj=str(card), path_in_repo="README.md",
                                   repo_id=repo_id, revision=branch,
                                   commit_message=f"{message}: the model card")
            files.append("README.md")
    return Pushed(folder, kind, repo_id, branch, info.oid, str(info.commit_url), tuple(files))


def _model_name(folder: Path) -> str:
    # timm's config names the architecture; a SavedModel's export report the zoo model.
    for name, key in (("config.json", "architecture"), ("export.json", "model")):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return "zoo model"


@contextmanager
def _hub_errors(repo_id: str, branch: str):
    # The Hub's refusals and connection failures become one-line PushErrors.
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = (" The token needs write access to it (HF_TOKEN, or `hf auth login`)."
                if status in (401, 403) else "")
        raise PushError(f"The Hub at {hub_endpoint()} refused the push to {repo_id} "
                        f"({branch}): HTTP {status}, {str(error).splitlines()[0]}.{hint}") \
            from error
    except (OSError, httpx2.TransportError) as error:
        raise PushError(f"Could not reach the Hub at {hub_endpoint()} to push to {repo_id}: "
                        f"{error}.") from error
