"""Run every benchmark and write one Markdown report (each ratio measured in one run).

    python bench/run_all.py [--quick] [--no-gpu] [--out out/bench]

The CPU benchmarks always run; the GPU frames/s benchmark (bench/gpu_fps.py) runs too
when torch sees a CUDA device, unless --no-gpu.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("Engine vs official SAM2 video predictor", "engine_bench.py"),
    ("ROS overhead per frame", "ros_overhead.py"),
    ("Model step under camera load", "ros_load.py"),
    ("Text targets", "text_targets.py"),
]
GPU_BENCHMARK = ("GPU frames/s", "gpu_fps.py")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run(script: str, quick: bool, json_path: Path) -> tuple[int, str, float]:
    command = [sys.executable, str(HERE / script), "--json", str(json_path)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    text = proc.stdout if proc.returncode == 0 else proc.stdout + "\n```\n" + proc.stderr[-4000:] + "\n```\n"
    return proc.returncode, text, time.perf_counter() - start


def summary(results: dict) -> list[str]:
    """The headline ratios, one row each."""
    rows = []
    engine = results.get("engine_bench.py") or {}
    for r in engine.get("speed", []):
        rows.append((f"time per frame, {r['objects']} object(s), engine / official", f"{r['ratio']:.3f}", "<= 1.0"))
    for r in engine.get("flops", []):
        rows.append((f"FLOPs per frame, {r['objects']} object(s), engine / official", f"{r['ratio']:.4f}", "<= 1.0"))
    memory = engine.get("memory")
    if memory:
        counts = sorted(memory["engine"], key=int)
        a, b = counts[0], counts[-1]
        rows.append((f"engine retained bytes, frame {b} / frame {a}",
                     f"{memory['engine'][b] / memory['engine'][a]:.3f}", "1.0 (flat)"))
        rows.append((f"official retained MB, frame {a} -> frame {b}",
                     f"{memory['official'][a] / 1e6:.2f} -> {memory['official'][b] / 1e6:.2f}", "(grows)"))
    ros = results.get("ros_overhead.py") or {}
    for r in ros.get("rows", []):
        rows.append((f"ROS overhead / engine step, {r['width']}x{r['height']}", f"{r['ratio']:.3f}", "< 0.05"))
    for r in ros.get("geometry_rows", []):
        rows.append((f"target geometry / engine step, {r['width']}x{r['height']}, {r['targets']} target(s)",
                     f"{r['ratio']:.4f}", "< 0.01"))
    load = results.get("ros_load.py") or {}
    for r in load.get("rows", []):
        if "30 Hz" in r["load"] and r["executor"] == "multi" and not r["env"] and r["compute_threads"] == 0:
            rows.append((f"step under load / no-load step, {r['load']}", f"{r['ratio']:.2f}", "<= 1.15"))
            rows.append((f"frames received, {r['load']}", f"{r['received'] * 100:.1f} %", ">= 95 %"))
    gpu = results.get("gpu_fps.py") or {}
    for r in gpu.get("rows", []):
        if r["goal_fps"] and r["backend"] == "compile":
            rows.append((f"frames/s on {gpu['device']}, {r['model']}, 1 object, compiled", f"{r['fps_per_camera']:.1f}",
                         f">= {r['goal_fps']:.1f} (2.5x A100 paper)"))
        if r["cameras"] == 4 and r["objects"] == 1:
            rows.append((f"4 cameras / 1 camera on {gpu['device']}, {r['model']}, {r['backend']}",
                         f"{r['cost_vs_1_camera']:.2f}", "<= 2.5"))
    return [f"| {name} | {value} | {goal} |" for name, value, goal in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU benchmark even on a GPU machine")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sections, results, failed = [], {}, []
    benchmarks = BENCHMARKS + ([GPU_BENCHMARK] if not args.no_gpu and cuda_available() else [])
    for title, script in benchmarks:
        json_path = args.out / f"{Path(script).stem}.json"
        json_path.unlink(missing_ok=True)
        print(f"running {script} ...", flush=True)
        code, text, seconds = run(script, args.quick, json_path)
        if code != 0:
            failed.append(script)
        if json_path.exists():
            results[script] = json.loads(json_path.read_text())
        sections.append(f"# {title} (`bench/{script}`, {seconds:.0f} s{', FAILED' if code else ''})\n\n{text}")
    head = [
        "# refseg_ros benchmarks",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}{', quick mode' if args.quick else ''}",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        *summary(results),
        "",
    ]
    report = "\n".join(head) + "\n" + "\n".join(sections)
    (args.out / "BENCH.md").write_text(report)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    print(report)
    print(f"\nwrote {args.out / 'BENCH.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
