"""A stand-in for the Hugging Face Hub on loopback: just the HTTP API huggingface_hub (2.x) uses
to download (``hf_hub_download``, ``snapshot_download``, ``HfApi.model_info``), serving files
held in memory. Point ``HF_ENDPOINT`` at :attr:`HubServer.endpoint`.

Routes, as the Hub answers them:

* ``GET /api/models/{owner}/{name}[/revision/{rev}]``: the model info, with the commit ``sha``
  and ``siblings`` (one ``rfilename`` per file);
* ``GET /api/models/{owner}/{name}/tree/{rev}[/{path}]``: the file listing (``path``, ``size``,
  ``oid`` the git blob id, ``lfs`` with the sha256 for weights), one page;
* ``HEAD|GET /{owner}/{name}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag``
  (``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files), ``Content-Length``, and ``Range``.

``rev`` is ``main`` or the commit sha. An unknown repo is HTTP 401 ``X-Error-Code: RepoNotFound``
(as the Hub answers, not to reveal private repos); an unknown file 404 ``EntryNotFound``; an
unknown revision 404 ``RevisionNotFound``. Faults: ``missing`` files are listed but answer 404;
the server dies (closes the connection half-way through the body, then stops listening) on the
first GET of ``die_during`` (repo id, file).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".onnx")
_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
_INFO = re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    files: dict[str, bytes]

    @property
    def sha(self) -> str:
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + git_blob_id(self.files[name]).encode())
        return h.hexdigest()

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if is_lfs(name) else git_blob_id(data)


def is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)


def repo_from_dir(directory: Path) -> HubRepo:
    """The files of ``directory`` (top level and below) as a repo."""
    return HubRepo(
        {
            p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
    )


@dataclass
class HubServer:
    repos: dict[str, HubRepo]
    missing: set[tuple[str, str]] = field(default_factory=set)
    die_during: tuple[str, str] | None = None
    requests: list[str] = field(default_factory=list)  # "METHOD path", in order
    died: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, daemon=True, name="hub-server").start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def die(self) -> None:
        """Stop listening (from a handler thread: shutdown waits for serve_forever)."""
        self.died.set()
        server, self._server = self._server, None
        if server is not None:

            def close() -> None:
                server.shutdown()
                server.server_close()  # new connections are refused from now on

            threading.Thread(target=close, daemon=True).start()


@contextmanager
def hub_server(repos: dict[str, HubRepo], **faults: object) -> Iterator[HubServer]:
    server = HubServer(repos, **faults).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        if not server.died.is_set():
            server.stop()


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads hub.requests

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            if hub.died.is_set():  # a dead server answers nothing, on kept-alive connections too
                self.close_connection = True
                return
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            if m := _INFO.match(path):
                self._info(m["repo"], m["rev"] or "main")
            elif m := _TREE.match(path):
                self._tree(m["repo"], m["rev"], m["path"] or "")
            elif m := _RESOLVE.match(path):
                self._resolve(m["repo"], m["rev"], m["file"], body)
            else:
                self._error(404, "NotFound", f"no route {path}")

        def _repo(self, repo_id: str, rev: str) -> HubRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", f"Repository Not Found for {repo_id}")
                return None
            if rev not in ("main", repo.sha):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", repo.sha)
                return None
            return repo

        def _info(self, repo_id: str, rev: str) -> None:
            if (repo := self._repo(repo_id, rev)) is None:
                return
            self._json(
                {
                    "_id": repo.sha[:24],
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo_id.split("/")[0],
                    "sha": repo.sha,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "tags": [],
                    "siblings": [{"rfilename": f} for f in sorted(repo.files)],
                },
                repo.sha,
            )

        def _tree(self, repo_id: str, rev: str, under: str) -> None:
            if (repo := self._repo(repo_id, rev)) is None:
                return
            prefix = f"{under.rstrip('/')}/" if under else ""
            listing = []
            for name in sorted(repo.files):
                if not name.startswith(prefix):
                    continue
                data = repo.files[name]
                entry: dict[str, object] = {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": git_blob_id(data),
                }
                if is_lfs(name):
                    lfs = {"oid": repo.etag(name), "size": len(data), "pointerSize": 134}
                    entry["lfs"] = lfs
                listing.append(entry)
            self._json(listing, repo.sha)

        def _resolve(self, repo_id: str, rev: str, name: str, body: bool) -> None:
            if (repo := self._repo(repo_id, rev)) is None:
                return
            if name not in repo.files or (repo_id, name) in hub.missing:
                self._error(404, "EntryNotFound", f"{name} does not exist", repo.sha)
                return
            data = repo.files[name]
            start = 0
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if body and rng and int(rng[1]) < len(data):
                start = int(rng[1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("ETag", f'"{git_blob_id(data)}"')
            if is_lfs(name):
                self.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
                self.send_header("X-Linked-Size", str(len(data)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            if hub.die_during == (repo_id, name) and not hub.died.is_set():
                self.wfile.write(data[start : start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                hub.die()
                return
            self.wfile.write(data[start:])

        def _json(self, value: object, sha: str) -> None:
            raw = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Repo-Commit", sha)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def _error(self, status: int, code: str, message: str, sha: str | None = None) -> None:
            raw = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if sha is not None:
                self.send_header("X-Repo-Commit", sha)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

    return Handler
