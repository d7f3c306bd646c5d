"""Download and cache: hash checks (md5 and sha256 prefixes), atomic writes, interrupted
downloads, cache hits, offline errors, manifests and filling a cache from a copy, and the
``zoo pull`` command. The only server is an http.server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from twin_files import pixels, save_state_dict, torchvision_logits, torchvision_model

import zoo
from zoo import cli, models
from zoo.models import get_spec
from zoo.weights import (
    HashMismatchError,
    WeightsUnavailableError,
    download,
    fetch,
)

PAYLOAD = os.urandom(300_000)


class _Server:
    """Serves files from a dict; can cut a response short or send other bytes."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.truncate: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in server.truncate:
                    # Half the bytes, then the connection drops: an interrupted download.
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return tmp_path / "zoo_home"


def _entry(server, data: bytes = PAYLOAD, *, algorithm: str = "sha256", name="blob",
           prefix: bool = True):
    digest = hashlib.new(algorithm, data).hexdigest()
    short = digest[:10] if prefix and algorithm == "sha256" else digest
    file_name = f"{name}-{short}.pth"
    server.files[f"/models/{file_name}"] = data
    base = get_spec("resnet18").weights["torchvision_v1"]
    return replace(base, tag="test" if name == "blob" else name,
                   url=server.url(f"/models/{file_name}"), file_name=file_name, hash=short,
                   hash_algorithm=algorithm)


def _leftovers(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".part")] \
        if os.path.isdir(directory) else []


@pytest.mark.parametrize(("algorithm", "prefix"), [("sha256", True), ("sha256", False),
                                                   ("md5", False)])
def test_download_verifies_and_caches(server, home, algorithm, prefix):
    entry = _entry(server, algorithm=algorithm, prefix=prefix)
    path = fetch(entry, progress=False)
    assert path == os.path.join(home, "weights", entry.file_name)
    assert Path(path).read_bytes() == PAYLOAD
    assert _leftovers(os.path.dirname(path)) == []
    # A cache hit: verified again, not downloaded again.
    assert fetch(entry, progress=False) == path
    assert len(server.requests) == 1


def test_hash_mismatch_keeps_nothing(server, home):
    entry = _entry(server)
    server.files[entry.url.split(str(server.httpd.server_port))[1]] = b"another file" * 1000
    with pytest.raises(HashMismatchError, match="not the publisher's"):
        fetch(entry, progress=False)
    assert not os.path.exists(download.cache_path(entry))
    assert _leftovers(os.path.dirname(download.cache_path(entry))) == []


def test_interrupted_download_leaves_no_file_and_retries(server, home):
    entry = _entry(server)
    path_on_server = entry.url.split(str(server.httpd.server_port))[1]
    server.truncate.add(path_on_server)
    with pytest.raises(WeightsUnavailableError, match="downloading failed"):
        fetch(entry, progress=False)
    directory = os.path.dirname(download.cache_path(entry))
    assert not os.path.exists(download.cache_path(entry)) and _leftovers(directory) == []
    server.truncate.clear()
    assert Path(fetch(entry, progress=False)).read_bytes() == PAYLOAD


def test_interrupt_by_the_user_leaves_no_file(server, home, monkeypatch):
    entry = _entry(server)

    class Interrupting:
        def update(self, received):
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "_progress_bar", lambda total: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        fetch(entry, progress=True)
    directory = os.path.dirname(download.cache_path(entry))
    assert not os.path.exists(download.cache_path(entry)) and _leftovers(directory) == []


def test_partial_file_at_the_final_name_is_never_trusted(server, home, caplog):
    # What keras.utils.get_file leaves when its process is killed mid-download.
    entry = _entry(server)
    target = download.cache_path(entry)
    os.makedirs(os.path.dirname(target))
    with open(target, "wb") as f:
        f.write(PAYLOAD[:1000])
    assert Path(fetch(entry, progress=False)).read_bytes() == PAYLOAD
    assert "Ignoring" in caplog.text and len(server.requests) == 1


def test_keras_and_torch_hub_caches_are_reused(server, home, tmp_path):
    entry = _entry(server)
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / entry.file_name).write_bytes(PAYLOAD)
    assert fetch(entry, progress=False) == str(hub / entry.file_name)
    assert server.requests == []


def _assert_actionable(message: str, entry) -> None:
    for text in (entry.url, entry.file_name, entry.hash, download.cache_path(entry)):
        assert text in message


def test_offline_error_says_where_to_put_the_file(server, home, monkeypatch):
    entry = _entry(server)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="offline") as error:
        fetch(entry, progress=False)
    _assert_actionable(str(error.value), entry)
    assert server.requests == []
    # The real catalog, through build(): the same kind of message.
    with pytest.raises(WeightsUnavailableError) as error:
        zoo.build("resnet50", weights="imagenet")
    _assert_actionable(str(error.value), get_spec("resnet50").weights["torchvision_v2"])


