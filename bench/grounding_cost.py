"""Cost of the grounding fallback for one detector folder: loading, one detection per
frame, and what `GroundingWorker.submit` costs the caller while detections run.

    python bench/grounding_cost.py MODEL_FOLDER                      # CPU, 640x480
    python bench/grounding_cost.py MODEL_FOLDER --device cuda --dtype float16 --frames 30

MODEL_FOLDER is what `save_pretrained` wrote for a Grounding DINO, MM-Grounding-DINO /
LLMDet or OWLv2 model and its processor. Frames are random noise of the given size:
the cost does not depend on what they show. Prints one JSON object (seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import numpy as np
import torch

from refseg_ros.adapters.grounding import GroundingDetector, GroundingWorker


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "min": ordered[0], "max": ordered[-1]}


def _load_average() -> list[float] | None:
    """The machine's 1, 5, 15 minute load: other processes make every number here noisy."""
    try:
        import os

        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    parser.add_argument("--size", type=_size, default=(480, 640), help="WIDTHxHEIGHT, pixels")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--caption", default="a cup")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    height, width = args.size
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(max(args.frames, 1))]

    start = time.perf_counter()
    detector = GroundingDetector.from_folder(args.folder, device=device, dtype=dtype)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    detector.detect(frames[0], args.caption)
    first_s = time.perf_counter() - start
    detect_s = []
    for frame in frames:
        start = time.perf_counter()
        detector.detect(frame, args.caption)
        detect_s.append(time.perf_counter() - start)

    submit_s: list[float] = []
    with GroundingWorker(detector) as worker:
        stop = threading.Event()

        def feed() -> None:  # keep the worker busy: a new request every 5 ms
            i = 0
            while not stop.is_set():
                begin = time.perf_counter()
                worker.submit("bench", frames[i % len(frames)], args.caption, float(i))
                submit_s.append(time.perf_counter() - begin)
                i += 1
                time.sleep(0.005)

        feeder = threading.Thread(target=feed)
        feeder.start()
        time.sleep(max(1.0, 3 * statistics.median(detect_s)))  # a few detections
        stop.set()
        feeder.join()
        skipped, completed = worker.skipped, worker.completed

    report = {
        "folder": args.folder, "family": detector.family.name, "device": str(device),
        "dtype": str(detector.dtype), "frame": f"{width}x{height}", "torch_threads": torch.get_num_threads(),
        "load_s": load_s, "first_detect_s": first_s, "detect_s": _quantiles(detect_s),
        "submit_s": _quantiles(submit_s), "worker": {"completed": completed, "skipped": skipped},
        "load_average": _load_average(),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
