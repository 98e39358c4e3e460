"""What several cameras cost against one: a tick stepped camera after camera vs as one batch.

A tick is one frame from every camera, all of its targets segmented. Three ways are timed
side by side in one run, on one engine (one model, the same weights), ticks interleaved
and their order rotated so that the machine's drift reaches all three alike:

- 1 camera: `engine.step` on one stream;
- N cameras, sequential: `engine.step` on each of N streams in turn (one encoder call each);
- N cameras, batched: `engine.step_many` on the N streams (one encoder call for all).

Printed: median ms per tick and the ratios (N cameras / 1 camera, batched / sequential).

    python bench/multi_camera.py                    # hiera t and b+, 512 px, 2 torch threads, 4 cameras
    python bench/multi_camera.py --quick            # hiera t, 128 px, a smoke check
    python bench/multi_camera.py --device cuda --image-size 1024 --threads 0
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

from gpu_fps import sync, synthetic_frames
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine


def build_engine(model: str, size: int, device: str) -> SegmentationEngine:
    """Random weights; every frame written to memory, as SAM2 does (the presence head of a
    random model would otherwise decide how much memory attention costs)."""
    return SegmentationEngine.from_config(EngineConfig(model=model, image_size=size, device=device,
                                                       keep_memory_when_absent=False))


def measure(engine: SegmentationEngine, frames: list[np.ndarray], masks: list[np.ndarray], cameras: int,
            objects: int, ticks: int, warmup: int) -> dict[str, float]:
    """Median seconds per tick of the three ways (keys "one", "sequential", "batched")."""
    groups = {"one": ["one"], "sequential": [f"seq{c}" for c in range(cameras)],
              "batched": [f"bat{c}" for c in range(cameras)]}
    for streams in groups.values():
        for stream in streams:
            engine.add_stream(stream)
            for k in range(objects):
                engine.add_target(stream, MaskPrompt(masks[k]))

    def tick(way: str, i: int) -> float:
        # camera c sees the clip c frames on: the cameras' frames differ
        items = [(s, frames[(i + c) % len(frames)], float(i)) for c, s in enumerate(groups[way])]
        sync(engine.device)
        start = time.perf_counter()
        if way == "batched":
            engine.step_many(items)
        else:
            for stream, frame, stamp in items:
                engine.step(stream, frame, stamp)
        sync(engine.device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {way: [] for way in groups}
    ways = list(groups)
    for i in range(warmup + ticks):
        order = ways[i % 3:] + ways[:i % 3]
        for way in order:
            elapsed = tick(way, i)
            if i >= warmup:
                times[way].append(elapsed)
    for streams in groups.values():
        for stream in streams:
            engine.remove_stream(stream)
    return {way: statistics.median(t) for way, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sam2.1_hiera_t", "sam2.1_hiera_b+"])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--objects", type=int, default=1, help="targets per camera")
    parser.add_argument("--ticks", type=int, default=8, help="timed ticks per way")
    parser.add_argument("--warmup", type=int, default=2, help="untimed ticks per way (the prompts' frame first)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="hiera t, 128 px, 3 ticks")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.image_size, args.ticks, args.warmup = ["sam2.1_hiera_t"], 128, 3, 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    frames, masks = synthetic_frames(16, args.image_size)
    if args.objects > len(masks):
        parser.error(f"at most {len(masks)} objects")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    n = args.cameras
    print(f"# {n} cameras vs 1, sequential vs batched encoder call ({name}, image size {args.image_size}, "
          f"{args.objects} object(s) per camera, median of {args.ticks} interleaved ticks, "
          f"torch {torch.__version__})\n")
    print(f"| model | 1 camera ms | {n} sequential ms | {n} batched ms | sequential / 1 | batched / 1 | "
          "batched / sequential |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models:
        engine = build_engine(model, args.image_size, args.device)
        t = measure(engine, frames, masks, n, args.objects, args.ticks, args.warmup)
        row = {"model": model, "cameras": n, "one_ms": 1e3 * t["one"], "sequential_ms": 1e3 * t["sequential"],
               "batched_ms": 1e3 * t["batched"], "sequential_vs_one": t["sequential"] / t["one"],
               "batched_vs_one": t["batched"] / t["one"], "batched_vs_sequential": t["batched"] / t["sequential"]}
        rows.append(row)
        print(f"| {model} | {row['one_ms']:.0f} | {row['sequential_ms']:.0f} | {row['batched_ms']:.0f} | "
              f"{row['sequential_vs_one']:.2f} | {row['batched_vs_one']:.2f} | {row['batched_vs_sequential']:.3f} |",
              flush=True)
        del engine
        SegmentationEngine.release_device_memory()
    if args.json:
        args.json.write_text(json.dumps({"device": name, "image_size": args.image_size, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
