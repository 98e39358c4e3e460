"""Cost of test-time geometric alignment (refseg_ros.adapters.reference.cavsam.ttga): tuning a
target's FPN-neck copy, the per-frame cost of a TTGA target against a plain reference
target, and what frames cost while a job tunes beside them.

    python bench/ttga_cost.py                                   # sam2_hiera_t, 256, CPU, 20 steps
    python bench/ttga_cost.py --device cuda --size 1024 --steps 100

Random weights (the cost does not depend on them) and a synthetic clip (a disc on a
textured background; the example is frame 0's disc). Only `--steps` steps are run;
`tune_s_per_100_steps` scales the measured median step to 100 steps (the default run
length) and adds the measured setup (augmented views and their trunk passes);
`tune_s_per_100_steps_mean` does the same with the mean step (which counts the steps
other processes slowed down); `scaled_from_steps` says how many were measured. Prints
one JSON object (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "test"))  # the synthetic clip of the tests (test/support/clips.py)

from support.clips import moving_shapes  # noqa: E402
from refseg_ros.adapters.reference.cavsam.ttga import TtgaJob, TtgaTracker, TtgaTuner  # noqa: E402
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine  # noqa: E402


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def _load_average() -> list[float] | None:
    """The machine's 1, 5, 15 minute load: other processes make every number here noisy."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2_hiera_t")
    parser.add_argument("--size", type=int, default=256, help="model input side, pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="tuning steps run (scaled to 100 in the report)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8, help="frames timed per configuration")
    args = parser.parse_args(argv)

    engine = SegmentationEngine.from_config(EngineConfig(model=args.model, image_size=args.size,
                                                         device=args.device, seed=0))
    device = engine.device
    frames, masks = moving_shapes(args.frames + 1, args.size, seed=3)
    example = (frames[0], masks[0][1])

    # 1. tuning alone
    tuner = TtgaTuner(engine.model, [example], steps=args.steps, views=args.views, preprocess=engine.preprocess)
    ticks: list[float] = []  # when each step ended (float(loss) waits for the device)
    start = time.perf_counter()
    result = tuner.run(progress=lambda step, loss: ticks.append(time.perf_counter()))
    total_s = time.perf_counter() - start
    marks = [start + result.setup_seconds] + ticks
    step_s = [b - a for a, b in zip(marks, marks[1:])]
    per_step = statistics.median(step_s)

    # 2. per frame: a plain reference target, then a TTGA target (untuned neck), alone
    def frame_times(tracker: bool) -> list[float]:
        engine.reset()
        engine.add_stream("cam")
        if tracker:
            engine.add_tracked_target("cam", TtgaTracker(engine.model, [example], preprocess=engine.preprocess))
        else:
            engine.add_target("cam", MaskPrompt(example[1]), image=example[0])
        engine.step("cam", frames[1])  # the first frame pins a TTGA target's reference
        times = []
        for frame in frames[1:]:
            begin = time.perf_counter()
            engine.step("cam", frame)
            times.append(time.perf_counter() - begin)
        return times

    plain_s = frame_times(False)
    ttga_s = frame_times(True)

    # 3. frames of a plain target while a job tunes beside them
    engine.reset()
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(example[1]), image=example[0])
    job = TtgaJob(TtgaTuner(engine.model, [example], steps=args.steps, views=args.views,
                            preprocess=engine.preprocess)).start()
    busy_s = []
    i = 0
    while not job.done:
        begin = time.perf_counter()
        engine.step("cam", frames[1 + i % args.frames])
        busy_s.append(time.perf_counter() - begin)
        i += 1
    job.result()

    report = {
        "model": args.model, "size": args.size, "device": str(device), "torch_threads": torch.get_num_threads(),
        "steps_run": args.steps, "views": args.views,
        "tune_setup_s": result.setup_seconds, "tune_step_s": _quantiles(step_s), "tune_total_s": total_s,
        "tune_s_per_100_steps": result.setup_seconds + 100 * per_step,
        "tune_s_per_100_steps_mean": result.setup_seconds + 100 * statistics.mean(step_s),
        "scaled_from_steps": args.steps,
        "loss_first_last": [result.losses[0], result.losses[-1]],
        "frame_s_plain_reference_target": _quantiles(plain_s),
        "frame_s_ttga_target": _quantiles(ttga_s),
        "frame_s_plain_target_while_tuning": _quantiles(busy_s),
        "load_average": _load_average(),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
