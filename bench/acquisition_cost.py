"""What acquiring a reference target costs against a frame step, and whether memory stays
bounded while acquisition runs, measured in one run.

1. Per call, side by side (image size 512, sam2_hiera_t, 640x480 frames):
   - the frame step of an engine with one reference target (taught by a mask on a
     reference image, tracked, its memory full: 1 conditioning + 6 recent frames);
   - the slow phase, `Acquirer.propose` (one DINOv2 pass over the frame, the raw prior
     maps, the peaks), with a ViT-B/14-sized DINOv2 (`transformers.Dinov2Config`
     defaults: width 768, 12 layers, 12 heads; image_size 518 as the released
     dinov2-base) at input 518 (a 37 x 37 grid; what the node uses, the model's own
     size) and at input 224 (16 x 16), and with the tests' tiny DINOv2
     (test/support/tiny_models.py `save_dinov2`: width 32, 2 layers, input 112);
   - the fast phase, `Acquirer.decide` with k = 1, 3, 5 candidate clicks (ONE batched SAM2
     decode on the frame's existing features, scoring, the gate), on features the engine's
     encoder made of the round's frame (outside the timing) and the ViT-B/14 518
     proposal of the first frame (the node also decides on proposals of earlier frames).
     The gate and the rules accept every valid candidate (threshold -1, 1 of 1), so an
     accepted candidate's mask is also made: the dearest path.
   Wall time and CPU time (time.process_time, all threads of this process) per call,
   FLOPs of one call (torch.utils.flop_counter), and the ratios propose / step and
   decide / step of each, against the issue's goal: at most one step.
2. Memory with acquisition active: an engine at --memory-image-size (256) on 160x120
   frames, one reference target with the node's proposer (`AcquisitionService`,
   asynchronous: the prior runs on its worker thread, as in the node; tiny DINOv2 so
   that the worker does not crowd the step out of 2 cores). The object comes and goes:
   in every cycle of 30 frames SAM2's object head says "present" for 8 frames and
   "absent" for 22 (its bias set to +10 / -10; random weights otherwise say nothing).
   With occlusion_patience 5 the target is occluded, then lost and looked for; while
   absent the prior's candidates are refused (SAM2 says absent), so the gate never
   accepts; once present again it accepts the second hit (M = 2 of K = 3) and seeds the
   target (a conditioning memory; max_seeds 4, the oldest goes). `engine.retained_bytes()`
   and the process's resident set (psutil) at frames 100, 500, 1000, 2000 (those within
   --memory-frames) and their least and greatest values in each span between them. This
   part runs first, so that part 1's larger models do not inflate its resident set.
   The proposer watches the tracked target too (`acquisition_watch`, the default), so
   the prior runs on every frame, whatever the state.

Torch's threads follow the node's plan (`refseg_ros.runtime.threads`: with
compute_threads 0, one core left for intake). Part 1 runs in rounds; every round calls
each item once, in an order that rotates from round to round, so that load from other
processes falls on all alike; medians over the rounds after the warm-up rounds. All
weights are random (no checkpoint); costs do not depend on their values.

    python bench/acquisition_cost.py [--rounds 8] [--warmup 2] [--memory-frames 2000]
    python bench/acquisition_cost.py --quick         # small sizes, a smoke check
    python bench/acquisition_cost.py --memory-only   # part 2 alone
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from text_targets import count_cpu_attention, flops, load_average, timed  # same folder

MEMORY_SAMPLES = (100, 500, 1000, 2000)
CYCLE, PRESENT = 30, 8  # memory part: frames per cycle, of which the object is present
TINY_DINO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                 image_size=112)  # as test/support/tiny_models.save_dinov2


def say_present(sam, present: bool) -> None:
    """SAM2's object head says present (or absent) for every mask; random weights otherwise."""
    import torch

    with torch.no_grad():
        sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0 if present else -10.0)


def dinov2(**config):
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.Dinov2Model(transformers.Dinov2Config(**config)).eval()


def permissive_config(candidates: int, m: int, window: int):
    """Every valid candidate scores a hit (random weights score at random)."""
    from refseg_ros.adapters.reference.prior.acquisition import AcquirerConfig
    from refseg_ros.adapters.reference.prior.candidates import ScoringRules

    rules = ScoringRules(min_area_fraction=0.0, max_area_fraction=1.0, require_point_inside=False)
    return AcquirerConfig(candidates=candidates, background_margin=None, threshold=-1.0, m=m, window=window,
                          rules=rules)


def make_engine(sam, image_size: int, **config):
    from refseg_ros.engine import EngineConfig, SegmentationEngine

    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=image_size, device="cpu",
                                                  **config), random_weights=True)
    engine.add_stream("cam")
    return engine


