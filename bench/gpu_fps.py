"""Frames per second of the engine on a GPU: models x objects x cameras x backend, one table.

Runs on a GPU machine without network access. The engine needs sam2 and its pure-Python
dependencies beside the machine's own torch (with CUDA): either the wheels made by
`bash bench/make_wheelhouse.sh DIR` (`pip install --no-index --no-deps DIR/*.whl`), or a
folder holding those packages on PYTHONPATH. Then:

    python bench/gpu_fps.py                        # hiera t and b+, 1/4 objects, 1/4 cameras,
                                                   # eager and compiled, 1024 px (< 8 min on an H200)
    python bench/gpu_fps.py --models sam2.1_hiera_t --objects 1 --cameras 1 --backends eager
    python bench/gpu_fps.py --backends eager onnxruntime tensorrt --encoder-precision fp16

Backends: eager and compile run the whole engine on torch; onnxruntime and tensorrt run
the plain image-encoder pass on ONNX Runtime (CUDA provider; TensorRT provider), the rest
on torch (docs/ENGINE.md, "Encoder backends"). A backend this machine cannot run (no
onnxruntime-gpu, no TensorRT) gets one row saying "unavailable: <reason>".

One engine is built per (model, backend) and serves every (objects, cameras) row, so a
compiled model is compiled once. A row's "tick" is one frame from every camera, each
camera stepped in turn (one encoder call each); "cost vs
1 camera" is a tick's time over the 1-camera tick's time at the same objects. A camera
count in --batched-cameras (default 4) gets a second row, "N batched": the tick as one
`engine.step_many` call, the cameras' encoder passes batched into one (goal: 4 cameras
<= 2.5x one camera).

Prints a Markdown table: ms per tick, frames/s per camera and in all, peak memory, FLOPs
per camera frame and the compute floor of a tick (FLOPs / the GPU's dense bf16 peak), beside SAM2's
published A100 figures (one object, one camera, compiled). With --json the rows are also
written there after each row, so a run cut short keeps what it measured.
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

from refseg_ros.engine import EncoderBackendError, EngineConfig, MaskPrompt, SegmentationEngine
from refseg_ros.engine.weights import cached_checkpoint

# SAM2.1 paper/README: A100, compiled, one object, 1024 px.
PUBLISHED_A100_FPS = {"sam2.1_hiera_t": 91.2, "sam2.1_hiera_s": 84.8, "sam2.1_hiera_b+": 64.1, "sam2.1_hiera_l": 39.5}
GOAL_FACTOR = 2.5
# Dense bf16 tensor-core peaks (TFLOP/s), for the compute floor.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
BACKENDS = ("eager", "compile", "onnxruntime", "tensorrt")


def peak_tflops(device: torch.device) -> float | None:
    """Dense bf16 peak of a known CUDA device in TFLOP/s; None for the CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def synthetic_frames(n: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`n` uint8 (size, size, 3) frames of moving discs on noise; boolean masks of the 10 discs on frame 0."""
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
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_engine(model: str, size: int, backend: str, device: str, checkpoint: str | None,
                 encoder_precision: str = "fp32") -> SegmentationEngine:
    """One engine for every row of a (model, backend) pair; `backend` is one of BACKENDS.
    Raises EncoderBackendError for a runtime backend this machine cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of {BACKENDS}")
    runtime = backend in ("onnxruntime", "tensorrt")
    # Every frame is written to memory, as SAM2 does: with random weights the presence head
    # would otherwise decide how many memories a target attends to, and so the FLOPs.
    config = EngineConfig(model=model, image_size=size, device=device, precision="auto",
                          compile=backend == "compile", checkpoint=checkpoint, keep_memory_when_absent=False,
                          encoder_backend=backend if runtime else "torch",
                          encoder_precision=encoder_precision if runtime else "fp32")
    return SegmentationEngine.from_config(config)


def measure(engine: SegmentationEngine, frames: list[np.ndarray], masks: list[np.ndarray], objects: int,
            cameras: int, ticks: int, warmup: int, count_flops: bool, tag: str, batched: bool = False) -> dict:
    """Median seconds per tick (one frame from each of `cameras` streams, `objects` targets each);
    `batched`: each tick is one `engine.step_many` call (one encoder call for the cameras).

    Streams are added for this row and removed after it. FLOPs (of one camera's frame) are
    counted on an eager engine only: compiled kernels bypass the dispatcher the counter hears.
    """
    streams = [f"{tag}-cam{c}" for c in range(cameras)]
    for stream in streams:
        engine.add_stream(stream)
        for k in range(objects):
            engine.add_target(stream, MaskPrompt(masks[k]))
        engine.step(stream, frames[0])
    for i in range(1, warmup + 1):
        for stream in streams:
            engine.step(stream, frames[i])
    dev = engine.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + 1, warmup + 1 + ticks):
        sync(dev)
        start = time.perf_counter()
        if batched:
            engine.step_many([(stream, frames[i], 0.0) for stream in streams])
        else:
            for stream in streams:
                engine.step(stream, frames[i])
        sync(dev)
        times.append(time.perf_counter() - start)
    gflop = None
    if count_flops:
        with FlopCounterMode(display=False) as counter:
            engine.step(streams[0], frames[-1])
        gflop = counter.get_total_flops() / 1e9
    peak_mb = torch.cuda.max_memory_allocated(dev) / 1e6 if dev.type == "cuda" else float("nan")
    for stream in streams:
        engine.remove_stream(stream)
    return {"tick_s": statistics.median(times), "gflop": gflop, "peak_mb": peak_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sam2.1_hiera_t", "sam2.1_hiera_b+"],
                        choices=list(PUBLISHED_A100_FPS))
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--cameras", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--batched-cameras", nargs="*", type=int, default=[4],
                        help="camera counts (of --cameras) that also get a batched row (step_many)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=50, help="timed ticks per row")
    parser.add_argument("--warmup", type=int, default=15, help="untimed ticks per row (compilation happens here)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--encoder-precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="precision of the onnxruntime / tensorrt encoder (opt-in fp16, bf16: tensorrt)")
    parser.add_argument("--no-compile", action="store_true", help="eager only (same as --backends eager)")
    parser.add_argument("--quick", action="store_true", help="hiera t, one object, one camera, 20 frames")
    parser.add_argument("--json", type=Path, help="also write the rows here (after each row)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="official checkpoints, if present (speed does not depend on them)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.objects, args.cameras, args.frames, args.warmup = ["sam2.1_hiera_t"], [1], [1], 20, 5
    if args.no_compile:
        args.backends = ["eager"]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(device)
    print(f"# Engine frames/s on {name}, image size {args.image_size}, bf16 autocast on CUDA, "
          f"torch {torch.__version__}\n")
    print("| model | backend | objects | cameras | ms/tick | frames/s per camera | frames/s in all | "
          "cost vs 1 camera | GFLOP/frame | floor ms | peak MB | A100 paper fps | goal fps (x2.5) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    frames, masks = synthetic_frames(args.frames + args.warmup + 1, args.image_size)
    if max(args.objects) > len(masks):
        parser.error(f"at most {len(masks)} objects")
    for model in args.models:
        checkpoint = None
        if args.checkpoint_dir:
            found = cached_checkpoint(model, args.checkpoint_dir)
            checkpoint = str(found) if found else None
        gflops: dict[int, float] = {}  # counted on the eager engine; compiling does not change the arithmetic
        for backend in args.backends:
            start = time.perf_counter()
            try:
                engine = build_engine(model, args.image_size, backend, args.device, checkpoint,
                                      args.encoder_precision)
            except EncoderBackendError as exc:
                reason = str(exc).replace("|", "/").replace("\n", " ")
                print(f"| {model} | {backend} | - | - | unavailable: {reason} |" + " - |" * 8, flush=True)
                rows.append({"model": model, "backend": backend, "unavailable": str(exc), "device": name})
                if args.json:
                    args.json.write_text(json.dumps({"device": name, "image_size": args.image_size,
                                                     "torch": torch.__version__, "rows": rows}, indent=2))
                continue
            # the encoder backends change only the per-frame pass: their rows at the first object count only
            for objects in args.objects if backend in ("eager", "compile") else args.objects[:1]:
                one_camera_s = None
                for cameras, batched in [(c, b) for c in args.cameras
                                         for b in (False, True) if not b or (c > 1 and c in args.batched_cameras)]:
                    r = measure(engine, frames, masks, objects, cameras, args.frames, args.warmup,
                                count_flops=backend == "eager", tag=f"{objects}x{cameras}{'b' * batched}",
                                batched=batched)
                    if r["gflop"] is not None:
                        gflops[objects] = r["gflop"]
                    gflop = gflops.get(objects)
                    one_camera_s = r["tick_s"] if cameras == 1 else one_camera_s
                    paper = PUBLISHED_A100_FPS.get(model) if objects == 1 and cameras == 1 else None
                    row = {"model": model, "backend": backend, "objects": objects, "cameras": cameras,
                           "batched": batched,
                           "ms": 1e3 * r["tick_s"], "fps_per_camera": 1.0 / r["tick_s"],
                           "fps_total": cameras / r["tick_s"],
                           "cost_vs_1_camera": r["tick_s"] / one_camera_s if one_camera_s else None,
                           "gflop": gflop, "floor_ms": cameras * gflop / peak if peak and gflop else None,
                           "peak_mb": r["peak_mb"], "a100_paper_fps": paper,
                           "goal_fps": GOAL_FACTOR * paper if paper else None, "device": name}
                    rows.append(row)
                    print(f"| {model} | {backend} | {objects} | {cameras}{' batched' * batched} | {row['ms']:.2f} | "
                          f"{row['fps_per_camera']:.1f} | {row['fps_total']:.1f} | "
                          f"{_cell(row['cost_vs_1_camera'], 2)} | {_cell(gflop, 1)} | {_cell(row['floor_ms'], 2)} | "
                          f"{r['peak_mb']:.0f} | {_cell(paper, 1)} | {_cell(row['goal_fps'], 1)} |", flush=True)
                    if args.json:
                        args.json.write_text(json.dumps({"device": name, "image_size": args.image_size,
                                                         "torch": torch.__version__, "rows": rows}, indent=2))
            print(f"<!-- {model} {backend}: built and measured in {time.perf_counter() - start:.0f} s -->",
                  file=sys.stderr, flush=True)
            del engine
            SegmentationEngine.release_device_memory()
    return 0


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
