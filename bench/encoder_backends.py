"""Encoder backends on this CPU: the image encoder's time and the whole engine step's, per
backend, as ratios to torch eager and to torch.compile, with parity to eager alongside.

Every backend runs in one process on the same weights (random, seed 0), the same frames
and the same target; frames are interleaved between the backends (each frame goes
through every backend before the next) and the medians of the timed frames are compared,
since these machines are noisy. Parity columns: the largest feature difference from eager
on the timed frames (relative to the largest |value|, as the build gate measures it) and
the mask pixels that differ from eager's over the run.

    python bench/encoder_backends.py                       # t and b+, 512 and 1024 (long)
    python bench/encoder_backends.py --models sam2.1_hiera_t --sizes 512 --frames 4   # quick
    python bench/encoder_backends.py --backends eager onnxruntime openvino            # no compile

Threads: --threads (default 2, as the node gives the model on a 3-core robot, and what
ORT and OpenVINO are given too). Builds go to the weights cache ($REFSEG_WEIGHTS), as
the node's do; the first run of a size pays them (printed on stderr).
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

from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine

BACKENDS = ("eager", "compile", "onnxruntime", "openvino")
EXTRA = ("openvino-bf16",)  # opt-in reduced precision: not in the default run


def frames_and_mask(size: int, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A 640x480 camera clip of a red disc moving over a textured background (the engine
    resizes to `size`), and the disc's mask on the first frame."""
    rng = np.random.default_rng(0)
    h, w = 480, 640
    background = np.kron(rng.integers(30, 120, (h // 16, w // 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    frames, first = [], None
    for t in range(count):
        disc = (xx - 200 - 6 * t) ** 2 + (yy - 240) ** 2 < 60 ** 2
        frame = background.copy()
        frame[disc] = (220, 40, 40)
        frames.append(frame)
        first = disc if first is None else first
    return frames, first


def build(backend: str, model: str, size: int) -> SegmentationEngine:
    """An engine whose plain pass runs on `backend` (eager and compile: torch;
    RUNTIME-PRECISION: that runtime at that encoder precision)."""
    runtime, _, precision = backend.partition("-")
    config = EngineConfig(model=model, image_size=size, device="cpu", seed=0,
                          compile=backend == "compile",
                          encoder_backend=runtime if backend not in ("eager", "compile") else "torch",
                          encoder_precision=precision or "fp32")
    return SegmentationEngine.from_config(config)


def run(model: str, size: int, backends: list[str], frames: int, warmup: int) -> dict:
    """Time the encoder and the step per backend, interleaved; medians and parity."""
    clip, mask = frames_and_mask(size, warmup + frames)
    engines = {}
    for backend in backends:
        start = time.monotonic()
        engines[backend] = build(backend, model, size)
        print(f"  {model} {size} {backend}: ready in {time.monotonic() - start:.0f} s "
              f"({engines[backend].encoder.description})", file=sys.stderr, flush=True)
        engines[backend].add_stream("cam")
        engines[backend].add_target("cam", MaskPrompt(mask), image=clip[0], target_id=1)
    encode = {b: [] for b in backends}
    step = {b: [] for b in backends}
    worst = {b: 0.0 for b in backends}
    pixels = {b: 0 for b in backends}
    for index, frame in enumerate(clip):
        order = backends[index % len(backends):] + backends[:index % len(backends)]  # rotate who goes first
        features, masks = {}, {}
        for backend in order:
            engine = engines[backend]
            with torch.inference_mode():
                image = engine.preprocess(frame)
                t0 = time.perf_counter()
                features[backend] = engine.encoder.encode(image)[0]
                t1 = time.perf_counter()
            result = engine.step("cam", frame)
            t2 = time.perf_counter()
            masks[backend] = result.targets[0].mask
            if index >= warmup:
                encode[backend].append(t1 - t0)
                step[backend].append(t2 - t1)
        if index >= warmup and "eager" in features:
            ref = features["eager"]
            for backend in backends:
                got = features[backend]
                for a, b in zip(ref.vision_feats + ref.trunk, got.vision_feats + got.trunk):
                    worst[backend] = max(worst[backend], float((a.float() - b.float()).abs().max() / a.abs().max()))
                pixels[backend] += int((masks[backend] != masks["eager"]).sum())
    return {"model": model, "size": size, "frames": frames,
            "encode": {b: statistics.median(v) for b, v in encode.items()},
            "step": {b: statistics.median(v) for b, v in step.items()},
            "feature_diff": worst, "mask_pixels": pixels}


def table(rows: list[dict], backends: list[str]) -> str:
    """One markdown table: per (model, size, backend) the medians and their ratios."""
    lines = ["| model | size | backend | encoder s | step s | encoder / eager | step / eager | "
             "encoder / compile | step / compile | feature diff vs eager | mask px vs eager |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        enc, stp = row["encode"], row["step"]
        for backend in backends:
            def ratio(values: dict, base: str, backend: str = backend) -> str:
                return f"{values[backend] / values[base]:.2f}" if base in values else "-"
            lines.append(f"| {row['model']} | {row['size']} | {backend} | {enc[backend]:.3f} | {stp[backend]:.3f} | "
                         f"{ratio(enc, 'eager')} | {ratio(stp, 'eager')} | {ratio(enc, 'compile')} | "
                         f"{ratio(stp, 'compile')} | {row['feature_diff'][backend]:.1e} | "
                         f"{row['mask_pixels'][backend]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sam2.1_hiera_t", "sam2.1_hiera_b+"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS + EXTRA)
    parser.add_argument("--frames", type=int, default=8, help="timed frames per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames first (compilation happens here)")
    parser.add_argument("--threads", type=int, default=2, help="torch (and runtime) intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backends = list(dict.fromkeys(["eager"] + args.backends))  # eager: the reference
    rows = []
    for model in args.models:
        for size in args.sizes:
            rows.append(run(model, size, backends, args.frames, args.warmup))
            if args.json:
                args.json.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"# Encoder backends on the CPU, {args.threads} threads, medians of {args.frames} interleaved frames "
          f"(after {args.warmup}); step: the whole engine step with one target")
    print(table(rows, backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
