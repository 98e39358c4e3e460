"""Per-frame cost of an FSSAM reference target against the engine's plain reference target,
on the same frames, in one run (random weights; the cost does not depend on them).

    python bench/fssam_cost.py                                   # CPU, sam2_hiera_t, tiny DINOv2
    python bench/fssam_cost.py --model sam2_hiera_s --dino vitb14 --frames 3   # FSSAM's sizes
    python bench/fssam_cost.py --size 640x480 --own             # also FSSAM's own SAM2 pass

Three engines on one SAM2 at 512 (FSSAM's input size), stepped in turn on every frame:
- plain: one reference target taught by a mask on the support image (SAM2's own tracking);
- fssam: one `FssamTracker` target on the same support (the engine's shared plain pass);
- own (with --own): the same with `query_features="own"` (FSSAM's own SAM2 pass).
Reported per frame (median and minimum over the frames after a warm-up frame, seconds): the whole
step, and the target's own part (plain: the engine's memory attention + decode + memory
write, `_track_group`; FSSAM: `FssamTracker.track`); the ratio FSSAM / plain of both;
the one-off support work (plain: `add_target` with the image; FSSAM: the tracker's
construction), and DINOv2's share of the FSSAM part. With a frame that is not 512 x 512
and --own, also how far the shared pass moves FSSAM's output (the engine's resize is not
FSSAM's; random weights, so only a scale). Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from refseg_ros.adapters.reference.dino import build_dinov2
from refseg_ros.adapters.reference.fssam.segmenter import IMAGE_SIZE, FssamOptions, FssamSegmenter
from refseg_ros.adapters.reference.fssam.tracker import FssamTracker
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine
from refseg_ros.engine.model import build_model

TINY_DINO = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2)


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


class Timer:
    """Wraps a bound method and records the seconds of each call."""

    def __init__(self, owner, name: str):
        self.seconds: list[float] = []
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - start)

        setattr(owner, name, timed)

    def take(self) -> float:
        total = sum(self.seconds)
        self.seconds.clear()
        return total


def _engine(model, device: str) -> SegmentationEngine:
    engine = SegmentationEngine(model, EngineConfig(image_size=IMAGE_SIZE, device=device), random_weights=True)
    engine.add_stream("cam")
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2_hiera_t", help="SAM2 config (FSSAM's checkpoints: sam2_hiera_s)")
    parser.add_argument("--dino", choices=("tiny", "vitb14"), default="tiny",
                        help="tiny: width 32, 1 layer; vitb14: FSSAM's ViT-B/14")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8,
                        help="timed frames, one more as warm-up (the plain target's memory is full, "
                             "1 conditioning + 6 recent frames, from the 7th frame on)")
    parser.add_argument("--size", type=_size, default=(IMAGE_SIZE, IMAGE_SIZE), help="frame WIDTHxHEIGHT")
    parser.add_argument("--own", action="store_true", help="also time FSSAM's own SAM2 pass per frame")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, image_size=IMAGE_SIZE, device=args.device).eval()
    dino = build_dinov2(**(TINY_DINO if args.dino == "tiny" else {})).to(args.device)
    segmenter = FssamSegmenter(model, dino, FssamOptions())

    rng = np.random.default_rng(0)
    supports, labels = [], []
    for _ in range(args.shots):
        image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        label = np.zeros((480, 640), np.uint8)
        label[120:360, 200:440] = 1
        supports.append(image)
        labels.append(label)
    height, width = args.size
    frames = rng.integers(0, 256, size=(args.frames + 1, height, width, 3), dtype=np.uint8)

    plain = _engine(model, args.device)
    start = time.perf_counter()
    plain.add_target("cam", MaskPrompt(labels[0] == 1), label="plain", image=supports[0])
    for image, label in zip(supports[1:], labels[1:]):
        plain.add_reference("cam", 1, MaskPrompt(label == 1), image)
    plain_setup = time.perf_counter() - start
    plain_part = Timer(plain, "_track_group")

    engines = {"plain": plain}
    parts = {"plain": plain_part}
    setups = {"plain": plain_setup}
    trackers = {}
    for mode in ("shared", "own") if args.own else ("shared",):
        name = "fssam" if mode == "shared" else "fssam_own"
        start = time.perf_counter()
        tracker = FssamTracker.from_segmenter(segmenter, supports, labels, query_features=mode)
        setups[name] = time.perf_counter() - start
        engine = _engine(model, args.device)
        engine.add_tracked_target("cam", tracker, label=name)
        engines[name], parts[name], trackers[name] = engine, Timer(tracker, "track"), tracker

    dino_timer = Timer(dino, "forward")  # DINOv2 on the frame, inside the FSSAM part
    dino_parts = {name: [] for name in engines}
    steps = {name: [] for name in engines}
    own_parts = {name: [] for name in engines}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in engines}
    for i, frame in enumerate(frames):
        for name, engine in engines.items():
            result = engine.step("cam", frame)
            part = parts[name].take()
            dino_part = dino_timer.take()
            if i == 0:
                continue  # warm-up
            steps[name].append(result.step_seconds)
            own_parts[name].append(part)
            dino_parts[name].append(dino_part)
            outputs[name].append(result.targets[0].low_res_logits)

    def median(values):
        return statistics.median(values) if values else None

    report = {
        "device": args.device, "threads": torch.get_num_threads(), "model": args.model, "dino": args.dino,
        "shots": args.shots, "frame": f"{width}x{height}", "frames_timed": args.frames,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "setup_s": setups,
        "step_s": {name: median(v) for name, v in steps.items()},
        "target_s": {name: median(v) for name, v in own_parts.items()},
        "dino_in_target_s": {name: median(v) for name, v in dino_parts.items() if name != "plain"},
        "step_min_s": {name: min(v) for name, v in steps.items()},
        "target_min_s": {name: min(v) for name, v in own_parts.items()},
        "support_state_bytes": {name: t.nbytes() for name, t in trackers.items()},
    }
    report["step_ratio_fssam_over_plain"] = report["step_s"]["fssam"] / report["step_s"]["plain"]
    report["target_ratio_fssam_over_plain"] = report["target_s"]["fssam"] / report["target_s"]["plain"]
    if args.own:
        report["step_ratio_own_over_plain"] = report["step_s"]["fssam_own"] / report["step_s"]["plain"]
        diffs = [float((a - b).abs().max()) for a, b in zip(outputs["fssam"], outputs["fssam_own"])]
        ious = []
        for a, b in zip(outputs["fssam"], outputs["fssam_own"]):
            ma, mb = a > 0, b > 0
            union = int((ma | mb).sum())
            ious.append(1.0 if union == 0 else int((ma & mb).sum()) / union)
        report["shared_vs_own"] = {"max_abs_low_res_logit_diff": max(diffs),
                                   "min_low_res_mask_iou": min(ious)}
    print(json.dumps(report, indent=1))
    print(f"\n{'per frame, median s':<24}{'plain':>10}" + "".join(f"{n:>12}" for n in engines if n != "plain")
          + f"{'fssam/plain':>14}")
    for key, label in (("step_s", "whole step"), ("target_s", "target's own part")):
        row = report[key]
        ratio = row["fssam"] / row["plain"]
        print(f"{label:<24}{row['plain']:>10.3f}" + "".join(f"{row[n]:>12.3f}" for n in engines if n != "plain")
              + f"{ratio:>13.2f}x")
    print(f"{'  of which DINOv2':<24}{'':>10}" + "".join(f"{report['dino_in_target_s'][n]:>12.3f}"
                                                      for n in engines if n != "plain"))
    print(f"{'support work, once':<24}{setups['plain']:>10.3f}" + "".join(f"{setups[n]:>12.3f}" for n in engines
                                                                        if n != "plain"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
