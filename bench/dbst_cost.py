"""Seconds per DBST transition set (refseg_ros.adapters.reference.cavsam.dbst): the N frames between
a reference image and the current frame.

    python bench/dbst_cost.py                                   # tiny random pipeline, CPU
    python bench/dbst_cost.py --pipeline SD21_FOLDER --device cuda --dtype float16

Without --pipeline, a tiny random-weight Stable Diffusion pipeline (the one the tests
build, test/support/tiny_models.py: 32 x 32 pixels, 4 x 16 x 16 latents) is saved to a temporary
folder and loaded back; its numbers show the method's overheads, not a real model's cost.
With --pipeline, a local diffusers folder (e.g. Stable Diffusion 2.1 base) is loaded.
Images are random noise of the given size: the cost does not depend on what they show.

Timed, in seconds: loading; a first transition set (both LoRA fits, both inversions, N
frames); then --repeats sets with a new current frame and the cached reference, split
into the current frame's fit (LoRA + inversion) and the rendering of the N frames.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from refseg_ros.adapters.reference.cavsam.dbst import (  # noqa: E402
    CURRENT, TransitionConfig, TransitionGenerator, load_pipeline)


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_average() -> list[float] | None:
    """The machine's 1, 5, 15 minute load: other processes make every number here noisy."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=None, help="a local Stable Diffusion folder (default: tiny random)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    parser.add_argument("--size", type=_size, default=(480, 640), help="WIDTHxHEIGHT of the images, pixels")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--inversion-steps", type=int, default=20)
    parser.add_argument("--lora-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="sets timed with the reference cached")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on busy 2-core machines more threads spin against each other)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    height, width = args.size
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.pipeline
        if folder is None:
            sys.path.insert(0, str(HERE.parent / "test"))
            from support.tiny_models import save_tiny_pipeline

            folder = save_tiny_pipeline(Path(scratch) / "tiny_sd")
        start = time.perf_counter()
        pipeline = load_pipeline(folder, device, dtype)
        _sync(device)
        load_s = time.perf_counter() - start

        config = TransitionConfig(frames=args.frames, inversion_steps=args.inversion_steps,
                                  lora_steps=args.lora_steps)
        generator = TransitionGenerator(pipeline, config)
        reference = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

        start = time.perf_counter()
        frames = generator.generate(reference, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        _sync(device)
        first_s = time.perf_counter() - start

        fit_s, render_s, total_s = [], [], []
        for _ in range(max(0, args.repeats)):
            target = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            start = time.perf_counter()
            first = generator.fit_reference(reference)  # cached
            second = generator.fit(target, CURRENT)
            _sync(device)
            fitted = time.perf_counter()
            generator.render(first, second, target.shape[:2])
            _sync(device)
            done = time.perf_counter()
            fit_s.append(fitted - start)
            render_s.append(done - fitted)
            total_s.append(done - start)

    resolution = generator.resolution
    unet_passes = dict(lora_train=2 * config.lora_steps, inversion=2 * config.inversion_steps,
                       sampling=config.frames * config.inversion_steps)
    report = {
        "pipeline": str(args.pipeline) if args.pipeline else "tiny random (test/adapters/test_dbst.py)",
        "device": str(device), "dtype": str(pipeline.unet.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "load_average": _load_average(),
        "image_size_hw": [height, width], "pipeline_resolution_hw": list(resolution),
        "frames": config.frames, "inversion_steps": config.inversion_steps, "lora_steps": config.lora_steps,
        "lora_rank": config.lora_rank, "unet_passes_first_set": unet_passes,
        "frames_returned": len(frames),
        "load_s": round(load_s, 3),
        "first_set_s": round(first_s, 3),
        "cached_reference_set_s": round(statistics.median(total_s), 3) if total_s else None,
        "current_fit_s": round(statistics.median(fit_s), 3) if fit_s else None,
        "render_s": round(statistics.median(render_s), 3) if render_s else None,
        "render_per_frame_s": round(statistics.median(render_s) / config.frames, 4) if render_s else None,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
