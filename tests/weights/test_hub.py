"""The Hugging Face Hub side: hf:// URIs, download through huggingface_hub's cache, checks
against the Hub's hashes, offline use, failures and interrupted transfers, and ``zoo push``.

The only Hub is tests/hub_server.py on 127.0.0.1; every other connection is refused."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from zoo.weights import HashMismatchError, WeightsUnavailableError, hub
from zoo.weights.hub import HubNotFoundError, fetch_hub_folder, parse_hf_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_server import TOKEN, HubStandIn, point_huggingface_hub_at  # noqa: E402

CONFIG = b'{"architecture": "resnet18", "num_classes": 3}'
WEIGHTS = os.urandom(1_500_000)


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The stand-in, with HF_ENDPOINT and HF_HOME pointing at it and at a temp folder."""
    with HubStandIn() as server:
        point_huggingface_hub_at(server, tmp_path / "hf", monkeypatch)
        yield server


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_files(tmp_path) -> list[str]:
    root = tmp_path / "hf" / "hub"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and ".locks" not in p.parts)


# --- hf:// URIs --------------------------------------------------------------------------

@pytest.mark.parametrize("uri, expected", [
    ("hf://timm/resnet50.a1_in1k", ("timm/resnet50.a1_in1k", None)),
    ("hf://timm/resnet50.a1_in1k@main", ("timm/resnet50.a1_in1k", "main")),
    ("hf://me/my-model@refs/pr/3", ("me/my-model", "refs/pr/3")),
    ("hf://me/m@" + "a" * 40, ("me/m", "a" * 40)),
])
def test_parse_hf_uri(uri, expected):
    assert parse_hf_uri(uri) == expected


@pytest.mark.parametrize("uri, words", [
    ("timm/resnet50", "is not a Hub URI"),
    ("https://huggingface.co/timm/resnet50", "is not a Hub URI"),
    ("hf://resnet50", "owner/name"),
    ("hf://a/b/c", "owner/name"),
    ("hf://timm/", "owner/name"),
    ("hf://timm/resnet50@", "no revision"),
    ("hf://timm/res net", "not a valid Hub repository name"),
    ("hf://timm/a--b", "not a valid Hub repository name"),
])
def test_parse_hf_uri_refuses_others_naming_the_form(uri, words):
    with pytest.raises(ValueError, match=words) as error:
        parse_hf_uri(uri)
    assert "hf://timm/resnet50.a1_in1k" in str(error.value)  # the form to write


# --- download ----------------------------------------------------------------------------

def test_fetch_returns_verified_files_and_their_commit(standin, tmp_path):
    commit = standin.add_repo("timm/resnet18.test", {"config.json": CONFIG,
                                                     "model.safetensors": WEIGHTS,
                                                     "pytorch_model.bin": b"not wanted"})
    files = fetch_hub_folder("timm/resnet18.test")
    assert files.commit == commit and files.revision is None
    assert files.files == {"config.json": _sha256(CONFIG), "model.safetensors": _sha256(WEIGHTS)}
    assert files.weights_file == "model.safetensors"
    assert files.uri == f"hf://timm/resnet18.test@{commit}"
    assert (files.folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (files.folder / "config.json").read_bytes() == CONFIG
    assert files.folder.is_relative_to(tmp_path / "hf" / "hub")  # HF_HOME, read at call time
    assert not (files.folder / "pytorch_model.bin").exists()  # safetensors preferred
    assert any(path.startswith("cdn:/blobs/") for _, path in standin.requests)


def test_fetch_of_other_files_names_them(standin):
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    only_config = fetch_hub_folder("me/m", filenames=("config.json",))
    assert list(only_config.files) == ["config.json"] and only_config.weights_file is None


def test_fetch_takes_pytorch_model_bin_when_there_is_no_safetensors(standin):
    standin.add_repo("timm/old", {"config.json": CONFIG, "pytorch_model.bin": WEIGHTS})
    files = fetch_hub_folder("timm/old")
    assert files.files["pytorch_model.bin"] == _sha256(WEIGHTS)
    assert files.weights_file == "pytorch_model.bin"


def test_a_revision_pin_gets_that_commit_and_all_files_from_one_commit(standin):
    old = standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS},
                           tag="v1")
    newer = os.urandom(1000)
    new = standin.add_repo("me/m", {"model.safetensors": newer})
    assert fetch_hub_folder("me/m", "v1").commit == old
    pinned = fetch_hub_folder("me/m", old)
    assert pinned.files["model.safetensors"] == _sha256(WEIGHTS) and pinned.revision == old
    latest = fetch_hub_folder("me/m")
    assert latest.commit == new and latest.files["model.safetensors"] == _sha256(newer)
    # The weight file is asked for at the commit config.json resolved to, not at "main".
    assert ("HEAD", f"hub:/me/m/resolve/{new}/model.safetensors") in standin.requests


