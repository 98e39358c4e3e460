"""Checkpoint loading and the weights command, against a file server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

from refseg_ros.engine import CheckpointError, EngineConfig, SegmentationEngine
from refseg_ros.engine import weights
from refseg_ros.engine.model import build_model, load_checkpoint


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch):
    """A proxy set in the environment is not asked for the servers on 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


class _Server(http.server.ThreadingHTTPServer):
    """Serves one file; the first GET can be cut short to test resuming."""

    def __init__(self, payload: bytes, cut_first_at: int | None):
        self.payload, self.cut_first_at = payload, cut_first_at
        self.requests: list[str | None] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: _Server = self.server
        server.requests.append(self.headers.get("Range"))
        server.paths.append(self.path)
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(server.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = server.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_first_at is not None and len(server.requests) == 1:
            self.wfile.write(body[: server.cut_first_at])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-file
            return
        self.wfile.write(body)


@pytest.fixture()
def serve():
    servers = []

    def start(payload: bytes, cut_first_at: int | None = None) -> _Server:
        server = _Server(payload, cut_first_at)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def official_format_checkpoint(tmp_path_factory) -> tuple[bytes, dict]:
    """A checkpoint of a small random model, written as SAM2 publishes them."""
    model = build_model("sam2.1_hiera_t", image_size=128, seed=5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    return path.read_bytes(), state


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_download_resumes_after_a_dropped_connection(serve, tmp_path, official_format_checkpoint):
    payload, state = official_format_checkpoint
    server = serve(payload, cut_first_at=len(payload) // 3)
    args = ["sam2.1_hiera_t", "--dir", str(tmp_path), "--base-url", _url(server)]
    assert weights.main(args) == 1  # the first run loses its connection ...
    part = tmp_path / "sam2.1_hiera_tiny.pt.part"
    assert part.exists() and 0 < part.stat().st_size < len(payload)
    assert not (tmp_path / "sam2.1_hiera_tiny.pt").exists()
    digest = hashlib.sha256(payload).hexdigest()
    assert weights.main(args + ["--sha256", digest]) == 0  # ... the second one resumes
    assert server.requests[-1] == f"bytes={part.stat().st_size if part.exists() else len(payload) // 3}-"
    dest = tmp_path / "sam2.1_hiera_tiny.pt"
    assert dest.read_bytes() == payload
    assert (tmp_path / "sam2.1_hiera_tiny.pt.sha256").read_text().strip() == digest
    # The downloaded file is a checkpoint the engine loads, found through the cache.
    model = build_model("sam2.1_hiera_t", image_size=128, seed=99)
    load_checkpoint(model, dest)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert weights.cached_checkpoint("sam2.1_hiera_t", tmp_path) == dest


def test_wrong_digest_is_rejected_and_nothing_installed(serve, tmp_path):
    server = serve(b"x" * 5000)
    args = ["sam2.1_hiera_t", "--dir", str(tmp_path), "--base-url", _url(server), "--sha256", "0" * 64]
    assert weights.main(args) == 1
    assert not (tmp_path / "sam2.1_hiera_tiny.pt").exists()


def test_offline_says_what_to_do(tmp_path, capsys):
    import socket
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert weights.main(["sam2.1_hiera_t", "--dir", str(tmp_path), "--base-url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert "offline" in err and str(tmp_path / "sam2.1_hiera_tiny.pt") in err


def test_mirror_from_the_environment(serve, tmp_path, monkeypatch):
    server = serve(b"w" * 2000)
    monkeypatch.setenv("REFSEG_WEIGHTS_URL", _url(server) + "/")
    assert weights.checkpoint_url("sam2.1_hiera_t") == _url(server) + "/092824/sam2.1_hiera_tiny.pt"
    assert weights.main(["sam2.1_hiera_t", "--dir", str(tmp_path)]) == 0
    assert server.paths == ["/092824/sam2.1_hiera_tiny.pt"]
    monkeypatch.delenv("REFSEG_WEIGHTS_URL")
    assert weights.base_url() == weights.OFFICIAL_BASE_URL


def test_probe_is_quick_and_names_the_server(serve, monkeypatch):
    import socket
    import time
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = serve(b"")
    weights.probe(_url(server) + "/x.pt", timeout=2)  # listening: returns, sends nothing
    assert server.requests == []
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(weights.DownloadError, match=r"cannot reach .*127\.0\.0\.1:\d+: .*offline"):
        weights.probe(dead + "/x.pt", timeout=2)
    assert time.monotonic() - started < 2
    # Behind a proxy, the proxy is what must be reachable: here a dead one before a live server.
    monkeypatch.setenv("http_proxy", dead)
    with pytest.raises(weights.DownloadError):
        weights.probe(_url(server) + "/x.pt", timeout=2)


def test_corrupted_cache_is_reported(serve, tmp_path):
    server = serve(b"y" * 3000)
    args = ["sam2.1_hiera_t", "--dir", str(tmp_path), "--base-url", _url(server)]
    assert weights.main(args) == 0
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(b"z" * 3000)
    assert weights.main(args) == 1


def test_checkpoint_errors_name_the_file_and_keys(tmp_path, official_format_checkpoint):
    _, state = official_format_checkpoint
    model = build_model("sam2.1_hiera_t", image_size=128)
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(model, missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt could not be read"):
        load_checkpoint(model, garbage)
    wrong_format = tmp_path / "bare.pt"
    torch.save(state, wrong_format)
    with pytest.raises(CheckpointError, match="bare.pt is not in SAM2's format"):
        load_checkpoint(model, wrong_format)
    partial = dict(state)
    partial.pop("maskmem_tpos_enc")
    partial["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "partial.pt"
    torch.save({"model": partial}, broken)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError,
                       match=r"partial.pt.*missing keys \[maskmem_tpos_enc\].*unexpected keys \[extra.weight\]"):
        load_checkpoint(model, broken)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # no partial load
    other_config = tmp_path / "small.pt"
    torch.save({"model": build_model("sam2.1_hiera_s", image_size=128).state_dict()}, other_config)
    with pytest.raises(CheckpointError, match="small.pt does not match the model config"):
        load_checkpoint(model, other_config)


def test_engine_uses_a_cached_checkpoint_when_asked(tmp_path, monkeypatch, official_format_checkpoint):
    payload, state = official_format_checkpoint
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(payload)
    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path))
    engine = SegmentationEngine.from_config(EngineConfig(image_size=128, checkpoint="auto", device="cpu"))
    assert not engine.random_weights
    assert torch.equal(engine.model.state_dict()["maskmem_tpos_enc"], state["maskmem_tpos_enc"])
    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path / "empty"))
    assert SegmentationEngine.from_config(EngineConfig(image_size=128, checkpoint="auto")).random_weights


def test_the_engine_alone_writes_its_weights(tmp_path, official_format_checkpoint):
    """The config's SAM2 checkpoint and then a SAMWISE checkpoint (its sam.* are the
    SAM2 of the captions) both go through `load_weights`: `random_weights` and
    `checkpoint` follow it and cannot be set from outside; once an adapter's file gave
    the weights, no other file replaces them (the model untouched); a file that does not
    fit leaves a random model random."""
    from support.tiny_models import samwise_state, tiny_samwise, write_samwise_checkpoint
    from refseg_ros.adapters.text.checkpoint import SamwiseWeights
    from refseg_ros.engine.model import Sam2Checkpoint

    payload, state = official_format_checkpoint
    sam2_file = tmp_path / "sam2.1_hiera_tiny.pt"
    sam2_file.write_bytes(payload)
    engine = SegmentationEngine.from_config(EngineConfig(image_size=128, checkpoint=str(sam2_file), device="cpu"))
    assert not engine.random_weights and engine.checkpoint == str(sam2_file)
    assert torch.equal(engine.model.state_dict()["maskmem_tpos_enc"], state["maskmem_tpos_enc"])
    with pytest.raises(AttributeError):
        engine.random_weights = True
    with pytest.raises(AttributeError):
        engine.checkpoint = None

    sam, adapter = tiny_samwise("sam2.1_hiera_t", 128, seed=7)
    samwise = samwise_state(sam, adapter)
    samwise_file = write_samwise_checkpoint(tmp_path / "samwise.pth", sam, adapter, samwise)
    loaded = engine.load_weights(SamwiseWeights(str(samwise_file), "sam2.1_hiera_t"))
    assert type(loaded).__name__ == "SamwiseAdapter"
    assert engine.checkpoint == str(samwise_file) and not engine.random_weights
    after = {k: v.clone() for k, v in engine.model.state_dict().items()}
    assert all(torch.equal(after[k], samwise["sam." + k]) for k in after)

    with pytest.raises(CheckpointError, match=r"come from the SAMWISE checkpoint .*samwise.pth; "
                                              r"the SAM2 checkpoint .*would replace them"):
        engine.load_weights(Sam2Checkpoint(str(sam2_file)))
    assert engine.checkpoint == str(samwise_file)
    assert all(torch.equal(engine.model.state_dict()[k], v) for k, v in after.items())

    fresh = SegmentationEngine.from_config(EngineConfig(image_size=128, device="cpu"))
    assert fresh.random_weights and fresh.checkpoint is None
    torch.save({"model": {"extra.weight": torch.zeros(1)}}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="wrong.pt does not match"):
        fresh.load_weights(Sam2Checkpoint(str(tmp_path / "wrong.pt")))
    assert fresh.random_weights and fresh.checkpoint is None
