"""`refseg-teach` against a running node: reference and caption over topics (it prints the
node's acknowledgement), a box on a saved frame over the service, list and remove.

The node is started as documented, from config/segmenter.yaml (with the small model and
this test's camera and store as -p overrides)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from support import REPO_ROOT
from support.node_harness import Listener, scene, start_node


W, H = 320, 240


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teach")
    node = start_node(tmp, {"cameras": ["/cam0/image_raw"], "store_dir": str(tmp / "store")},
                      params_file=REPO_ROOT / "config" / "segmenter.yaml")
    listener = Listener("teach_listener")
    try:
        listener.listen_status()
        listener.wait_status("active", timeout=90, node=node)
        frame, mask = scene(W, H, 0)
        cv2.imwrite(str(tmp / "frame.png"), frame[:, :, ::-1])
        cv2.imwrite(str(tmp / "mask.png"), mask.astype(np.uint8) * 255)
        later, later_mask = scene(W, H, 6)
        cv2.imwrite(str(tmp / "frame6.png"), later[:, :, ::-1])
        cv2.imwrite(str(tmp / "mask6.png"), later_mask.astype(np.uint8) * 255)
        cv2.imwrite(str(tmp / "small_mask.png"), np.full((10, 10), 255, np.uint8))
        yield node, tmp
    finally:
        listener.close()
        node.stop()


def teach(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "refseg_ros.ros.teach", "--timeout", "30", *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90)


def test_teach_tool_round_trip(node):
    proc, tmp = node
    r = teach("--image", str(tmp / "frame.png"), "--mask", str(tmp / "mask.png"), "--label", "mug")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "taught target" in r.stdout and "'mug' (reference) on every camera" in r.stdout
    mug_id = int(r.stdout.split("taught target ")[1].split()[0])

    r = teach("--image", str(tmp / "frame6.png"), "--mask", str(tmp / "mask6.png"), "--add-view", str(mug_id))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"added view 2 to target {mug_id} 'mug' (reference) on every camera" in r.stdout
    r = teach("--image", str(tmp / "frame6.png"), "--mask", str(tmp / "mask6.png"), "--add-view", "99999")
    assert r.returncode == 1 and "no target 99999 to add a view to" in r.stdout, r.stdout + r.stderr

    r = teach("--image", str(tmp / "frame.png"), "--box", "80", "80", "160", "150", "--label", "boxed",
              "--camera", "/cam0/image_raw")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'boxed' (box) on camera /cam0/image_raw" in r.stdout
    boxed_id = int(r.stdout.split("taught target ")[1].split()[0])

    r = teach("--caption", "the red mug on the left")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(caption)" in r.stdout and "is waiting: no text model configured" in r.stdout
    caption_id = int(r.stdout.split("taught target ")[1].split()[0])
    r = teach("--caption", "The red mug  on the left")  # the same caption: the same target
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"already taught (waiting) as target {caption_id}: nothing new stored" in r.stdout

    r = teach("--image", str(tmp / "frame.png"), "--mask", str(tmp / "small_mask.png"), "--label", "bad")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "rejected reference 'bad': mask is 10x10 but its image is 320x240" in r.stdout

    r = teach("--list")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and "3 target(s)" in lines[-1], r.stdout
    assert any("'boxed'" in line and "box" in line for line in lines)
    assert any("'mug'" in line and "(2 examples)" in line for line in lines), r.stdout

    r = teach("--remove", str(boxed_id))
    assert r.returncode == 0 and f"removed target {boxed_id}" in r.stdout, r.stdout + r.stderr
    r = teach("--remove", "99999")
    assert r.returncode == 1 and "no target 99999" in r.stdout, r.stdout + r.stderr

    r = teach("--reset", "--camera", "/cam0/image_raw")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "forgot 0 target(s) of camera /cam0/image_raw" in r.stdout and "kept 2 target(s)" in r.stdout
    r = teach("--reset", "--camera", "/nope")
    assert r.returncode == 1 and "unknown camera '/nope'" in r.stdout, r.stdout + r.stderr
    r = teach("--reset")
    assert r.returncode == 0 and "forgot 2 target(s) of every camera" in r.stdout, r.stdout + r.stderr
    r = teach("--list")
    assert r.stdout.strip() == "0 target(s)", r.stdout
    assert proc.alive()