def test_a_second_fetch_uses_the_cache_and_checks_it_again(standin, tmp_path):
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    first = fetch_hub_folder("me/m")
    blob = Path(os.path.realpath(first.folder / "model.safetensors"))
    standin.requests.clear()
    assert fetch_hub_folder("me/m") == first
    assert not any(path.startswith("cdn:") for _, path in standin.requests)
    # A cached file damaged since (same size, one byte changed) is refused and removed.
    damaged = bytearray(WEIGHTS)
    damaged[1000] ^= 1
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(damaged))
    with pytest.raises(HashMismatchError, match="model.safetensors of the Hub repository "
                                                "'me/m'.*damaged.*removed") as error:
        fetch_hub_folder("me/m")
    assert _sha256(WEIGHTS) in str(error.value)
    assert not blob.exists() and not (first.folder / "model.safetensors").exists()
    assert fetch_hub_folder("me/m").files == first.files  # downloaded afresh


# --- offline and failures ----------------------------------------------------------------

@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "ZOO_OFFLINE"])
def test_offline_with_nothing_cached_names_repo_file_revision_and_what_to_do(
        standin, monkeypatch, tmp_path, variable):
    standin.add_repo("timm/resnet18.test", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    monkeypatch.setenv(variable, "1")
    with pytest.raises(WeightsUnavailableError) as error:
        fetch_hub_folder("timm/resnet18.test", "v2")
    message = str(error.value)
    for words in ("config.json", "'timm/resnet18.test'", "revision 'v2'", f"{variable}=1",
                  f"{standin.endpoint}/timm/resnet18.test/resolve/v2/config.json",
                  str(tmp_path / "hf" / "hub" / "models--timm--resnet18.test"),
                  'weights="path/to/folder"', "model.safetensors or pytorch_model.bin"):
        assert words in message
    assert standin.requests == []  # offline means no request at all


def test_offline_after_a_download_uses_the_cache(standin, monkeypatch):
    standin.add_repo("me/m", {"config.json": CONFIG, "pytorch_model.bin": WEIGHTS})
    online = fetch_hub_folder("me/m")
    standin.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_hub_folder("me/m") == online
    assert fetch_hub_folder("me/m", online.commit).files == online.files
    assert standin.requests == []


def test_no_network_names_the_hub_it_could_not_reach(standin, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    # huggingface_hub retries a refused connection five times over about 20 s before giving
    # up; the waits are skipped here, the retries are not.
    import huggingface_hub.utils._http as hf_http

    waits = []
    monkeypatch.setattr(hf_http.time, "sleep", waits.append)
    with pytest.raises(WeightsUnavailableError, match="could not be reached") as error:
        fetch_hub_folder("timm/resnet18.test")
    message = str(error.value)
    assert dead in message and "weights=" in message and "config.json" in message
    assert "Connection refused" in message
    assert len(waits) == 5


def test_missing_repo_revision_and_files_are_named(standin):
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    standin.add_repo("me/no-weights", {"config.json": CONFIG, "README.md": b"# hi"})
    standin.add_repo("me/no-config", {"model.safetensors": WEIGHTS})
    with pytest.raises(HubNotFoundError, match="no model repository 'me/other'.*HF_TOKEN"):
        fetch_hub_folder("me/other")
    with pytest.raises(HubNotFoundError, match="'me/m' has no revision 'v9'"):
        fetch_hub_folder("me/m", "v9")
    with pytest.raises(HubNotFoundError, match="'me/no-config'.*has no file config.json"):
        fetch_hub_folder("me/no-config")
    with pytest.raises(HubNotFoundError, match="'me/no-weights'.*none of model.safetensors, "
                                               "pytorch_model.bin"):
        fetch_hub_folder("me/no-weights")


def test_private_and_gated_repos_need_the_token(standin, monkeypatch):
    standin.add_repo("me/private", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    standin.add_repo("org/gated", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    standin.repos["me/private"].private = True
    standin.repos["org/gated"].gated = True
    with pytest.raises(HubNotFoundError, match="no model repository 'me/private'.*private "
                                               "repository needs a token"):
        fetch_hub_folder("me/private")
    with pytest.raises(HubNotFoundError, match="'org/gated' is gated: accept its terms at "
                                               f"{standin.endpoint}/org/gated.*HF_TOKEN"):
        fetch_hub_folder("org/gated")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert fetch_hub_folder("me/private").files["model.safetensors"] == _sha256(WEIGHTS)
    assert fetch_hub_folder("org/gated").files["model.safetensors"] == _sha256(WEIGHTS)


# --- interrupted transfers ---------------------------------------------------------------

def test_a_cut_transfer_is_resumed_and_the_file_verified(standin):
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    standin.cut_transfers = 1
    files = fetch_hub_folder("me/m")
    assert standin.was_cut and files.files["model.safetensors"] == _sha256(WEIGHTS)
    assert (files.folder / "model.safetensors").read_bytes() == WEIGHTS


def test_a_cut_transfer_completed_with_wrong_bytes_is_never_used(standin, tmp_path):
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    standin.cut_transfers, standin.after_cut = 1, "corrupt"
    with pytest.raises(HashMismatchError, match=_sha256(WEIGHTS)):
        fetch_hub_folder("me/m")
    left = _cache_files(tmp_path)
    assert not any("model.safetensors" in p or _sha256(WEIGHTS) in p for p in left), left
    assert not any(p.endswith(".incomplete") for p in left), left
    standin.after_cut = "resume"
    assert fetch_hub_folder("me/m").files["model.safetensors"] == _sha256(WEIGHTS)


def test_a_transfer_that_fails_midway_leaves_nothing(standin, tmp_path):
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    standin.cut_transfers, standin.after_cut = 1, "fail"
    with pytest.raises(WeightsUnavailableError, match="model.safetensors.*'me/m'.*the download "
                                                      "failed.*nothing was kept") as error:
        fetch_hub_folder("me/m")
    assert "500" in str(error.value)
    left = _cache_files(tmp_path)
    assert not any("model.safetensors" in p or _sha256(WEIGHTS) in p or
                   p.endswith(".incomplete") for p in left), left


def test_settings_are_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "a"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    assert hub.hub_cache_dir() == tmp_path / "a" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "b"))
    assert hub.hub_cache_dir() == tmp_path / "b"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example/")
    assert hub.hub_endpoint() == "http://mirror.example"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert hub.hub_offline() is None
    monkeypatch.setenv("ZOO_OFFLINE", "y")  # zoo's rule for its own variable
    assert hub.hub_offline() == "ZOO_OFFLINE=y"
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    assert hub.hub_offline() == "HF_HUB_OFFLINE=yes"


def test_the_standin_requires_a_token_for_writes(standin):
    import huggingface_hub

    api = huggingface_hub.HfApi(endpoint=standin.endpoint)
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError):
        api.create_repo("me/new", token="wrong")
    assert api.create_repo("me/new", token=TOKEN).endswith("me/new")


# --- zoo push ----------------------------------------------------------------------------

CARD = "---\nlibrary_name: timm\ntags: [image-classification, zoo]\n---\n# a fine-tune\n"


def _timm_export(folder: Path, weights: bytes = WEIGHTS) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text(CARD)
    return folder


def _savedmodel_export(folder: Path, model: str = "resnet18") -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "assets" / "README.md").write_text(f"# {model}, version {folder.name}\n")
    (folder / "saved_model.pb").write_bytes(b"graph " + folder.name.encode())
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(5000))
    (folder / "export.json").write_text(f'{{"model": "{model}"}}')
    return folder


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def test_push_uploads_a_runs_timm_export_with_its_commit_message(standin, tmp_path, token):
    from zoo.push import push

    run = tmp_path / "runs" / "pets"
    (run / "samples").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    _savedmodel_export(run / "export" / "1")
    folder = _timm_export(run / "export" / "1" / "timm")
    pushed = push(run, "hf://me/pets", private=True, message="pets, 3 classes")
    assert (pushed.folder, pushed.kind, pushed.revision) == (folder, "timm", "main")
    assert standin.files_at("me/pets")["model.safetensors"] == WEIGHTS
    assert standin.files_at("me/pets")["README.md"].decode() == CARD
    assert standin.message_at("me/pets") == "pets, 3 classes"
    assert pushed.commit == standin.repos["me/pets"].branches["main"]
    assert standin.repos["me/pets"].private
    assert "saved_model.pb" not in standin.files_at("me/pets")
    # What was pushed is what hf:// fetches back.
    fetched = fetch_hub_folder("me/pets")
    assert fetched.commit == pushed.commit
    assert fetched.files["model.safetensors"] == _sha256(WEIGHTS)


