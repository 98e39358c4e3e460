"""Engine vs sam2's own video predictor: time per frame, retained memory, scaling, FLOPs.

Every comparison is measured side by side in one run (frames interleaved between the two
implementations) and printed as a ratio, since these machines are noisy.

    python bench/engine_bench.py            # full run (several minutes on 2 CPU cores)
    python bench/engine_bench.py --quick    # small sizes, for a smoke check
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

from refseg_ros.engine import BoxPrompt, EngineConfig, MaskPrompt, SegmentationEngine
from refseg_ros.engine.official import OfficialPrompt, official_predictor, propagate, start_official, state_nbytes
from refseg_ros.eval.synthetic import generate


def clip(num_frames: int, size: int):
    seq = generate(num_frames=num_frames, height=size, width=size, seed=0)
    return seq.frames, seq.masks


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _prompts(masks, n_objects: int):
    """Object 1 by mask, then boxes and masks alternately, all on frame 0."""
    ids = sorted(masks[0])[:n_objects]
    while len(ids) < n_objects:
        ids.append(ids[len(ids) % 3])
    engine_prompts, official_prompts = [], []
    for k, oid in enumerate(ids, start=1):
        if k % 2 == 0:
            engine_prompts.append(BoxPrompt(_box(masks[0][oid])))
            official_prompts.append(OfficialPrompt(k, 0, box=_box(masks[0][oid])))
        else:
            engine_prompts.append(MaskPrompt(masks[0][oid]))
            official_prompts.append(OfficialPrompt(k, 0, mask=masks[0][oid]))
    return engine_prompts, official_prompts


def make_engine(size: int, **kw) -> SegmentationEngine:
    return SegmentationEngine.from_config(EngineConfig(image_size=size, device="cpu", **kw))


def paired_run(size: int, n_objects: int, num_frames: int):
    """An engine and the official predictor on the same weights, clip and prompts.

    Returns the engine (its stream "cam" prompted), the predictor's frame generator and
    the decoded frames both consume.
    """
    frames, masks = clip(num_frames, size)
    engine = make_engine(size, keep_memory_when_absent=False)
    predictor = official_predictor(engine.model, engine.config.model, size)
    ours, theirs = _prompts(masks, n_objects)
    state, decoded = start_official(predictor, frames, theirs)
    engine.add_stream("cam")
    for prompt in ours:
        engine.add_target("cam", prompt)
    return engine, propagate(predictor, state), decoded, state


def per_frame_time(size: int, n_objects: int, frames_n: int) -> dict:
    """Median seconds per tracked frame, engine and official interleaved frame by frame."""
    engine, official, decoded, _ = paired_run(size, n_objects, frames_n + 1)
    engine.step("cam", decoded[0])
    next(official)  # the prompt frame
    t_engine, t_official = [], []
    for index in range(1, frames_n + 1):
        start = time.perf_counter()
        engine.step("cam", decoded[index])
        t_engine.append(time.perf_counter() - start)
        start = time.perf_counter()
        next(official)
        t_official.append(time.perf_counter() - start)
    e, o = statistics.median(t_engine), statistics.median(t_official)
    return {"objects": n_objects, "size": size, "frames": frames_n, "engine_s": e, "official_s": o, "ratio": e / o}


def retained_memory(size: int, counts: list[int]) -> dict:
    """Tensor bytes each implementation keeps after each frame count, one object."""
    last = max(counts)
    engine, official, decoded, state = paired_run(size, 1, last)
    out = {"size": size, "engine": {}, "official": {}, "official_outputs": {}}
    for index in range(last):
        engine.step("cam", decoded[index])
        next(official)
        if index + 1 in counts:
            out["engine"][index + 1] = engine.retained_bytes()
            out["official"][index + 1] = state_nbytes(state)
            # What it accumulates per frame: the state less the video it preloads whole (the
            # cached frame features hold a view of that video, so they go too).
            outputs = {k: v for k, v in state.items() if k not in ("images", "cached_features")}
            out["official_outputs"][index + 1] = state_nbytes(outputs)
    return out


def scaling(size: int, frames_n: int) -> dict:
    """Median step time with 1/4/10 targets on one stream, and 1/2/4 streams of one target."""
    frames, masks = clip(frames_n + 1, size)
    result = {"size": size, "targets": {}, "streams": {}}
    for n_targets in (1, 4, 10):
        engine = make_engine(size)
        engine.add_stream("cam")
        for prompt in _prompts(masks, n_targets)[0]:
            engine.add_target("cam", prompt)
        engine.step("cam", frames[0])
        times = [_timed(engine.step, "cam", frames[i]) for i in range(1, frames_n + 1)]
        result["targets"][n_targets] = statistics.median(times)
    for n_streams in (1, 2, 4):
        engine = make_engine(size)
        names = [f"cam{k}" for k in range(n_streams)]
        for name in names:
            engine.add_stream(name)
            engine.add_target(name, MaskPrompt(masks[0][1]))
            engine.step(name, frames[0])
        times = []
        for i in range(1, frames_n + 1):
            start = time.perf_counter()
            for name in names:
                engine.step(name, frames[i])
            times.append(time.perf_counter() - start)
        result["streams"][n_streams] = statistics.median(times)
    return result


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def flops_per_frame(size: int, n_objects: int) -> dict:
    """Exact FLOPs of one tracking frame (frame 3), engine vs official, plus the encoder's."""
    engine, official, decoded, _ = paired_run(size, n_objects, 4)
    for index in range(3):
        engine.step("cam", decoded[index])
        next(official)
    with FlopCounterMode(display=False) as ours_count:
        engine.step("cam", decoded[3])
    with FlopCounterMode(display=False) as theirs_count:
        next(official)
    with FlopCounterMode(display=False) as encoder_count, torch.inference_mode():
        engine.model.forward_image(engine.preprocess(decoded[3]))
    e, o = ours_count.get_total_flops(), theirs_count.get_total_flops()
    return {"objects": n_objects, "size": size, "engine_flops": e, "official_flops": o,
            "encoder_flops": encoder_count.get_total_flops(), "ratio": e / o}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few frames")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    size, frames_n = (128, 4) if args.quick else (512, 12)
    mem_size, mem_counts = (64, [20, 60]) if args.quick else (128, [60, 2000])
    results: dict = {"speed": [], "flops": []}
    print(f"# Engine vs official SAM2VideoPredictor (CPU, {torch.get_num_threads()} threads)\n")
    print(f"## Time per tracked frame, image size {size}, median of {frames_n} interleaved frames\n")
    print("| objects | engine ms | official ms | ratio |\n|---|---|---|---|")
    for n in (1, 3):
        r = per_frame_time(size, n, frames_n)
        results["speed"].append(r)
        print(f"| {n} | {1e3 * r['engine_s']:.1f} | {1e3 * r['official_s']:.1f} | {r['ratio']:.3f} |", flush=True)
    print(f"\n## FLOPs per tracked frame (torch.utils.flop_counter), image size {size}\n")
    print("| objects | engine GFLOP | official GFLOP | ratio | image encoder GFLOP |\n|---|---|---|---|---|")
    for n in (1, 3):
        r = flops_per_frame(size, n)
        results["flops"].append(r)
        print(f"| {n} | {r['engine_flops'] / 1e9:.3f} | {r['official_flops'] / 1e9:.3f} | {r['ratio']:.4f} | "
              f"{r['encoder_flops'] / 1e9:.3f} |", flush=True)
    one, three = results["flops"]
    extra = three["engine_flops"] - one["engine_flops"]
    print(f"\nTwo more objects add {extra / 1e9:.3f} GFLOP, less than one encoder pass "
          f"({one['encoder_flops'] / 1e9:.3f}): the encoder runs once per frame.")
    print(f"\n## Retained tensor memory, one object, image size {mem_size}\n")
    mem = retained_memory(mem_size, mem_counts)
    results["memory"] = mem
    print("| frames | engine MB | official MB (all) | official MB (its per-frame outputs only) |\n|---|---|---|---|")
    for count in mem_counts:
        print(f"| {count} | {mem['engine'][count] / 1e6:.3f} | {mem['official'][count] / 1e6:.3f} | "
              f"{mem['official_outputs'][count] / 1e6:.3f} |")
    a, b = mem_counts
    print(f"\nEngine growth {mem['engine'][b] - mem['engine'][a]} bytes from frame {a} to {b}; "
          f"official growth {(mem['official'][b] - mem['official'][a]) / 1e6:.1f} MB, on top of the whole "
          f"video it loads up front.")
    scale_size = 128 if args.quick else 256
    sc = scaling(scale_size, frames_n)
    results["scaling"] = sc
    print(f"\n## Scaling, image size {scale_size}, median ms per frame\n")
    print("| targets on 1 stream | ms | vs 1 |\n|---|---|---|")
    for n, t in sc["targets"].items():
        print(f"| {n} | {1e3 * t:.1f} | {t / sc['targets'][1]:.2f} |")
    print("\n| streams of 1 target (all stepped) | ms | vs 1 |\n|---|---|---|")
    for n, t in sc["streams"].items():
        print(f"| {n} | {1e3 * t:.1f} | {t / sc['streams'][1]:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
