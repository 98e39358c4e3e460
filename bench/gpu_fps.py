"""Frames per second of the engine on a GPU: hiera t/s/b+/l, bf16, with and without compile.

Runs on a GPU machine without network access: install the wheels made by
`bash bench/make_wheelhouse.sh DIR` with `pip install --no-index --no-deps DIR/*.whl`
(torch with CUDA is expected to be there already; checked here in an offline venv with
only torch beside the wheels, on the CPU path), then:

    python bench/gpu_fps.py                      # all models, 1/4/10 objects, compile on/off
    python bench/gpu_fps.py --models sam2.1_hiera_t --objects 1 --no-compile

Prints a Markdown table: frames/s, ms/frame, peak memory, FLOPs per frame and the compute
floor (FLOPs / the GPU's dense bf16 peak), beside SAM2's published A100 figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine
from refseg_ros.engine.weights import cached_checkpoint

# SAM2.1 paper/README: A100, compiled, one object, 1024 px.
PUBLISHED_A100_FPS = {"sam2.1_hiera_t": 91.2, "sam2.1_hiera_s": 84.8, "sam2.1_hiera_b+": 64.1, "sam2.1_hiera_l": 39.5}
GOAL_FACTOR = 2.5
# Dense bf16 tensor-core peaks (TFLOP/s), for the compute floor.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def synthetic_frames(n: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Moving discs on noise; masks of up to 10 discs on the first frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    centres = rng.uniform(0.15, 0.85, (10, 2)) * size
    frames, first_masks = [], []
    for t in range(n):
        frame = base.copy()
        for k, (cx, cy) in enumerate(centres):
            disc = (xx - cx - 2 * t) ** 2 + (yy - cy) ** 2 < (size * 0.05) ** 2
            frame[disc] = (25 * k, 255 - 20 * k, 128)
            if t == 0:
                first_masks.append(disc)
        frames.append(frame)
    return frames, first_masks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, size: int, objects: int, compile_: bool, frames_n: int, warmup: int,
            device: str, checkpoint: str | None) -> dict:
    config = EngineConfig(model=model, image_size=size, device=device, precision="auto",
                          compile=compile_, checkpoint=checkpoint)
    engine = SegmentationEngine.from_config(config)
    frames, masks = synthetic_frames(frames_n + warmup + 1, size)
    engine.add_stream("cam")
    for k in range(objects):
        engine.add_target("cam", MaskPrompt(masks[k]))
    engine.step("cam", frames[0])
    for i in range(1, warmup + 1):
        engine.step("cam", frames[i])
    dev = engine.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + 1, warmup + 1 + frames_n):
        sync(dev)
        start = time.perf_counter()
        engine.step("cam", frames[i])
        sync(dev)
        times.append(time.perf_counter() - start)
    gflop = None
    if not compile_:  # compiled kernels bypass the dispatcher the counter listens on
        with FlopCounterMode(display=False) as counter:
            engine.step("cam", frames[-1])
        gflop = counter.get_total_flops() / 1e9
    median = statistics.median(times)
    return {
        "model": model, "objects": objects, "compile": compile_, "ms": 1e3 * median, "fps": 1.0 / median,
        "peak_mb": torch.cuda.max_memory_allocated(dev) / 1e6 if dev.type == "cuda" else float("nan"),
        "gflop": gflop, "device": dev,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(PUBLISHED_A100_FPS))
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 4, 10])
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true", help="only the eager runs")
    parser.add_argument("--quick", action="store_true", help="hiera t, one object, 20 frames")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="official checkpoints, if present (speed does not depend on them)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.objects, args.frames, args.warmup = ["sam2.1_hiera_t"], [1], 20, 5
    compiles = [False] if args.no_compile else [False, True]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(device)
    print(f"# Engine frames/s on {name}, image size {args.image_size}, bf16 autocast on CUDA\n")
    print("| model | objects | compile | ms/frame | frames/s | GFLOP/frame | floor ms | peak MB | A100 paper fps | goal fps (x2.5) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models:
        checkpoint = None
        if args.checkpoint_dir:
            found = cached_checkpoint(model, args.checkpoint_dir)
            checkpoint = str(found) if found else None
        for objects in args.objects:
            gflop = None  # counted on the eager run; compiling does not change the arithmetic
            for compile_ in compiles:
                r = measure(model, args.image_size, objects, compile_, args.frames, args.warmup, args.device, checkpoint)
                gflop = r["gflop"] if r["gflop"] is not None else gflop
                paper = PUBLISHED_A100_FPS.get(model) if objects == 1 else None
                row = {"model": model, "objects": objects, "compile": compile_, "ms": r["ms"], "fps": r["fps"],
                       "gflop": gflop, "floor_ms": gflop / (peak * 1e3) if peak and gflop is not None else None,
                       "peak_mb": r["peak_mb"], "a100_paper_fps": paper,
                       "goal_fps": GOAL_FACTOR * paper if paper else None, "device": name}
                rows.append(row)
                print(f"| {model} | {objects} | {'yes' if compile_ else 'no'} | {r['ms']:.2f} | {r['fps']:.1f} | "
                      f"{_cell(gflop, 1)} | {_cell(row['floor_ms'], 2)} | {r['peak_mb']:.0f} | "
                      f"{_cell(paper, 1)} | {_cell(row['goal_fps'], 1)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "image_size": args.image_size, "rows": rows}, indent=2))
    return 0


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
