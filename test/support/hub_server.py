"""A stand-in for the Hugging Face hub and for a plain file server, on 127.0.0.1 only.

It answers what `huggingface_hub.snapshot_download` asks (read from its source):
- `GET /api/models/<repo>/revision/<rev>`: the repository's commit (`sha`);
- `GET /api/models/<repo>/tree/<rev>?recursive=...`: its files, each with its git blob
  id (`oid`), size, and for weight files the LFS pointer (`lfs.oid` = SHA-256);
- `HEAD`/`GET /<repo>/resolve/<rev>/<path>`: the file, with `X-Repo-Commit`, `ETag`
  (git blob id; for LFS files `X-Linked-Etag` = SHA-256 and `X-Linked-Size`),
  `Content-Length`, and `Range` requests answered with 206;
and any other path as a plain file (`files`), with `Range` too.

Faults, for the tests: `status[path] = code` answers a path with an error (404 with the
hub's `X-Error-Code`); `cut_once` paths send half their body, then hang up, once;
`corrupt[path] = bytes` serves other bytes under the same headers (a digest mismatch);
`short[path] = n` sends only n bytes and says so in Content-Length while the HEAD
metadata keeps the full size (a size mismatch). `requests` lists (method, path, Range).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Optional

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def git_blob_id(data: bytes) -> str:
    """git's object id of a blob (what the hub calls a file's `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_env(server: "HubServer", hub_cache: Path, **more: str) -> dict[str, str]:
    """This environment with the hub at `server` (online, plain HTTP, no proxy for it) and
    the Hugging Face cache at `hub_cache`; `more` added."""
    return {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1", **more}


def refseg_weights(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`refseg-weights ARGS` in its own process (output captured)."""
    code = "import sys; from refseg_ros.engine.weights import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=240)


class HubServer(http.server.ThreadingHTTPServer):
    """The server; `url` is its base (use it as HF_ENDPOINT); stop with `close()`."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: dict[str, dict[str, bytes]] = {}
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.cut_once: set[str] = set()
        self.corrupt: dict[str, bytes] = {}
        self.short: dict[str, int] = {}
        self.requests: list[tuple[str, str, Optional[str]]] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_repo(self, repo_id: str, folder: Path) -> dict[str, bytes]:
        """Serve every file under `folder` as the repository `repo_id`; its files."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        self.repos[repo_id] = files
        return files

    def commit(self, repo_id: str) -> str:
        """The repository's commit: a digest of its files, 40 hex digits."""
        digest = hashlib.sha1()
        for path, data in sorted(self.repos[repo_id].items()):
            digest.update(path.encode() + b"\0" + git_blob_id(data).encode())
        return digest.hexdigest()

    def gets(self, path: str) -> list[Optional[str]]:
        """The Range headers of the GET requests for a path (None: the whole file)."""
        with self.lock:
            return [r for m, p, r in self.requests if m == "GET" and p == path]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    # ------------------------------------------------------------------------------
    def _answer(self, head: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        with self.server.lock:
            self.server.requests.append(("HEAD" if head else "GET", path, self.headers.get("Range")))
        if path in self.server.status:
            return self._error(self.server.status[path], {})
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            return self._api("/".join(parts[2:4]), parts[4])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), "/".join(parts[4:]), path, head)
        if path in self.server.files:
            return self._send(path, self.server.files[path], {}, head)
        return self._error(404, {})

    def _api(self, repo_id: str, what: str) -> None:
        files = self.server.repos.get(repo_id)
        if files is None:
            return self._error(404, {"X-Error-Code": "RepoNotFound"})
        if what == "revision":
            body = {"id": repo_id, "modelId": repo_id, "sha": self.server.commit(repo_id), "private": False,
                    "siblings": [{"rfilename": p} for p in files]}
        else:
            body = []
            for p, data in files.items():
                entry = {"type": "file", "path": p, "size": len(data), "oid": git_blob_id(data)}
                if p.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                body.append(entry)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _resolve(self, repo_id: str, filename: str, path: str, head: bool) -> None:
        files = self.server.repos.get(repo_id)
        if files is None:
            return self._error(404, {"X-Error-Code": "RepoNotFound"})
        commit = self.server.commit(repo_id)
        if filename not in files:
            return self._error(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        data = files[filename]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'}
        if filename.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        self._send(path, data, headers, head)

    def _send(self, path: str, data: bytes, headers: dict[str, str], head: bool) -> None:
        served = self.server.corrupt.get(path, data) if not head else data
        start = 0
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes=") and not head:
            start = int(ranged[len("bytes="):].split("-")[0])
            if start >= len(served):
                return self._error(416, {"Content-Range": f"bytes */{len(served)}"})
        body = served[start:]
        if not head and path in self.server.short:
            body = body[: self.server.short[path]]
        self.send_response(206 if start else 200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(served) - 1}/{len(served)}")
        self.send_header("Content-Length", str(len(body) if not head else len(data)))
        self.end_headers()
        if head:
            return
        with self.server.lock:
            cut = path in self.server.cut_once
            self.server.cut_once.discard(path)
        if cut:  # half the body, then hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _error(self, code: int, headers: dict[str, str]) -> None:
        body = json.dumps({"error": f"{code}"}).encode()
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
