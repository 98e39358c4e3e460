"""The README's first command: the demo runs the node on its default input and writes results.

When the weights cache lacks the model's checkpoint the demo fetches it first; here the
"official site" is a file server on 127.0.0.1 (--weights-url), so no test reaches further
than loopback.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import torch

from refseg_ros import demo
from refseg_ros.engine.model import build_model
from refseg_ros.ros.node import RANDOM_WEIGHTS_WARNING

CHECKPOINT_PATH = "/092824/sam2.1_hiera_tiny.pt"  # the official release's path of the demo's model


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; remembers the paths asked for."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        super().do_GET()


class _Closes(http.server.BaseHTTPRequestHandler):
    """Reads the request and hangs up without an answer."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class _Silent(http.server.BaseHTTPRequestHandler):
    """Reads the request and never answers (until the test ends)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        self.server.done.wait(30)


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch):
    """A proxy set in the environment is not asked for the servers on 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@dataclass
class Served:
    url: str  # base URL, http://127.0.0.1:PORT
    paths: list[str]  # the paths asked for, in order


@pytest.fixture()
def serve():
    """start(handler, root=None) -> Served: a server on 127.0.0.1; all stopped after the test."""
    servers = []

    def start(handler, root: Path | None = None) -> Served:
        if root is not None:
            handler = functools.partial(handler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.paths, server.done = [], threading.Event()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Served(f"http://127.0.0.1:{server.server_address[1]}", server.paths)

    yield start
    for server in servers:
        server.done.set()
        server.shutdown()
        server.server_close()


def _dead_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, bytes]:
    """A release folder holding a checkpoint of the demo's model (random weights) at the official path.

    The state dict of SAM2 does not depend on the image size, so a model built at 128 px
    gives a file that loads into the demo's model at any size.
    """
    root = tmp_path_factory.mktemp("release")
    path = root / CHECKPOINT_PATH.lstrip("/")
    path.parent.mkdir(parents=True)
    torch.save({"model": build_model("sam2.1_hiera_t", image_size=128, seed=3).state_dict()}, path)
    return root, path.read_bytes()


def _run_demo(tmp_path, weights_dir: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "demo"
    # Never the real site, whatever the arguments: the environment's mirror is a dead loopback port.
    env = {**os.environ, "REFSEG_WEIGHTS": str(weights_dir), "REFSEG_WEIGHTS_URL": _dead_url()}
    proc = subprocess.run([sys.executable, "-m", "refseg_ros.demo", "--out", str(out), "--timeout", "240", *extra],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, out


def warnings_in(text: str) -> list[str]:
    """Lines of a log that are ROS warnings or errors ([WARN], [ERROR], [FATAL]) or
    Python warnings (`...Warning: ...`)."""
    return [line for line in text.splitlines()
            if re.match(r"\[(WARN|ERROR|FATAL)\]", line) or re.search(r"\b[A-Za-z]*Warning: ", line)]


def test_demo_writes_masks_overlays_and_objects(tmp_path):
    # An empty cache and a weights server that refuses connections: the demo goes on with
    # random weights and its first line says so.
    weights = tmp_path / "no-weights"
    url = _dead_url()
    started = time.time()
    proc, out = _run_demo(tmp_path, weights, "--frames", "4", "--weights-url", url)
    # A clean run: the node's only warning is that its weights are random, and it is said once.
    log = (out / "node.log").read_text()
    assert [w for w in warnings_in(log) if not w.endswith(f"]: {RANDOM_WEIGHTS_WARNING}")] == [], log
    assert len(warnings_in(log)) == 1, log
    assert warnings_in(proc.stdout + proc.stderr) == [], proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("refseg-demo: RANDOM WEIGHTS - the sam2.1_hiera_t checkpoint is not cached and "
                            f"could not be fetched from {url}{CHECKPOINT_PATH}"), proc.stdout
    assert "cannot reach" in proc.stderr and "refseg-weights sam2.1_hiera_t" in proc.stderr
    assert not (weights / "sam2.1_hiera_tiny.pt").exists()
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    # a live camera's stamps: the clock's time when each frame was taken, in order
    stamps = [r["stamp_ns"] * 1e-9 for r in records]
    assert started < stamps[0] and stamps == sorted(stamps) and stamps[-1] < time.time(), stamps
    assert all(r["objects"][0]["label"] == "red disc" for r in records)
    for index in range(4):
        overlay = cv2.imread(str(out / f"overlay_{index:04d}.png"))
        label = cv2.imread(str(out / f"mask_{index:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (240, 320, 3) and label.shape == (240, 320)
        values = {o["mask_value"] for o in records[index]["objects"]} | {0}
        assert set(label.ravel().tolist()) <= values
    assert cv2.imread(str(out / "contact_sheet.png")) is not None


def test_demo_fetches_the_checkpoint_into_the_cache_and_runs_on_it(tmp_path, serve, release):
    root, payload = release
    server = serve(_Files, root)
    base = server.url
    cache = tmp_path / "cache"
    # 128 px keeps the run short; the default with a checkpoint is 1024.
    proc, out = _run_demo(tmp_path, cache, "--frames", "2", "--image-size", "128", "--weights-url", base)
    dest = cache / "sam2.1_hiera_tiny.pt"
    assert proc.stdout.splitlines()[0] == f"refseg-demo: weights from {dest} (fetched from {base}{CHECKPOINT_PATH})"
    assert dest.read_bytes() == payload
    assert (cache / "sam2.1_hiera_tiny.pt.sha256").read_text().strip() == hashlib.sha256(payload).hexdigest()
    assert not (cache / "sam2.1_hiera_tiny.pt.part").exists()
    assert server.paths == [CHECKPOINT_PATH]
    log = (out / "node.log").read_text()
    assert "image_size 128" in log and "random weights" not in log, log
    assert warnings_in(log) == [], log
    assert len((out / "objects.jsonl").read_text().splitlines()) == 2


def test_a_cached_checkpoint_is_used_without_asking_the_server(tmp_path, serve, monkeypatch, release):
    _, payload = release
    server = serve(_Files, tmp_path / "empty-release")
    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path))
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(payload)
    chosen = demo.resolve_checkpoint(None, "sam2.1_hiera_t", base_url=server.url)
    assert chosen.first_line() == f"refseg-demo: weights from {tmp_path / 'sam2.1_hiera_tiny.pt'}"
    assert server.paths == []


def test_no_download_asks_no_server(tmp_path, serve, monkeypatch, release):
    root, _ = release
    server = serve(_Files, root)
    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path))
    chosen = demo.resolve_checkpoint(None, "sam2.1_hiera_t", download=False, base_url=server.url)
    assert chosen.checkpoint is None
    assert chosen.first_line().startswith("refseg-demo: RANDOM WEIGHTS - no checkpoint given or cached")
    assert "--no-download" in chosen.first_line()
    assert server.paths == [] and not list(tmp_path.iterdir())