def test_push_to_a_branch_leaves_main_alone(standin, tmp_path, token):
    from zoo.push import PushError, push

    first = _timm_export(tmp_path / "a")
    push(first, "hf://me/m")
    newer = os.urandom(2000)
    second = _timm_export(tmp_path / "b", newer)
    pushed = push(second, "hf://me/m@experiment")
    assert pushed.revision == "experiment"
    assert standin.files_at("me/m", "experiment")["model.safetensors"] == newer
    assert standin.files_at("me/m")["model.safetensors"] == WEIGHTS
    assert push(second, "hf://me/m", revision="experiment").revision == "experiment"
    with pytest.raises(PushError, match="Two revisions"):
        push(second, "hf://me/m@v1", revision="v2")


def test_push_takes_the_newest_savedmodel_when_there_is_no_timm_export(standin, tmp_path,
                                                                       token):
    from zoo.push import push

    exports = tmp_path / "exports" / "pets"
    _savedmodel_export(exports / "1")
    newest = _savedmodel_export(exports / "2")
    (exports / ".zoo-export-3-p1-abcdefgh").mkdir()  # a killed export's staging
    pushed = push(exports, "hf://me/served")
    assert (pushed.folder, pushed.kind) == (newest, "savedmodel")
    files = standin.files_at("me/served")
    assert files["saved_model.pb"] == b"graph 2"
    assert "variables/variables.data-00000-of-00001" in files
    assert files["README.md"] == files["assets/README.md"] == b"# resnet18, version 2\n"
    assert "README.md" in pushed.files and pushed.commit == standin.repos["me/served"].branches[
        "main"]
    assert standin.message_at("me/served") == ("zoo push: savedmodel export 2 (resnet18): the "
                                               "model card")
    head = standin.repos["me/served"].commits[pushed.commit]
    first = standin.message_at("me/served", head.parent)
    assert first == "zoo push: savedmodel export 2 (resnet18)"


