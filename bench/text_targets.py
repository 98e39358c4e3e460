"""What a caption target costs beside a mask-prompted target, measured side by side in one run.

1. Per frame: one mask-prompted target vs one caption target (SAMWISE causal mode, window
   T = 8 and T = 1), each on its own stream of one engine, with sam2_hiera_t at
   --image-size (512) and a SamwiseAdapter sized for hiera_t's stages. CPU time
   (time.process_time) and wall time per step, and FLOPs per step counted by
   torch.utils.flop_counter.FlopCounterMode.
2. The caption's text stream: RoBERTa embeddings + layer 0 (the part that depends on the
   caption alone) and embeddings + all 12 layers, on a 12-token caption (10 words and
   <s>, </s>), against the steps.
3. A grounding call against a frame step: `GroundingDetector.detect` of the tiny OWLv2
   the tests build (test/support/tiny_models.py) on a 640x480 frame. That detector has one
   32-channel layer per tower and a 64x64 input: its cost says nothing about a real
   Grounding DINO or OWLv2. Give --grounding-model FOLDER (what `save_pretrained`
   wrote) to measure a real one in the same rounds.
4. Retained memory: `engine.retained_bytes()` with one caption target (T = 8) over
   --memory-frames frames at --memory-image-size (256) on 160x120 frames, sampled at
   frames 100, 500, 1000, 2000 (those within the count) and the last. The default, 700
   frames, took 13 minutes on 2 cores under a load of 7-9; 2000 take 20-40 minutes.

All weights are random (no checkpoint): SAM2's object-score bias is set so that every
target counts as present (so every frame is written to memory, as a tracked object's
would be), and the adapter's zero-initialised parameters are drawn away from zero, as in
test/adapters/test_text_streaming.py. Costs do not depend on the weights' values.

Parts 1-3 run in rounds: every round steps each stream once and calls each encoder part
and detector, in an order that rotates from round to round (A B C, B C A, ...), so that
load from other processes falls on all of them alike; medians over the measured rounds
after the warm-up rounds. Torch's threads follow the node's plan
(`refseg_ros.runtime.threads`: with compute_threads 0, one core left for intake).

    python bench/text_targets.py [--frames 6] [--warmup 8] [--memory-frames 700]
    python bench/text_targets.py --grounding-model /path/to/grounding-dino-tiny
    python bench/text_targets.py --quick        # small sizes, a smoke check

FLOPs: torch's counter has no formula for the CPU attention kernel
(aten._scaled_dot_product_flash_attention_for_cpu) and would count attention as zero;
this bench registers the library's own SDPA formula (`sdpa_flop_count`) for it, and
prints attention's share apart.
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
from typing import Callable, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
# A caption of 10 words between <s> (0) and </s> (2), as RoBERTa token ids.
CAPTION_IDS = (0, 10, 621, 11, 10, 1275, 8443, 3051, 10, 2335, 15, 2)
DETECTOR_CAPTION = "a red cup"
MEMORY_SAMPLES = (100, 500, 1000, 2000)


def load_average() -> Optional[list[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def count_cpu_attention() -> None:
    """Let FlopCounterMode count the CPU SDPA kernel with the library's own formula."""
    import torch
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def flops(fn: Callable[[], object]) -> tuple[int, int]:
    """(total FLOPs, attention FLOPs) of one call of `fn`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    counts = counter.get_flop_counts().get("Global", {})
    attention = sum(v for k, v in counts.items() if "attention" in str(k))
    return counter.get_total_flops(), attention


def build_parts(image_size: int, seed: int = 0):
    """sam2_hiera_t at `image_size` and a SamwiseAdapter for its stages, random weights."""
    import torch

    from refseg_ros.adapters.text.adapter import SamwiseAdapter
    from refseg_ros.engine.model import build_model

    torch.manual_seed(seed)
    sam = build_model("sam2_hiera_t", image_size=image_size).eval()
    with torch.no_grad():  # default init scores every object absent: say present
        sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    trunk = sam.image_encoder.trunk
    adapter = SamwiseAdapter(stage_channels=tuple(trunk.blocks[i].dim_out for i in trunk.stage_ends[1:])).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            if p.requires_grad and p.abs().max() == 0:
                p.normal_(0, 0.02)
    return sam, adapter


def make_engine(sam, image_size: int):
    from refseg_ros.engine import EngineConfig, SegmentationEngine

    return SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=image_size, device="cpu"),
                              random_weights=True)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


class Item:
    """One thing measured each round: `calls` calls of `fn(round)`, each timed."""

    def __init__(self, name: str, fn: Callable[[int], object], calls: int = 1):
        self.name, self.fn, self.calls = name, fn, calls
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.flops = self.attention_flops = 0

    def run(self, r: int, record: bool) -> None:
        for _ in range(self.calls):
            w, c = timed(lambda: self.fn(r))
            if record:
                self.wall.append(w)
                self.cpu.append(c)

    def summary(self) -> dict:
        return {"name": self.name, "wall_ms": 1e3 * statistics.median(self.wall),
                "cpu_ms": 1e3 * statistics.median(self.cpu), "samples": len(self.wall),
                "gflop": self.flops / 1e9, "attention_gflop": self.attention_flops / 1e9}


def side_by_side(args) -> dict:
    """Parts 1-3: every item once per round, order rotating; then FLOPs of one more call each."""
    import torch

    from refseg_ros.adapters.text.streaming import SamwiseTracker
    from refseg_ros.engine import MaskPrompt
    from refseg_ros.eval.synthetic import generate

    sam, adapter = build_parts(args.image_size)
    engine = make_engine(sam, args.image_size)
    rounds = args.warmup + args.frames
    seq = generate(num_frames=rounds + 1, height=480, width=640, seed=0)
    frames = seq.frames
    oid = sorted(seq.masks[0])[0]
    ids = torch.tensor(CAPTION_IDS)

    engine.add_stream("mask")
    engine.add_target("mask", MaskPrompt(seq.masks[0][oid]), label="mask")
    for window in (8, 1):
        engine.add_stream(f"caption{window}")
        engine.add_tracked_target(f"caption{window}", SamwiseTracker(sam, adapter, ids, window=window),
                                  label="caption")

    text = adapter.text_encoder
    batch = ids.view(1, -1)

    def text_layer0(_r):
        with torch.inference_mode():
            return text.run_layers(text.embed(batch), 0, 1)

    def text_all(_r):
        with torch.inference_mode():
            return text.run_layers(text.embed(batch), 0, 12)

    sys.path.insert(0, str(HERE.parent / "test"))
    from support.tiny_models import load_owl, save_owlv2

    tmp = tempfile.TemporaryDirectory()
    owl = load_owl(save_owlv2(Path(tmp.name) / "owlv2"))
    items = [
        Item("mask prompt", lambda r: engine.step("mask", frames[r], float(r))),
        Item("caption, T = 8", lambda r: engine.step("caption8", frames[r], float(r))),
        Item("caption, T = 1", lambda r: engine.step("caption1", frames[r], float(r))),
        Item("RoBERTa embeddings + layer 0", text_layer0, calls=3),
        Item("RoBERTa embeddings + 12 layers", text_all, calls=3),
        Item("tiny OWLv2 detect, 640x480", lambda r: owl.detect(frames[r], DETECTOR_CAPTION), calls=3),
        # what detect() spends before the model: OWLv2's processor (pad to a square,
        # anti-aliasing blur, resize to the model's input, normalise; tokenise)
        Item("of which the OWLv2 processor", lambda r: owl.processor(
            images=frames[r], text=[[DETECTOR_CAPTION]], return_tensors="pt", input_data_format="channels_last",
            device=owl.device), calls=3),
    ]
    real = None
    if args.grounding_model:
        from refseg_ros.adapters.grounding import GroundingDetector

        start = time.perf_counter()
        real = GroundingDetector.from_folder(args.grounding_model, device="cpu")
        load_s = time.perf_counter() - start
        real.detect(frames[0], args.grounding_caption)  # first call outside the rounds
        items.append(Item(f"{real.family.name} detect ({Path(args.grounding_model).name}), 640x480",
                          lambda r: real.detect(frames[r], args.grounding_caption)))

    for r in range(rounds):
        shift = r % len(items)
        for item in items[shift:] + items[:shift]:
            item.run(r, record=r >= args.warmup)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    for item in items:  # steady state: one more call each, counted
        item.flops, item.attention_flops = flops(lambda item=item: item.fn(rounds))
    out = {"image_size": args.image_size, "warmup": args.warmup, "frames": args.frames,
           "items": [i.summary() for i in items]}
    if real is not None:
        out["grounding_model"] = {"folder": args.grounding_model, "family": real.family.name, "load_s": load_s}
    states = {s: [t[2].name for t in engine.targets(s)] for s in engine.streams()}
    out["states"] = states
    tmp.cleanup()
    return out


def retained_memory(args) -> dict:
    """Part 4: retained bytes of one caption target (T = 8) over many small frames."""
    import torch

    from refseg_ros.adapters.text.streaming import SamwiseTracker

    sam, adapter = build_parts(args.memory_image_size)
    engine = make_engine(sam, args.memory_image_size)
    engine.add_stream("cam")
    engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, torch.tensor(CAPTION_IDS), window=8))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(16, 120, 160, 3), dtype=np.uint8)
    samples = sorted({c for c in MEMORY_SAMPLES if c <= args.memory_frames} | {args.memory_frames})
    sizes, seconds, last_change = {}, [], 1
    previous = None
    start = time.perf_counter()
    for i in range(1, args.memory_frames + 1):
        w, _ = timed(lambda i=i: engine.step("cam", frames[i % len(frames)], float(i)))
        seconds.append(w)
        now = engine.retained_bytes()
        if now != previous:
            last_change, previous = i, now
        if i in samples:
            sizes[i] = now
        if i % 250 == 0:
            print(f"  memory: frame {i}/{args.memory_frames}", file=sys.stderr, flush=True)
    return {"image_size": args.memory_image_size, "frame": "160x120", "frames": args.memory_frames,
            "bytes": sizes, "flat_from": last_change, "equal": len(set(sizes.values())) == 1,
            "step_ms": 1e3 * statistics.median(seconds), "total_s": time.perf_counter() - start}


def report(plan, load_start, load_end, parts: dict, memory: Optional[dict]) -> None:
    items = {i["name"]: i for i in parts["items"]}
    mask = items["mask prompt"]
    print("# Text targets (CPU, sam2_hiera_t, random weights)\n")
    print(f"threads (refseg_ros.runtime.threads, as the node): intra-op {plan.intra_op}, inter-op "
          f"{plan.inter_op} ({plan.reason}); load average at start {load_start}\n")
    print(f"## Per frame step, one target per stream, image size {parts['image_size']}, 640x480 frames, "
          f"median of {parts['frames']} interleaved rounds after {parts['warmup']} warm-up rounds\n")
    print("| target | wall ms | CPU ms | GFLOP | of which attention | wall / mask | CPU / mask | FLOPs / mask |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("mask prompt", "caption, T = 8", "caption, T = 1"):
        r = items[name]
        print(f"| {name} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | {r['gflop']:.2f} | {r['attention_gflop']:.2f} | "
              f"{r['wall_ms'] / mask['wall_ms']:.2f} | {r['cpu_ms'] / mask['cpu_ms']:.2f} | "
              f"{r['gflop'] / mask['gflop']:.2f} |")
    print(f"\ntarget states after the last step: {parts['states']}")
    cap8, cap1 = items["caption, T = 8"], items["caption, T = 1"]
    print(f"\n## The caption's text stream ({len(CAPTION_IDS)} tokens), per call, same rounds "
          f"({items['RoBERTa embeddings + layer 0']['samples']} calls)\n")
    print("| part | wall ms | CPU ms | GFLOP | CPU / caption step T = 8 | CPU / caption step T = 1 | "
          "FLOPs / caption step T = 8 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("RoBERTa embeddings + layer 0", "RoBERTa embeddings + 12 layers"):
        r = items[name]
        print(f"| {name} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | {r['gflop']:.3f} | "
              f"{r['cpu_ms'] / cap8['cpu_ms']:.3f} | {r['cpu_ms'] / cap1['cpu_ms']:.3f} | "
              f"{r['gflop'] / cap8['gflop']:.4f} |")
    print("\n## A grounding call vs a frame step (the mask-prompt step above), same rounds\n")
    print("| call | wall ms | CPU ms | GFLOP | CPU / mask step | FLOPs / mask step |")
    print("|---|---|---|---|---|---|")
    for name, r in items.items():
        if "detect" in name or "processor" in name:
            print(f"| {name} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | {r['gflop']:.4f} | "
                  f"{r['cpu_ms'] / mask['cpu_ms']:.4f} | {r['gflop'] / mask['gflop']:.5f} |")
    print("\nThe tiny OWLv2 (one 32-channel layer per tower, 64x64 input) is a test model: its cost "
          "says nothing about a real Grounding DINO or OWLv2 (--grounding-model FOLDER measures one).")
    if "grounding_model" in parts:
        print(f"{parts['grounding_model']['folder']} loaded in {parts['grounding_model']['load_s']:.1f} s.")
    if memory:
        print(f"\n## Retained bytes, one caption target (T = 8), image size {memory['image_size']}, "
              f"{memory['frame']} frames\n")
        print("| frame | retained bytes | MB |\n|---|---|---|")
        for frame, size in memory["bytes"].items():
            print(f"| {frame} | {size} | {size / 1e6:.3f} |")
        print(f"\nequal at every sampled frame: {'yes' if memory['equal'] else 'NO'}; the count last changed "
              f"at frame {memory['flat_from']} (the memory and causal windows filling) and stayed flat over "
              f"{memory['frames']} frames; median step {memory['step_ms']:.0f} ms, {memory['total_s']:.0f} s in all.")
    print(f"\nload average: start {load_start}, after the side-by-side parts {parts['load_average_after']}, "
          f"end {load_end} (1, 5, 15 min; {os.cpu_count()} CPUs)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6, help="measured rounds (median over them)")
    parser.add_argument("--warmup", type=int, default=8, help="rounds before measuring (fills T = 8)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--memory-frames", type=int, default=700,
                        help="frames of the memory part (0: skip); 2000 take 20-40 min on 2 cores at 256")
    parser.add_argument("--memory-image-size", type=int, default=256)
    parser.add_argument("--compute-threads", type=int, default=0, help="as the node's compute_threads (0: auto)")
    parser.add_argument("--grounding-model", default=None, help="a detector folder to measure beside the tiny one")
    parser.add_argument("--grounding-caption", default=DETECTOR_CAPTION)
    parser.add_argument("--quick", action="store_true", help="image size 128, 2+2 rounds, 120 memory frames")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.warmup, args.frames = 128, 2, 2
        args.memory_image_size, args.memory_frames = 128, 120

    from refseg_ros.runtime.threads import apply_threads, plan_threads

    plan = apply_threads(plan_threads(args.compute_threads))
    count_cpu_attention()
    load_start = load_average()
    parts = side_by_side(args)
    parts["load_average_after"] = load_average()
    memory = retained_memory(args) if args.memory_frames > 0 else None
    load_end = load_average()
    report(plan, load_start, load_end, parts, memory)
    if args.json:
        args.json.write_text(json.dumps({"threads": plan.__dict__, "load_average": [load_start, load_end],
                                         "parts": parts, "memory": memory}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
