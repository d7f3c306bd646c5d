"""A small Hugging Face Hub stand-in for the tests, on 127.0.0.1 in a thread.

It serves what ``huggingface_hub.hf_hub_download`` and ``HfApi.create_repo`` /
``create_branch`` / ``upload_folder`` call (huggingface_hub 2.x), with the headers the
client reads:

* ``HEAD``/``GET /<owner>/<name>/resolve/<revision>/<file>``: ``X-Repo-Commit`` always;
  small files answer 200 with ``ETag`` = their git blob sha1; LFS files (weights) answer 302
  with ``X-Linked-Etag`` = their sha256, ``X-Linked-Size`` and a ``Location`` on a second
  server, the "CDN" (another origin, so the client does not follow it on ``HEAD``, as with
  the real Hub's CDN). Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``, ``GatedRepo``), which the client turns into its exception classes;
  a private or gated repo is read only with the token.
* the CDN serves blobs with ``Range`` support, and can cut transfers halfway
  (``cut_transfers``) and then answer the client's next attempt normally, with flipped
  bytes or with a server error (``after_cut``).
* ``POST /api/repos/create``, ``/api/validate-yaml`` (a README's YAML header must parse),
  ``/api/models/<repo>/branch/<branch>``,
  ``/api/models/<repo>/preupload/<revision>`` (every file "regular": its bytes travel in the
  commit, so no LFS or Xet upload is needed) and ``/api/models/<repo>/commit/<revision>``
  (the ndjson commit), all requiring ``Authorization: Bearer <token>``.

Every request is recorded in ``requests`` so a test can assert the stand-in was the one
called; :func:`point_huggingface_hub_at` points zoo and huggingface_hub at it.

Example:
    >>> with HubStandIn() as hub:
    ...     point_huggingface_hub_at(hub, tmp_path / "hf", monkeypatch)
    ...     hub.add_repo("timm/resnet18.test", {"config.json": ..., "model.safetensors": ...})
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".h5", ".keras", ".onnx", ".tflite", ".pb")
TOKEN = "hf_standin_token"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES) or "/variables.data-" in f"/{path}"


@dataclass
class Commit:
    sha: str
    message: str
    files: dict[str, bytes]
    parent: str | None = None


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    private: bool = False
    gated: bool = False

    def find(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)


class HubStandIn:
    """The stand-in: ``with HubStandIn() as hub: hub.endpoint``; repos are kept in memory."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.cut_transfers = 0
        # What the transfers after a cut get: the file ("resume"), its bytes flipped
        # ("corrupt", same size) or a server error ("fail").
        self.after_cut = "resume"
        self.was_cut = False
        # stall: a cut transfer waits, half sent, until release is set (stalled says so).
        self.stall = False
        self.stalled, self.release = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
                         for role in ("hub", "cdn")]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_port}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_port}"

    def __enter__(self) -> HubStandIn:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, message: str = "initial",
                 branch: str = "main", tag: str | None = None) -> str:
        """Creates (or extends) a repo with one commit on ``branch``; returns the commit."""
        repo = self.repos.setdefault(repo_id, Repo())
        parent = repo.branches.get(branch)
        base = dict(repo.commits[parent].files) if parent else {}
        sha = self._commit(repo, {**base, **files}, message, parent)
        repo.branches[branch] = sha
        if tag:
            repo.tags[tag] = sha
        return sha

    def files_at(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].find(revision).files)

    def message_at(self, repo_id: str, revision: str = "main") -> str:
        return self.repos[repo_id].find(revision).message

    def _commit(self, repo: Repo, files: dict[str, bytes], message: str,
                parent: str | None) -> str:
        digest = hashlib.sha1(json.dumps([parent, message, sorted(
            (p, git_blob_sha1(b)) for p, b in files.items())]).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = Commit(sha, message, files, parent)
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return sha


def _handler(hub: HubStandIn, role: str):
    class Handler(_Handler):
        pass

    Handler.hub, Handler.role = hub, role
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubStandIn
    role: str

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    # --- plumbing -----------------------------------------------------------------------
    def _record(self) -> list[str]:
        with self.hub._lock:
            self.hub.requests.append((self.command, f"{self.role}:{self.path}"))
        return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": code}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": code}).encode(), headers)

    def _json(self, data: dict, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # --- reads --------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = self._record()
        if self.role == "cdn":
            return self._blob(parts[-1])
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "NotFound")
        repo_id, revision, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.hub.repos.get(repo_id)
        authorised = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        if repo is None or (repo.private and not authorised):
            return self._error(401, "RepoNotFound")  # as the Hub: private looks missing
        if repo.gated and not authorised:
            return self._error(403, "GatedRepo")
        commit = repo.find(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound")
        if path not in commit.files:
            return self._error(404, "EntryNotFound", commit.sha)
        data = commit.files[path]
        if is_lfs(path):
            sha256 = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            for key, value in {"X-Repo-Commit": commit.sha, "X-Linked-Etag": f'"{sha256}"',
                               "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_sha1(data)}"',
                               "Location": f"{self.hub.cdn}/blobs/{sha256}",
                               "Content-Length": "0"}.items():
                self.send_header(key, value)
            return self.end_headers()
        self._send(200, data, {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"'})

    def _blob(self, sha256: str) -> None:
        data = self.hub.blobs.get(sha256)
        if data is None:
            return self._send(404)
        if self.command == "GET" and self.hub.cut_transfers > 0:
            self.hub.cut_transfers -= 1
            self.hub.was_cut = True
            return self._cut(data, stall=self.hub.stall)
        if self.command == "GET" and self.hub.was_cut and self.hub.after_cut == "fail":
            return self._error(500, "InternalError")
        if self.command == "GET" and self.hub.was_cut and self.hub.after_cut == "corrupt":
            data = bytes(b ^ 0xFF for b in data)
        start = int((self.headers.get("Range") or "bytes=0-").removeprefix("bytes=").split("-")[0])
        if start:
            return self._send(206, data[start:], {
                "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        self._send(200, data, {"ETag": f'"{sha256}"'})

    def _cut(self, data: bytes, stall: bool = False) -> None:
        # Promise the whole file, send half, hang up: a connection lost mid-transfer. With
        # stall, the hang-up waits for the test (which kills the client meanwhile).
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if stall:
            self.hub.stalled.set()
            self.hub.release.wait(60)
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client is gone already (killed, stalled)
            self.connection.shutdown(socket.SHUT_RDWR)

    # --- writes -------------------------------------------------------------------------
    def do_POST(self) -> None:
        parts = self._record()
        body = self._body()
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(401, "Invalid credentials in Authorization header")
        if parts[:3] == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if parts[:2] == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body)["content"])
        if len(parts) < 6 or parts[:2] != ["api", "models"]:
            return self._error(404, "NotFound")
        repo_id, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound")
        if action == "branch":
            return self._create_branch(repo, revision)
        if repo.find(revision) is None:
            return self._error(404, "RevisionNotFound")
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular",
                                          "shouldIgnore": False, "oid": None} for f in files]})
        if action == "commit":
            return self._commit(repo_id, repo, revision, body)
        self._error(404, "NotFound")

    def _create_repo(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.hub.repos:
            return self._json({"error": "You already created this model repo",
                               "url": f"{self.hub.endpoint}/{repo_id}"}, status=409)
        self.hub.add_repo(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})
        self.hub.repos[repo_id].private = payload.get("visibility") == "private"
        self._json({"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, card: str) -> None:
        # The Hub checks a README's YAML header before a commit; so does the stand-in.
        if card.startswith("---"):
            header = card.split("---", 2)[1]
            try:
                if not isinstance(yaml.safe_load(header) or {}, dict):
                    raise yaml.YAMLError("the header is not a mapping")
            except yaml.YAMLError as error:
                return self._json({"errors": [{"message": str(error)}]}, status=400)
        self._json({"warnings": []})

    def _create_branch(self, repo: Repo, branch: str) -> None:
        if branch in repo.branches:
            return self._json({"error": "Reference already exists"}, status=409)
        repo.branches[branch] = repo.branches["main"]
        self._json({})

    def _commit(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        added = {line["value"]["path"]: base64.b64decode(line["value"]["content"])
                 for line in lines if line["key"] == "file"}
        sha = self.hub.add_repo(repo_id, added, message=header["summary"], branch=revision)
        self._json({"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{sha}",
                    "commitOid": sha, "pullRequestUrl": None})


def point_huggingface_hub_at(server: HubStandIn, home: os.PathLike, monkeypatch) -> None:
    """Points zoo and huggingface_hub at the stand-in and ``home``; refuses other hosts.

    ``HF_ENDPOINT`` and ``HF_HOME`` are set (zoo reads them at call time); the Hub-related
    variables of the machine are cleared; huggingface_hub's import-time copies of them
    (endpoint, offline switch, token file) are patched so that its side calls (telemetry,
    the token file) neither leave the machine nor read a real login. Any connection to a
    host other than the loopback fails the test.
    """
    import huggingface_hub.constants as hf_constants

    _loopback_only(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "ZOO_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", os.path.join(home, "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH",
                        os.path.join(home, "stored_tokens"))


def _loopback_only(monkeypatch) -> None:
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def refuse(host):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test tried to reach {host}")

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address[0])
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