def test_push_without_an_export_or_a_token_says_what_to_do(standin, tmp_path, monkeypatch):
    from zoo.push import PushError, push

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(PushError, match=r"holds no export to push.*zoo export RUN_DIR --out "
                                        r".*--format timm"):
        push(run, "hf://me/m")
    with pytest.raises(PushError, match="is not a folder"):
        push(tmp_path / "nothing", "hf://me/m")
    monkeypatch.delenv("HF_TOKEN")
    folder = _timm_export(tmp_path / "timm")
    with pytest.raises(PushError, match="needs a Hugging Face token.*HF_TOKEN.*hf auth login"):
        push(folder, "hf://me/m")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PushError, match=r"turned off \(HF_HUB_OFFLINE=1\)"):
        push(folder, "hf://me/m")
    assert standin.requests == []


def test_push_with_a_refused_token_names_the_status(standin, tmp_path, monkeypatch):
    from zoo.push import PushError, push

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(PushError, match="refused the push to me/m.*HTTP 401.*write access"):
        push(_timm_export(tmp_path / "timm"), "hf://me/m")


def test_offline_set_when_huggingface_hub_was_imported_is_named(standin, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE was set when "
                                                      "huggingface_hub was imported"):
        fetch_hub_folder("me/m")
    assert standin.requests == []