class Item:
    """One thing measured each round: `fn(round)`, timed."""

    def __init__(self, name: str, fn: Callable[[int], object]):
        self.name, self.fn = name, fn
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.gflop = 0.0

    def run(self, r: int, record: bool) -> None:
        w, c = timed(lambda: self.fn(r))
        if record:
            self.wall.append(w)
            self.cpu.append(c)

    def summary(self) -> dict:
        return {"name": self.name, "wall_ms": 1e3 * statistics.median(self.wall),
                "cpu_ms": 1e3 * statistics.median(self.cpu), "min_wall_ms": 1e3 * min(self.wall),
                "samples": len(self.wall), "gflop": self.gflop}


def side_by_side(args) -> dict:
    """Part 1: the step, three proposes and three decides once per round, order rotating."""
    import torch

    from refseg_ros.adapters.reference.prior.acquisition import Acquirer, Proposal
    from refseg_ros.adapters.reference.prior.dino_encoder import DinoEncoder
    from refseg_ros.adapters.reference.prior.reference_prior import prototypes_from_examples
    from refseg_ros.engine import MaskPrompt
    from refseg_ros.engine.features import encode_image
    from refseg_ros.engine.model import build_model
    from refseg_ros.eval.synthetic import generate

    torch.manual_seed(0)
    sam = build_model("sam2_hiera_t", image_size=args.image_size).eval()
    say_present(sam, True)  # every frame is written to memory, as a tracked object's would be
    engine = make_engine(sam, args.image_size)
    rounds = args.warmup + args.rounds
    height, width = args.frame
    seq = generate(num_frames=rounds + args.fill + 2, height=height, width=width, seed=0)
    oid = sorted(seq.masks[0])[0]
    reference, mask = seq.frames[0], seq.masks[0][oid]
    engine.add_target("cam", MaskPrompt(mask), label="reference", image=reference)
    frames = seq.frames[1:]
    for i in range(args.fill):  # fill the target's memory (6 recent frames) before the rounds
        engine.step("cam", frames[i], float(i))
    frames = frames[args.fill:]

    tiny = dinov2(**TINY_DINO)
    if args.quick:
        encoders = {f"tiny at {s}": DinoEncoder(tiny, input_size=s) for s in (112, 56)}
    else:
        base = dinov2(image_size=518)  # Dinov2Config's defaults otherwise: ViT-B/14
        encoders = {f"ViT-B/14 at {args.dino_large}": DinoEncoder(base, input_size=args.dino_large),
                    f"ViT-B/14 at {args.dino_small}": DinoEncoder(base, input_size=args.dino_small),
                    "tiny (tests') at 112": DinoEncoder(tiny, input_size=112)}
    acquirers = {}
    for name, encoder in encoders.items():
        acquirers[name] = Acquirer(encoder, prototypes_from_examples(encoder, [reference], [mask]),
                                   permissive_config(max(args.k), 1, 1))
    first = next(iter(acquirers.values()))
    proposal = first.propose(frames[0])
    if len(proposal.points_xy) < max(args.k):
        raise RuntimeError(f"the prior found {len(proposal.points_xy)} peaks, fewer than k = {max(args.k)}")
    deciders = {k: Acquirer(first.encoder, first.prototypes, permissive_config(k, 1, 1)) for k in args.k}
    proposals = {k: Proposal(proposal.points_xy[:k], proposal.peaks[:k], proposal.foreground, proposal.background,
                             proposal.frame_hw) for k in args.k}
    accepted = {k: 0 for k in args.k}
    features: dict[int, object] = {}

    def features_of(r: int):
        if r not in features:
            features.clear()
            with torch.inference_mode():
                features[r] = encode_image(sam, engine.preprocess(frames[r]))
        return features[r]

    def decide(k: int) -> Callable[[int], object]:
        def call(r: int):
            got = deciders[k].decide(sam, features_of(r), proposals[k], (height, width))
            accepted[k] += got is not None
            return got
        return call

    items = [Item("step, one reference target (tracked)", lambda r: engine.step("cam", frames[r], float(r)))]
    items += [Item(f"propose, {name}", (lambda a: lambda r: a.propose(frames[r], float(r)))(acquirer))
              for name, acquirer in acquirers.items()]
    items += [Item(f"decide, k = {k}", decide(k)) for k in args.k]
    for r in range(rounds):
        features_of(r)  # outside the timing: the step has made them in the node
        shift = r % len(items)
        for item in items[shift:] + items[:shift]:
            item.run(r, record=r >= args.warmup)
        print(f"  round {r + 1}/{rounds} done (load {load_average()})", file=sys.stderr, flush=True)
    features_of(rounds)
    for item in items:  # one more call each, counted
        item.gflop = flops(lambda item=item: item.fn(rounds))[0] / 1e9
    states = [t[2].name for t in engine.targets("cam")]
    return {"image_size": args.image_size, "frame": f"{width}x{height}", "warmup": args.warmup,
            "rounds": args.rounds, "items": [i.summary() for i in items], "states": states,
            "decide_accepted": {k: v for k, v in accepted.items()},
            "grids": {name: list(e.grid_size) for name, e in encoders.items()}}


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def retained_memory(args) -> dict:
    """Part 2: retained bytes and RSS over many small frames with the proposer active."""
    import torch

    from refseg_ros.adapters.reference.prior.acquisition_proposer import AcquisitionService
    from refseg_ros.adapters.reference.prior.dino_encoder import DinoEncoder
    from refseg_ros.engine import MaskPrompt
    from refseg_ros.engine.model import build_model
    from refseg_ros.eval.synthetic import generate

    torch.manual_seed(0)
    sam = build_model("sam2_hiera_t", image_size=args.memory_image_size).eval()
    say_present(sam, True)
    engine = make_engine(sam, args.memory_image_size, occlusion_patience=5)
    seq = generate(num_frames=17, height=120, width=160, seed=1)
    oid = sorted(seq.masks[0])[0]
    reference, mask = seq.frames[0], seq.masks[0][oid]
    frames = seq.frames[1:]
    service = AcquisitionService(DinoEncoder(dinov2(**TINY_DINO), input_size=112), permissive_config(5, 2, 3))
    tid = engine.add_target("cam", MaskPrompt(mask), label="reference", image=reference)
    proposer = service.proposer(service.prototypes([reference], [mask]))
    engine.set_proposer("cam", tid, proposer)
    samples = sorted({c for c in MEMORY_SAMPLES if c <= args.memory_frames} | {args.memory_frames})
    sampled: dict[int, dict] = {}
    spans: list[dict] = []
    span = {"from": 1, "retained_min": None, "retained_max": None, "rss_min": None, "rss_max": None}
    states = {name: 0 for name in ("ACQUIRING", "TRACKED", "OCCLUDED", "LOST")}
    seeds = reacquired = watched = 0
    seconds = []
    start = time.perf_counter()
    try:
        for i in range(1, args.memory_frames + 1):
            say_present(sam, (i - 1) % CYCLE < PRESENT)
            begin = time.perf_counter()
            result = engine.step("cam", frames[i % len(frames)], float(i))
            seconds.append(time.perf_counter() - begin)
            states[result.targets[0].state.name] += 1
            seeds += sum("found by its prior" in e for e in result.events)
            reacquired += sum("re-acquired" in e for e in result.events)
            watched += sum("lost: its prior" in e for e in result.events)
            retained, rss = engine.retained_bytes(), rss_bytes()
            for key, value in (("retained", retained), ("rss", rss)):
                low, high = span[f"{key}_min"], span[f"{key}_max"]
                span[f"{key}_min"] = value if low is None else min(low, value)
                span[f"{key}_max"] = value if high is None else max(high, value)
            if i in samples:
                sampled[i] = {"retained": retained, "rss": rss, "state": result.targets[0].state.name}
                spans.append({**span, "to": i})
                span = {"from": i + 1, "retained_min": None, "retained_max": None, "rss_min": None,
                        "rss_max": None}
            if i % 250 == 0:
                print(f"  memory: frame {i}/{args.memory_frames} (load {load_average()})", file=sys.stderr,
                      flush=True)
        worker = service.worker
        proposals = {"finished": worker.finished(proposer.key), "skipped": worker.skipped(proposer.key),
                     "errors": worker.errors(proposer.key)}
    finally:
        service.close()
    later = {v["retained"] for k, v in sampled.items() if k >= 100}
    # bounded: no span above the first span's most; equal: one value at every sample from
    # frame 100 on (a target declared gone forgets its recent frames, so the value at a
    # sample depends on the state then)
    bounded = all(s["retained_max"] <= spans[0]["retained_max"] for s in spans)
    equal = len(later) == 1
    return {"image_size": args.memory_image_size, "frame": "160x120", "frames": args.memory_frames,
            "cycle": {"frames": CYCLE, "present": PRESENT}, "occlusion_patience": 5,
            "samples": sampled, "spans": spans, "states": states, "seeds": seeds, "reacquired": reacquired,
            "watched_lost": watched,
            "proposals": proposals, "bounded": bounded, "equal": equal,
            "step_ms": 1e3 * statistics.median(seconds), "total_s": time.perf_counter() - start}


