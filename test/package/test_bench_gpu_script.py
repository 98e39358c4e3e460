"""bench/gpu_fps.py runs as shipped: on the CPU here, tiny, the same code a GPU machine runs.

The frames/s are not checked (noise); the table's shape and its FLOP counts are: the image
encoder runs once per frame, so a second object costs far less than a second frame, and
FLOPs are counted per camera frame.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import REPO_ROOT



def table_rows(stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_gpu_script_prints_its_table_on_the_cpu(tmp_path):
    run = subprocess.run(
        [sys.executable, "bench/gpu_fps.py", "--device", "cpu", "--models", "sam2.1_hiera_t",
         "--objects", "1", "3", "--cameras", "1", "2", "--image-size", "128", "--frames", "2", "--warmup", "1",
         "--backends", "eager",
         "--json", str(tmp_path / "gpu.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("# Engine frames/s on cpu, image size 128")
    rows = table_rows(run.stdout)
    assert [(r["model"], r["backend"], r["objects"], r["cameras"]) for r in rows] == [
        ("sam2.1_hiera_t", "eager", "1", "1"), ("sam2.1_hiera_t", "eager", "1", "2"),
        ("sam2.1_hiera_t", "eager", "3", "1"), ("sam2.1_hiera_t", "eager", "3", "2")]
    one, _, three, _ = (float(r["GFLOP/frame"]) for r in rows)
    assert 0 < one < three < 2 * one, (one, three)
    # GFLOP/frame is per camera frame: the same with a second camera
    assert [r["GFLOP/frame"] for r in rows] == [rows[0]["GFLOP/frame"]] * 2 + [rows[2]["GFLOP/frame"]] * 2
    for row in rows:
        assert float(row["frames/s per camera"]) > 0 and float(row["ms/tick"]) > 0
        assert row["floor ms"] == "-"  # no GPU peak known for a CPU
    assert [r["cost vs 1 camera"] for r in rows[::2]] == ["1.00", "1.00"]
    assert rows[0]["A100 paper fps"] == "91.2" and rows[0]["goal fps (x2.5)"] == "228.0"
    assert all(r["A100 paper fps"] == "-" for r in rows[1:])
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert [(r["objects"], r["cameras"], round(r["gflop"], 1)) for r in written["rows"]] == [
        (1, 1, one), (1, 2, one), (3, 1, three), (3, 2, three)]
    for row in written["rows"]:
        assert row["fps_total"] == pytest.approx(row["cameras"] * row["fps_per_camera"])
        assert row["fps_per_camera"] == pytest.approx(1e3 / row["ms"])
    assert written["rows"][0]["goal_fps"] == 228.0 and written["rows"][1]["goal_fps"] is None


def test_gpu_script_adds_a_batched_row_on_request():
    """--batched-cameras 2: the 2-camera tick also as one step_many call (one encoder call)."""
    run = subprocess.run(
        [sys.executable, "bench/gpu_fps.py", "--device", "cpu", "--models", "sam2.1_hiera_t", "--objects", "1",
         "--cameras", "1", "2", "--batched-cameras", "2", "--image-size", "64", "--frames", "1", "--warmup", "1",
         "--backends", "eager"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = table_rows(run.stdout)
    assert [r["cameras"] for r in rows] == ["1", "2", "2 batched"]
    assert rows[2]["GFLOP/frame"] == rows[1]["GFLOP/frame"] and float(rows[2]["cost vs 1 camera"]) > 0


def test_gpu_script_rows_for_the_encoder_backends(tmp_path):
    """onnxruntime runs (its CPU provider here) on the first object count only; tensorrt
    cannot run here and gets one row saying why."""
    import os

    run = subprocess.run(
        [sys.executable, "bench/gpu_fps.py", "--device", "cpu", "--models", "sam2.1_hiera_t",
         "--objects", "1", "2", "--cameras", "1", "--image-size", "128", "--frames", "2", "--warmup", "1",
         "--backends", "onnxruntime", "tensorrt", "--json", str(tmp_path / "gpu.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "REFSEG_WEIGHTS": str(tmp_path / "weights")})
    assert run.returncode == 0, run.stderr[-3000:]
    rows = table_rows(run.stdout)
    assert [(r["backend"], r["objects"], r["cameras"]) for r in rows] == [
        ("onnxruntime", "1", "1"), ("tensorrt", "-", "-")]
    assert float(rows[0]["ms/tick"]) > 0
    assert rows[1]["ms/tick"].startswith("unavailable: ") and "TensorrtExecutionProvider" in rows[1]["ms/tick"]
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert "TensorrtExecutionProvider" in written["rows"][-1]["unavailable"]
