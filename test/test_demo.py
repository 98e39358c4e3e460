"""The README's first command: the demo runs the node on its default input and writes results."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2


def test_demo_writes_masks_overlays_and_objects(tmp_path, monkeypatch):
    weights = tmp_path / "no-weights"  # an empty cache: the demo must say it uses random weights
    monkeypatch.setenv("REFSEG_WEIGHTS", str(weights))
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "refseg_ros.demo", "--frames", "4", "--out", str(out),
                           "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].startswith("refseg-demo: RANDOM WEIGHTS")
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert all(r["objects"][0]["label"] == "red disc" for r in records)
    for index in range(4):
        overlay = cv2.imread(str(out / f"overlay_{index:04d}.png"))
        label = cv2.imread(str(out / f"mask_{index:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (240, 320, 3) and label.shape == (240, 320)
        values = {o["mask_value"] for o in records[index]["objects"]} | {0}
        assert set(label.ravel().tolist()) <= values
    assert cv2.imread(str(out / "contact_sheet.png")) is not None
