"""bench/gpu_fps.py runs as shipped: on the CPU here, tiny, the same code a GPU machine runs.

The frames/s are not checked (noise); the table's shape and its FLOP counts are: the image
encoder runs once per frame, so a second object costs far less than a second frame.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


def table_rows(stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_gpu_script_prints_its_table_on_the_cpu(tmp_path):
    run = subprocess.run(
        [sys.executable, "bench/gpu_fps.py", "--device", "cpu", "--models", "sam2.1_hiera_t",
         "--objects", "1", "3", "--image-size", "128", "--frames", "2", "--warmup", "1", "--no-compile",
         "--json", str(tmp_path / "gpu.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("# Engine frames/s on cpu, image size 128")
    rows = table_rows(run.stdout)
    assert [(r["model"], r["objects"], r["compile"]) for r in rows] == [
        ("sam2.1_hiera_t", "1", "no"), ("sam2.1_hiera_t", "3", "no")]
    one, three = (float(r["GFLOP/frame"]) for r in rows)
    assert 0 < one < three < 2 * one, (one, three)
    for row in rows:
        assert float(row["frames/s"]) > 0 and float(row["ms/frame"]) > 0
        assert row["floor ms"] == "-"  # no GPU peak known for a CPU
    assert rows[0]["A100 paper fps"] == "91.2" and rows[0]["goal fps (x2.5)"] == "228.0"
    assert rows[1]["A100 paper fps"] == "-"
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert [(r["objects"], round(r["gflop"], 1)) for r in written["rows"]] == [(1, one), (3, three)]
    assert written["rows"][0]["goal_fps"] == 228.0 and written["rows"][1]["goal_fps"] is None