def test_no_network_error_says_where_to_put_the_file(server, home):
    entry = _entry(server)
    entry = replace(entry, url=f"http://127.0.0.1:{_closed_port()}/models/{entry.file_name}")
    with pytest.raises(WeightsUnavailableError, match="downloading failed") as error:
        fetch(entry, progress=False)
    _assert_actionable(str(error.value), entry)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_build_downloads_verifies_caches_and_works_offline(server, home, monkeypatch):
    """A real weight file through the whole path: URL, hash, cache, load, parity."""
    reference = torchvision_model("resnet18")
    path = save_state_dict(reference, home.parent / "resnet18.pth", "zip")
    data = Path(path).read_bytes()
    entry = _entry(server, data, name="resnet18")
    monkeypatch.setitem(get_spec("resnet18").weights, "test", entry)
    shape = (32, 32, 3)
    x = pixels(shape)
    expected = torchvision_logits(reference, x)
    for offline in (False, True):
        if offline:
            monkeypatch.setenv("ZOO_OFFLINE", "1")
        model = zoo.build("resnet18", weights="test", input_shape=shape,
                          classifier_activation=None)
        np.testing.assert_allclose(np.asarray(model(x)), expected,
                                   atol=1e-4 * np.abs(expected).max())
    assert len(server.requests) == 1


def test_keras_entry_without_top_fetches_the_notop_file(server, home, monkeypatch):
    from twin_files import keras_application, save_keras_legacy_h5

    shape = (32, 32, 3)
    reference, _ = keras_application("ResNet50", include_top=False, input_shape=shape)
    path = save_keras_legacy_h5(reference, home.parent / "notop.h5")
    notop = replace(_entry(server, Path(path).read_bytes(), algorithm="md5", name="notop"),
                    model="resnet50_v1", tag="keras_notop", include_top=False, num_classes=None,
                    source="keras_h5", preprocessing="caffe")
    top = replace(_entry(server, b"the top file is never downloaded", algorithm="md5",
                         name="top"), model="resnet50_v1", tag="keras", source="keras_h5",
                  preprocessing="caffe", notop=notop)
    monkeypatch.setitem(get_spec("resnet50_v1").weights, "test", top)
    model = zoo.build("resnet50_v1", weights="test", include_top=False, input_shape=shape)
    assert server.requests == [f"/models/{notop.file_name}"]
    assert model.get_layer("normalize").channel_order == "bgr"


def test_manifest_and_filling_a_cache_from_a_copy(server, home, tmp_path, monkeypatch):
    good = _entry(server, name="good")
    bad = _entry(server, PAYLOAD[::-1], name="bad")
    missing = _entry(server, b"x" * 100, name="missing")
    monkeypatch.setattr(models, "catalog", lambda: [good, bad, missing])

    manifest_path = tmp_path / "manifest.json"
    assert cli.main(["pull", "--manifest", str(manifest_path)]) == 0
    manifest = json.loads(manifest_path.read_text())
    assert [f["file_name"] for f in manifest["files"]] == [good.file_name, bad.file_name,
                                                          missing.file_name]
    assert manifest["files"][0]["hash"] == good.hash
    assert manifest["files"][0]["url"] == good.url
    assert not any(f["present"] for f in manifest["files"])

    copy = tmp_path / "usb"
    copy.mkdir()
    (copy / good.file_name).write_bytes(PAYLOAD)
    (copy / bad.file_name).write_bytes(b"damaged")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert cli.main(["pull", "--from", str(copy)]) == 1
    assert Path(download.cache_path(good)).read_bytes() == PAYLOAD
    assert not os.path.exists(download.cache_path(bad))
    assert server.requests == []


def test_zoo_pull_prefetches(server, home, monkeypatch, capsys):
    entry = _entry(server)
    monkeypatch.setattr(models, "catalog", lambda: [entry])
    assert cli.main(["pull", "resnet18", "test"]) == 0
    assert download.cache_path(entry) in capsys.readouterr().out
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(models, "catalog", lambda: [_entry(server, b"other", name="other")])
    assert cli.main(["pull", "resnet18", "other"]) == 2
    assert "put it at" in capsys.readouterr().err


def test_hash_prefix_rules():
    digest = hashlib.sha256(b"x").hexdigest()
    assert download.hash_matches(digest, digest[:8])
    assert download.hash_matches(digest, digest.upper())
    assert not download.hash_matches(digest, digest[:7])  # torch.hub wants 8 or more
    assert not download.hash_matches(digest, "0" * 8)