def test_zoo_push_command(standin, tmp_path, monkeypatch, capsys):
    from zoo import cli

    folder = _timm_export(tmp_path / "export" / "1" / "timm")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert cli.main(["push", str(tmp_path / "export"), "hf://me/cli"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("zoo push: zoo push needs a Hugging Face token") and "\n" not in error
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli.main(["push", str(tmp_path / "export"), "hf://me/cli", "--revision", "v1",
                     "--private", "--message", "from the command line"]) == 0
    out = capsys.readouterr().out
    commit = standin.repos["me/cli"].branches["v1"]
    assert f"pushed timm export {folder} (3 files) to me/cli@v1, commit {commit}" in out
    assert standin.message_at("me/cli", "v1") == "from the command line"
    assert standin.repos["me/cli"].private
    assert cli.main(["push", str(tmp_path / "nothing"), "hf://me/cli"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_download_killed_midway_leaves_no_trusted_file(standin, tmp_path):
    import signal
    import subprocess

    # Past huggingface_hub's 10 MB write chunk, so that the kill leaves bytes on disk.
    big = os.urandom(24_000_000)
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": big})
    standin.cut_transfers, standin.stall = 1, True
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": standin.endpoint, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", "from zoo.weights.hub import fetch_hub_folder as f; "
                               "f('me/m')"], env=env)
    blobs = tmp_path / "hf" / "hub" / "models--me--m" / "blobs"
    try:
        assert standin.stalled.wait(60), "the download never started"
        partial = []
        for _ in range(600):  # until the client has written its first chunk
            partial = [p for p in blobs.glob("*.incomplete") if p.stat().st_size]
            if partial:
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # part of the file written, no chance to clean up
        child.wait(30)
    finally:
        child.kill()
        standin.release.set()
    partial = list(blobs.glob("*.incomplete"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(big)  # the kill's leftover
    assert not (blobs / _sha256(big)).exists()  # never under the trusted name
    assert not list((tmp_path / "hf" / "hub" / "models--me--m" / "snapshots").glob(
        "*/model.safetensors"))
    files = fetch_hub_folder("me/m")
    assert files.files["model.safetensors"] == _sha256(big)
    assert (files.folder / "model.safetensors").read_bytes() == big


def test_a_cache_without_symlinks_is_checked_against_the_hub(standin, monkeypatch, caplog):
    import huggingface_hub.file_download as hf_download

    # As on file systems without symlinks: the snapshot holds plain copies, not hash names.
    monkeypatch.setattr(hf_download, "are_symlinks_supported", lambda *args: False)
    standin.add_repo("me/m", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    files = fetch_hub_folder("me/m")
    copy = files.folder / "model.safetensors"
    assert not copy.is_symlink() and files.files["model.safetensors"] == _sha256(WEIGHTS)
    copy.write_bytes(WEIGHTS[:-1] + bytes([WEIGHTS[-1] ^ 1]))
    with pytest.raises(HashMismatchError, match=_sha256(WEIGHTS)):
        fetch_hub_folder("me/m")  # the Hub's ETag, asked by HEAD, catches the change
    assert not copy.exists()
    files = fetch_hub_folder("me/m")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level("WARNING", logger="zoo.weights"):
        assert fetch_hub_folder("me/m").files == files.files
    assert "could not be checked against the Hub's hash" in caplog.text
