"""A small Hugging Face Hub on 127.0.0.1 for tests: real HTTP, the Hub's headers, switchable faults.

It speaks as much of the Hub's HTTP API as huggingface_hub uses to fetch a model:

- GET /api/models/{repo}[/revision/{rev}]: the model info, whose "sha" is the commit;
- HEAD and GET /{repo}/resolve/{rev}/{file}: the file, with X-Repo-Commit, ETag and, for the
  weights (an LFS file on the Hub), X-Linked-Etag (its sha256) and X-Linked-Size; GET honours
  `Range: bytes=N-` (206) so an interrupted download can resume;
- errors as the Hub sends them: X-Error-Code RepoNotFound, RevisionNotFound, EntryNotFound or
  GatedRepo, and 401 "Invalid credentials in Authorization header" for a bad token.

Tokens: "bad" is rejected, "granted" may read private and gated repos, any other token is valid
but has no access to them. Faults (`hub.fault`, for the next `hub.fault_times` matching requests,
or all of them when None; with `hub.fault_file`, only requests for that file match):

- "hang": accept the connection, read the request, never answer (until the server stops);
- "500": answer every request with HTTP 500;
- "truncated": GET of the weights sends only the first half, with a matching Content-Length;
- "corrupt": GET of the weights sends bytes of the right length with the tensor data overwritten
  by 0xFF (NaN in float32);
- "drop": GET of the weights announces the full length, sends a third of it and closes;
- "slow": GET of the weights trickles the body (16 KiB every 50 ms), for interrupting a download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HUB_REPO = "Org/tiny-moe"  # what the fake_hub fixture (tests/conftest.py) serves
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_FILES = {"model.safetensors"}
FAULTS = {"hang", "500", "truncated", "corrupt", "drop", "slow"}
DOWNLOAD_FAULTS = {"truncated", "corrupt", "drop", "slow"}
HANG_LIMIT_S = 60.0  # a hanging answer ends at the latest after this, so a broken client cannot hang a test


def git_blob_sha1(data: bytes) -> str:
    """The id git (and the Hub's ETag for small files) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def corrupted(data: bytes) -> bytes:
    """Same length and header, tensor data overwritten by 0xFF bytes (a float32 NaN pattern)."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    damaged = bytearray(data)
    start = header_end + (len(data) - header_end) // 4
    damaged[start : start + 4096] = b"\xff" * min(4096, len(data) - start)
    return bytes(damaged)


@dataclass
class Repo:
    files: dict[str, bytes]
    refs: dict[str, str]  # branch or tag -> commit
    private: bool = False
    gated: bool = False

    def commit_of(self, revision: str) -> str | None:
        if revision in self.refs.values():
            return revision
        return self.refs.get(revision)


@dataclass
class FakeHub:
    """The server's state; tests add repos and switch faults while it runs."""

    repos: dict[str, Repo] = field(default_factory=dict)
    fault: str | None = None
    fault_times: int | None = None
    fault_file: str | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    url: str = ""
    stopped: threading.Event = field(default_factory=threading.Event)

    def add_repo(
        self, repo_id: str, folder: Path, commit: str, *, refs: tuple[str, ...] = ("main",), private: bool = False, gated: bool = False
    ) -> Repo:
        files = {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}
        repo = self.repos.get(repo_id)
        if repo is None:
            repo = self.repos[repo_id] = Repo(files, {}, private, gated)
        else:
            repo.files = files
        repo.refs.update({ref: commit for ref in refs})
        return repo

    def set_fault(self, fault: str | None, times: int | None = None, file: str | None = None) -> None:
        assert fault is None or fault in FAULTS, fault
        self.fault, self.fault_times, self.fault_file = fault, times, file

    def take_fault(self, method: str, filename: str | None) -> str | None:
        """The fault that applies to this request (counting it down), or None."""
        fault = self.fault
        if fault is None or (self.fault_file is not None and filename != self.fault_file):
            return None
        if fault in DOWNLOAD_FAULTS and not (method == "GET" and filename in LFS_FILES):
            return None
        if self.fault_times is not None:
            if self.fault_times <= 0:
                return None
            self.fault_times -= 1
        return fault

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, path in self.requests if m == method and re.search(pattern, path))


RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    hub: FakeHub  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self.answer("HEAD")

    def do_GET(self) -> None:
        self.answer("GET")

    # --- dispatch ---

    def answer(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((method, path))
        resolve = RESOLVE.match(path)
        fault = self.hub.take_fault(method, resolve.group("file") if resolve else None)
        if fault == "hang":
            self.hub.stopped.wait(HANG_LIMIT_S)
            self.close_connection = True
            return
        if fault == "500":
            self.send_body(500, b'{"error":"Internal Error"}', {"Content-Type": "application/json"}, method)
            return
        info = MODEL_INFO.match(path)
        repo_id = resolve.group("repo") if resolve else info.group("repo") if info else None
        denial = self.denial(repo_id, is_file=resolve is not None)
        if denial is not None:
            status, headers = denial
            self.send_body(status, b"", headers, method)
            return
        if resolve:
            self.serve_file(method, resolve.group("repo"), resolve.group("rev"), resolve.group("file"), fault)
            return
        if info and method == "GET":
            self.serve_info(info.group("repo"), info.group("rev") or "main")
            return
        self.send_body(404, b"", {}, method)

    def token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def denial(self, repo_id: str | None, is_file: bool) -> tuple[int, dict[str, str]] | None:
        """The Hub's refusal of this request, if any (bad token, unknown or private repo, gated file)."""
        token = self.token()
        if token == "bad":
            return 401, {"X-Error-Message": "Invalid credentials in Authorization header"}
        repo = self.hub.repos.get(repo_id or "")
        if repo is None or (repo.private and token != "granted"):
            return (404 if token else 401), {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
        if repo.gated and is_file and token != "granted":
            message = "Access to model is restricted. You must have access to it and be authenticated to access it."
            return (403 if token else 401), {"X-Error-Code": "GatedRepo", "X-Error-Message": message}
        return None

    def serve_info(self, repo_id: str, revision: str) -> None:
        repo = self.hub.repos[repo_id]
        commit = repo.commit_of(revision)
        if commit is None:
            self.send_body(404, b"", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, "GET")
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2024-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in repo.files],
        }
        self.send_body(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, "GET")

    def serve_file(self, method: str, repo_id: str, revision: str, filename: str, fault: str | None) -> None:
        repo = self.hub.repos[repo_id]
        commit = repo.commit_of(revision)
        if commit is None:
            self.send_body(404, b"", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, method)
            return
        data = repo.files.get(filename)
        if data is None:
            headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": commit}
            self.send_body(404, b"", headers, method)
            return
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if filename in LFS_FILES:
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        if method == "HEAD":
            self.send_body(200, data, headers, "HEAD")
            return
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if wanted:
            start = min(int(wanted.group(1)), len(data))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        status = 206 if wanted else 200
        if fault == "corrupt":
            data = corrupted(data)
        body = data[start:]
        if fault == "truncated":
            body = body[: len(body) // 2]
        if fault == "drop":
            self.send_head(status, headers, len(body))
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "slow":
            self.send_head(status, headers, len(body))
            for offset in range(0, len(body), 16384):
                if self.hub.stopped.is_set():
                    break
                self.wfile.write(body[offset : offset + 16384])
                self.wfile.flush()
                time.sleep(0.05)
            self.close_connection = True
            return
        self.send_body(status, body, headers, "GET")

    # --- writing answers ---

    def send_head(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def send_body(self, status: int, body: bytes, headers: dict[str, str], method: str) -> None:
        self.send_head(status, headers, len(body))
        if method != "HEAD" and body:
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()

    def process_request(self, request, client_address) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def close_connections(self) -> None:
        """Cut kept-alive connections, so a client's pool cannot reach this server's state after it stops."""
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer (an interrupted download) is expected; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def start(hub: FakeHub) -> Server:
    """Serve `hub` on 127.0.0.1 at an ephemeral port in a background thread; sets hub.url."""
    handler = type("BoundHandler", (Handler,), {"hub": hub})
    server = Server(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True).start()
    return server


def stop(hub: FakeHub, server: Server) -> None:
    hub.stopped.set()  # releases hanging and trickling answers
    server.shutdown()
    server.close_connections()
    server.server_close()
