"""Sequences per minute of ``refseg-eval run INDEX`` on 1, 2 and 4 Ray workers, on the CPU.

A synthetic benchmark index (``--sequences`` bags of ``--frames`` frames) is evaluated
from scratch at each worker count, side by side in one run, on one local Ray runtime
started once (its start-up time is printed apart). Each measurement is the whole call
(``refseg_ros.eval.fanout.run_index``): starting the workers and loading their models,
every sequence, and the merged report. Every worker count runs on Ray, so the ratios
compare like with like; the first table row is the reference. ``--rounds`` repeats the
sweep (in alternating order) and keeps each count's fastest round: other work on the
machine only ever adds time, and it adds more to the counts that need every core.

    python bench/eval_fanout.py [--sequences 8] [--frames 8] [--image-size 256]
                                [--workers 1 2 4] [--rounds 2] [--quick] [--json PATH]

Each worker uses the evaluation's default compute threads (the cores less one, as the
single-process path does, so that results do not depend on the worker count). On a
2-core machine that is one thread per worker: one worker leaves a core idle, two use
both, and four share two cores. So the curve rises at two workers, towards 2x but below
it (each worker starts and loads its model, and the merged report is written once at
the end), and gains nothing more at four: the cores are full, and four workers pay four
model starts. On a machine with more cores, set ``--compute-threads`` so that workers x
threads fits the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from refseg_ros.eval import builders, fanout  # noqa: E402
from refseg_ros.eval.importers.index import write_index  # noqa: E402
from refseg_ros.eval.sources import EngineSettings  # noqa: E402
from refseg_ros.runtime.threads import available_cores, plan_threads  # noqa: E402

PROTOCOL = {"name": "synthetic", "prompt": "first-frame-gt", "overlaps": "label-map",
            "summary": "mean-over-objects"}


def make_index(root: Path, sequences: int, frames: int, width: int, height: int) -> Path:
    """A benchmark index of synthetic scenes, one seed per sequence."""
    entries = []
    for k in range(sequences):
        name = f"scene{k:02d}"
        builders.synthetic_to_bag(root / "bags" / name, num_frames=frames, height=height,
                                  width=width, seed=k)
        entries.append({"name": name, "path": f"bags/{name}", "storage": "mcap",
                        "frames": frames})
    return write_index(root, "synthetic", PROTOCOL, entries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8, help="frames per sequence")
    parser.add_argument("--size", default="320x240", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input size")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--compute-threads", type=int, default=0,
                        help="model threads per worker (0: the cores less one)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="sweeps, alternating order; the fastest of each count is kept")
    parser.add_argument("--quick", action="store_true",
                        help="4 sequences of 2 frames at image size 128, a smoke check")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.quick:
        args.sequences, args.frames, args.image_size, args.size = 4, 2, 128, "96x64"
    width, height = (int(v) for v in args.size.lower().split("x"))
    threads = plan_threads(args.compute_threads).intra_op
    cores = available_cores()
    settings = EngineSettings(image_size=args.image_size, device="cpu",
                              compute_threads=args.compute_threads)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="eval_fanout_") as tmp:
        root = Path(tmp)
        index = make_index(root / "index", args.sequences, args.frames, width, height)
        start = time.perf_counter()
        ray = fanout.start_local_runtime(num_cpus=max(args.workers) * threads)
        ray_start = time.perf_counter() - start
        seconds: dict[int, list[float]] = {n: [] for n in args.workers}
        startup: dict[int, list[float]] = {n: [] for n in args.workers}
        summaries: dict[int, dict] = {}
        try:
            for r in range(args.rounds):
                order = args.workers if r % 2 == 0 else list(reversed(args.workers))
                for n in order:
                    out = root / f"out_{n}_{r}"
                    outcome = fanout.run_index(fanout.IndexRunConfig(
                        index=index, out=out, engine=settings, workers=n, use_ray=True,
                        progress=False))
                    assert outcome.workers == n, (outcome.workers, n)
                    seconds[n].append(outcome.seconds)
                    startup[n].append(outcome.startup_seconds)
                    summaries[n] = json.loads((out / "report.json").read_text())["summary"]
                    print(f"round {r + 1}, {n} worker(s): {outcome.seconds:.1f} s (load "
                          f"average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        finally:
            ray.shutdown()

    load_after = os.getloadavg()[0]
    same = all(s == summaries[args.workers[0]] for s in summaries.values())
    rows = []
    for n in args.workers:
        k = min(range(len(seconds[n])), key=seconds[n].__getitem__)  # the fastest round
        s, up = seconds[n][k], startup[n][k]
        rows.append({"workers": n, "seconds": s, "startup_s": up,
                     "sequences_per_min": 60 * args.sequences / s,
                     "sequences_per_min_after_startup": 60 * args.sequences / (s - up)})
    for r in rows:
        r["ratio"] = r["sequences_per_min"] / rows[0]["sequences_per_min"]
        r["ratio_after_startup"] = (r["sequences_per_min_after_startup"]
                                    / rows[0]["sequences_per_min_after_startup"])
    print(f"# refseg-eval run INDEX on Ray workers ({platform.machine()}, {cores} cores, "
          f"Python {platform.python_version()})")
    print()
    print(f"{args.sequences} synthetic sequences x {args.frames} frames of {width}x{height}; "
          f"sam2.1_hiera_t at image size {args.image_size} on the CPU, random weights; "
          f"{threads} compute thread(s) per worker; local Ray runtime started once in "
          f"{ray_start:.1f} s (not counted); fastest of {args.rounds} round(s). Each time "
          "covers starting the workers, loading one model per worker, every sequence and "
          "the merged report.")
    print()
    print(f"Load average (1 min) {load_before:.2f} before the run, {load_after:.2f} after it "
          "(the workers themselves raise it, up to one per busy worker): other work on the "
          "machine takes cores from the workers, the multi-worker rows most, so read the "
          "ratios beside it.")
    print()
    first = f"vs {args.workers[0]} worker" + ("s" if args.workers[0] != 1 else "")
    print(f"| workers | seconds | of which worker start + model load | sequences/min | {first} "
          f"| sequences/min after start-up | {first} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['seconds']:.1f} | {r['startup_s']:.1f} | "
              f"{r['sequences_per_min']:.1f} | {r['ratio']:.2f} | "
              f"{r['sequences_per_min_after_startup']:.1f} | {r['ratio_after_startup']:.2f} |")
    print()
    print(f"Benchmark numbers identical at every worker count: {'yes' if same else 'NO'}.")
    busy = max(1, cores // threads)
    print(f"What the curve means: {cores} cores hold {busy} worker(s) of {threads} compute "
          f"thread(s) at once. Up to {busy} workers the throughput rises towards {busy}x, "
          "less each worker's start and model load and the merged report written once at "
          f"the end; beyond {busy} workers share cores, so it gains nothing more (the cores "
          "are full) and pays one more model start per worker.")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"cores": cores, "threads_per_worker": threads, "ray_start_s": ray_start,
                       "load_before": load_before, "load_after": load_after,
                       "sequences": args.sequences, "frames": args.frames,
                       "image_size": args.image_size, "rows": rows, "identical": same,
                       "seconds": {str(k): v for k, v in seconds.items()},
                       "startup_s": {str(k): v for k, v in startup.items()}}, handle, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