@pytest.mark.parametrize("handler", [_Closes, _Silent], ids=["hangs-up", "never-answers"])
def test_a_failing_server_gives_random_weights_quickly(tmp_path, serve, monkeypatch, handler, capsys):
    server = serve(handler)
    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path))
    started = time.monotonic()
    chosen = demo.resolve_checkpoint(None, "sam2.1_hiera_t", base_url=server.url, connect_timeout=2, read_timeout=1)
    assert time.monotonic() - started < 10
    assert chosen.checkpoint is None
    assert chosen.first_line().startswith("refseg-demo: RANDOM WEIGHTS - the sam2.1_hiera_t checkpoint is not "
                                          "cached and could not be fetched")
    assert server.paths == [CHECKPOINT_PATH]
    assert not (tmp_path / "sam2.1_hiera_tiny.pt").exists()
    assert "pass --checkpoint PATH" in capsys.readouterr().err


def test_a_refused_connection_fails_within_the_connect_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path))
    started = time.monotonic()
    chosen = demo.resolve_checkpoint(None, "sam2.1_hiera_t", base_url=_dead_url(), connect_timeout=2)
    assert time.monotonic() - started < 2
    assert chosen.checkpoint is None


def test_a_fetched_file_that_is_no_checkpoint_is_removed(tmp_path, serve, monkeypatch, capsys):
    root = tmp_path / "release"
    page = root / CHECKPOINT_PATH.lstrip("/")
    page.parent.mkdir(parents=True)
    page.write_bytes(b"<html>please log in to this network</html>")  # what a captive portal serves
    base = serve(_Files, root).url
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFSEG_WEIGHTS", str(cache))
    chosen = demo.resolve_checkpoint(None, "sam2.1_hiera_t", base_url=base)
    assert chosen.checkpoint is None
    assert chosen.first_line().startswith(f"refseg-demo: RANDOM WEIGHTS - the sam2.1_hiera_t checkpoint fetched "
                                          f"from {base}{CHECKPOINT_PATH} does not load")
    assert not list(cache.iterdir())  # neither the file nor its digest stays in the cache
    assert "could not be read" in capsys.readouterr().err