def report(plan, loads, parts: Optional[dict], memory: Optional[dict]) -> None:
    load_start, load_middle, load_end = loads
    print("# Acquisition cost (CPU, sam2_hiera_t, random weights)\n")
    print(f"threads (refseg_ros.runtime.threads, as the node): intra-op {plan.intra_op}, inter-op "
          f"{plan.inter_op} ({plan.reason}); load average at start {load_start}\n")
    if parts:
        report_calls(parts)
    if memory:
        report_memory(memory)
    print(f"\nload average: start {load_start}, after the memory part {load_middle}, end {load_end} "
          f"(1, 5, 15 min)")


def report_calls(parts: dict) -> None:
    """Part 1's table: each call against one frame step."""
    items = {i["name"]: i for i in parts["items"]}
    step = next(iter(items.values()))
    print(f"## Per call vs one frame step, image size {parts['image_size']}, {parts['frame']} frames, median of "
          f"{parts['rounds']} interleaved rounds after {parts['warmup']} warm-up rounds\n")
    print("| call | wall ms | CPU ms | GFLOP | wall / step | CPU / step | FLOPs / step | at most one step "
          "(wall, CPU, FLOPs) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in items.items():
        ratios = (r["wall_ms"] / step["wall_ms"], r["cpu_ms"] / step["cpu_ms"], r["gflop"] / step["gflop"])
        goal = "" if r is step else ", ".join("yes" if v <= 1.0 else "no" for v in ratios)
        print(f"| {name} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | {r['gflop']:.2f} | {ratios[0]:.2f} | "
              f"{ratios[1]:.2f} | {ratios[2]:.3f} | {goal} |")
    print(f"\nprior grids: {parts['grids']}; decide calls that accepted a candidate: {parts['decide_accepted']}; "
          f"target state after the rounds: {parts['states']}")


def report_memory(memory: dict) -> None:
    """Part 2's tables: retained bytes and RSS at the samples and over the spans."""
    print(f"\n## Memory with acquisition active, image size {memory['image_size']}, {memory['frame']} frames, "
          f"{memory['frames']} frames (object present {memory['cycle']['present']} of every "
          f"{memory['cycle']['frames']}, occlusion_patience {memory['occlusion_patience']})\n")
    print("| frame | state | retained bytes | retained MB | RSS MB |\n|---|---|---|---|---|")
    for frame, s in memory["samples"].items():
        print(f"| {frame} | {s['state']} | {s['retained']} | {s['retained'] / 1e6:.3f} | {s['rss'] / 2**20:.1f} |")
    print("\n| frames | retained MB, least - most | RSS MB, least - most |\n|---|---|---|")
    for s in memory["spans"]:
        print(f"| {s['from']}-{s['to']} | {s['retained_min'] / 1e6:.3f} - {s['retained_max'] / 1e6:.3f} | "
              f"{s['rss_min'] / 2**20:.1f} - {s['rss_max'] / 2**20:.1f} |")
    print(f"\nframes per state: {memory['states']}; seeds by the prior: {memory['seeds']}; re-acquired: "
          f"{memory['reacquired']}; declared lost by the watch: {memory['watched_lost']}; proposals "
          f"{memory['proposals']}")
    print(f"retained bytes bounded (no span above the first 100 frames' most): "
          f"{'yes' if memory['bounded'] else 'NO'}; equal at every sample from frame 100: "
          f"{'yes' if memory['equal'] else 'no'}; median step {memory['step_ms']:.0f} ms, "
          f"{memory['total_s']:.0f} s in all")


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds (median over them)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds before measuring")
    parser.add_argument("--fill", type=int, default=7, help="steps before the rounds (fills the memory)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--frame", type=_size, default=(480, 640), help="frame WIDTHxHEIGHT")
    parser.add_argument("--dino-large", type=int, default=518, help="ViT-B/14 input (the node: the model's own)")
    parser.add_argument("--dino-small", type=int, default=224, help="ViT-B/14 input, the smaller one")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], help="candidates per decide")
    parser.add_argument("--memory-frames", type=int, default=2000, help="frames of the memory part (0: skip)")
    parser.add_argument("--memory-image-size", type=int, default=256)
    parser.add_argument("--compute-threads", type=int, default=0, help="as the node's compute_threads (0: auto)")
    parser.add_argument("--quick", action="store_true", help="image size 128, tiny DINOv2s, 1+1 rounds, "
                                                             "150 memory frames")
    parser.add_argument("--memory-only", action="store_true", help="part 2 alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.warmup, args.rounds, args.fill = 128, 1, 1, 2
        args.memory_image_size, args.memory_frames = 128, 150

    from refseg_ros.runtime.threads import apply_threads, plan_threads

    plan = apply_threads(plan_threads(args.compute_threads))
    count_cpu_attention()
    load_start = load_average()
    # the memory part first, so that part 1's larger models do not inflate its resident set
    memory = retained_memory(args) if args.memory_frames > 0 else None
    load_middle = load_average()
    parts = None if args.memory_only else side_by_side(args)
    load_end = load_average()
    report(plan, (load_start, load_middle, load_end), parts, memory)
    if args.json:
        args.json.write_text(json.dumps({"threads": plan.__dict__, "load_average": [load_start, load_middle,
                                                                                     load_end],
                                         "parts": parts, "memory": memory}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
