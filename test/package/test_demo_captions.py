"""The demo follows a caption as well as the reference when a text model is present: it
fetches one into the Hugging Face cache from the hub (here a stand-in on 127.0.0.1
serving a tiny random-weight OWLv2 under the captions mode's detector id), and the node's
`text_path: auto` finds it. Offline, one line says why captions are not tracked and
which command fetches the model.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from refseg_ros import demo
from support.hub_server import HubServer, hub_env
from support.tiny_models import save_owlv2

DETECTOR = "IDEA-Research/grounding-dino-tiny"  # the captions mode's detector (refseg_ros.models)


def _dead_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def hub(tmp_path):
    server = HubServer()
    server.add_repo(DETECTOR, save_owlv2(tmp_path / "detector"))
    yield server
    server.close()


def test_demo_fetches_a_text_model_and_follows_the_caption(tmp_path, hub):
    out = tmp_path / "demo"
    env = hub_env(hub, tmp_path / "hf", REFSEG_WEIGHTS=str(tmp_path / "weights"), REFSEG_WEIGHTS_URL=_dead_url())
    proc = subprocess.run([sys.executable, "-m", "refseg_ros.demo", "--out", str(out), "--timeout", "240",
                           "--frames", "4"], capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == (f"refseg-demo: captions through {DETECTOR} (fetched from {hub.url}): teaching "
                        "'the red disc' too"), proc.stdout
    assert "refseg-demo: taught a caption 'the red disc' on the caption topic" in lines
    assert any("'the red disc'" in line and "tracked through grounding" in line for line in lines), proc.stdout
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    labels = [{o["label"] for o in r["objects"]} for r in records]
    assert all("red disc" in frame for frame in labels)
    assert any("the red disc" in frame for frame in labels), labels


def test_offline_demo_says_in_one_line_why_captions_are_not_tracked(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    dead = _dead_url()
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    text = demo.resolve_text_model(download=True, connect_timeout=2)
    assert text.repo_id is None
    line = text.line()
    assert "\n" not in line
    assert line.startswith(f"refseg-demo: captions not tracked - {DETECTOR} is not cached and could not be "
                           f"fetched (cannot reach {dead}"), line
    assert line.endswith("fetch a text model with `refseg-weights --for captions` (or pass --no-caption)")
    assert not (tmp_path / "hf" / "models--IDEA-Research--grounding-dino-tiny").exists()
    assert "--no-download" in demo.resolve_text_model(download=False).line()
