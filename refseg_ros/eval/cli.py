"""``refseg-eval``: build evaluation bags, inspect them, evaluate them, play them.

    refseg-eval run BAG --out DIR [--prompt first-frame-gt|reference-topic] [--checkpoint F]
                    [--source offline|live]
    refseg-eval run INDEX --out DIR [--workers N] [--address ADDR]
                                                 (every bag of an importer's index.json;
                                                  N > 1 or ADDR: on Ray, pip install .[cluster])
    refseg-eval build synthetic OUT [--frames 30 --size 320x240 --seed 0]
    refseg-eval build davis ROOT SEQUENCE OUT [--fps 24]
    refseg-eval build fss ROOT OUT [--episodes-per-class 1 --shots 1 --seed 0]
    refseg-eval build davis2017 DATA_DIR OUT [--split val]   (a bag per sequence + index.json)
    refseg-eval build ref-davis|ref-youtube-vos|mevis DATA_DIR OUT [--split S]
                                                 (a bag per expression + index.json)
    refseg-eval build fss1000|deepglobe|isic|chest-xray DATA_DIR OUT [--shots 1 --seed 0]
                                                 (a bag per episode + index.json)
    refseg-eval build pascal5i|coco20i DATA_DIR OUT --lists FSSAM/lists/<set>/fss_list/val --fold F
    refseg-eval info BAG
    refseg-eval play BAG [--rate 1.0 --clock]

Exit status: 0 done, 2 unusable input (bag, folder, output directory, arguments),
1 anything else (for instance a live node that does not start or answer).

`run`'s model, caption and reference options are the node's parameters of the same names
(--image-size is image_size), made from its table (refseg_ros.runtime.parameters): same
defaults (but EVALUATION_DEFAULTS), choices, ranges and help. Its own options are named
apart from every parameter: --source (offline or live; --mode is its former name),
--bag-reference-topic and --bag-caption-topic (topics in the bag; --reference-topic and
--caption-topic are their former names).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from refseg_ros.eval import bags
from refseg_ros.eval.scoring import OVERLAP_RULES
from refseg_ros.runtime import recipes
from refseg_ros.runtime.parameters import add_argument, settings_from

if TYPE_CHECKING:
    from refseg_ros.eval.sources import EngineSettings

EXIT_BAD_INPUT = 2
# The node's parameters `run` takes, by group (flags made from the table: add_argument).
ENGINE_PARAMETERS = ("model", "checkpoint", "image_size", "device", "seed", "compute_threads", "encoder_backend",
                     "encoder_precision")
TEXT_PARAMETERS = ("text_path", "samwise_checkpoint", "samwise_tokenizer", "text_window", "text_mode",
                   "grounding_model", "grounding_threshold")
REFERENCE_PARAMETERS = ("dbst_pipeline", "dbst_on", "dbst_frames", "dbst_lora_steps", "ttga_steps", "dino_model",
                        "acquisition_threshold", "acquisition_m", "acquisition_k", "fssam_checkpoint",
                        "fssam_official")
# Where the evaluation's default differs from the node's, and why.
EVALUATION_DEFAULTS = {
    "acquisition_m": (1, "1 of 1 for one-frame episodes (a one-shot episode has one query frame)"),
    "acquisition_k": (1, "1 of 1 for one-frame episodes"),
}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    return w, h


def _topic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera-topic", default=bags.CAMERA_TOPIC)
    p.add_argument("--gt-topic", default=bags.GROUND_TRUTH_TOPIC)
    p.add_argument("--bag-reference-topic", "--reference-topic", default=bags.REFERENCE_TOPIC,
                   help="the bag's topic of reference targets")
    p.add_argument("--bag-caption-topic", "--caption-topic", default=bags.CAPTION_TOPIC,
                   help="the bag's topic of captions")


def _parameter_args(group: argparse._ActionsContainer, names: Sequence[str]) -> None:
    for name in names:
        default, why = EVALUATION_DEFAULTS.get(name, (None, ""))
        add_argument(group, name, default=default, note=why)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refseg-eval", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="replay a bag, or every bag of a benchmark index, "
                                     "through the engine and score it")
    run.add_argument("bag", type=Path, help="a bag, or a benchmark index (index.json or the "
                                            "folder holding it)")
    run.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    run.add_argument("--prompt", default="auto",
                     choices=["auto", "first-frame-gt", "reference-topic", "caption"],
                     help="how targets are taught (auto: first-frame-gt for videos, "
                          "reference-topic for one-shot bags)")
    _topic_args(run)
    _parameter_args(run, ENGINE_PARAMETERS)
    run.add_argument("--max-frames", type=int, default=None)
    run.add_argument("--worst-frames", type=int, default=4)
    run.add_argument("--overlaps", choices=OVERLAP_RULES, default=None,
                     help="keep (default for a bag): score each target's own mask (overlapped "
                          "pixels count for both); label-map: merge a frame's masks into one "
                          "label map first, the smallest target id keeping overlapped pixels "
                          "(DAVIS protocol); an index's protocol sets it")
    run.add_argument("--overwrite", action="store_true",
                     help="discard another run's results in --out")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--source", "--mode", choices=["offline", "live"], default="offline",
                     help="offline: the engine in this process; live: the segmenter node in "
                          "replay mode, fed over DDS (needs rclpy); same settings, same masks")
    run.add_argument("--startup-timeout", type=float, default=300.0,
                     help="live: seconds for the node to load its model and come up")
    run.add_argument("--result-timeout", type=float, default=60.0,
                     help="live: seconds to wait for any one answer of the node")
    run.add_argument("--window", type=int, default=16,
                     help="live: frames sent ahead of the node's latest result")
    text = run.add_argument_group("caption targets (--prompt caption; the node's parameters of the same names)")
    _parameter_args(text, TEXT_PARAMETERS)
    ref = run.add_argument_group("reference targets (one-shot episodes, --prompt reference-topic)")
    ref.add_argument("--reference-mode", default="baseline", choices=recipes.NAMES,
                     help="the node's reference_mode names, run exactly as named (runtime.recipes): "
                          "TRACKER[+acquisition][+dbst]; TRACKER baseline (pinned examples, SAM2 "
                          "tracking; left out before a part), ttga (a per-target neck tuned by CAV-SAM's "
                          "TTGA, before the episode's frames offline) or fssam (FSSAM on every frame); "
                          "+acquisition: the DINOv2 prior gates the tracker (no mask until found); +dbst: "
                          "diffusion transition frames from the reference (through the tuned neck for "
                          "ttga); cavsam: ttga+dbst")
    _parameter_args(ref, REFERENCE_PARAMETERS)
    fan = run.add_argument_group("benchmark index (INDEX instead of BAG)")
    fan.add_argument("--workers", type=int, default=None,
                     help="worker processes, each with one model (default 1: in this process; "
                          "more run on Ray, pip install .[cluster]; with --address: as many as "
                          "the cluster fits)")
    fan.add_argument("--address", default=None,
                     help="an existing Ray cluster to run on (ray.init address, e.g. auto or "
                          "HOST:6379); default: a local Ray runtime, on this machine only")
    fan.add_argument("--gpus-per-worker", type=float, default=None,
                     help="GPU fraction each worker asks Ray for when the model runs on CUDA "
                          "(default: the GPUs shared evenly, at most one each)")
    fan.add_argument("--max-retries", type=int, default=3,
                     help="restarts of a worker process that dies, and retries of its sequence")

    build = sub.add_parser("build", help="write an evaluation bag from a dataset")
    kinds = build.add_subparsers(dest="kind", required=True)
    for name in ("synthetic", "davis", "fss"):
        k = kinds.add_parser(name)
        if name == "davis":
            k.add_argument("root", type=Path)
            k.add_argument("sequence")
        elif name == "fss":
            k.add_argument("root", type=Path)
        k.add_argument("out", type=Path)
        k.add_argument("--storage", choices=bags.STORAGES, default="mcap")
        k.add_argument("--overwrite", action="store_true")
        if name != "fss":
            k.add_argument("--fps", type=float, default=10.0 if name == "synthetic" else 24.0)
        if name == "synthetic":
            k.add_argument("--frames", type=int, default=30)
            k.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT")
            k.add_argument("--seed", type=int, default=0)
            k.add_argument("--depth", action="store_true",
                           help="also exact depth and CameraInfo: the report adds position errors")
        if name == "davis":
            k.add_argument("--max-frames", type=int, default=None)
        if name == "fss":
            k.add_argument("--episodes-per-class", type=int, default=1)
            k.add_argument("--shots", type=int, default=1, help="support pairs per episode (k-shot)")
            k.add_argument("--seed", type=int, default=0)
            k.add_argument("--classes", nargs="*", default=None)

    k = kinds.add_parser("davis2017", help="DAVIS 2017 semi-supervised: ImageSets/2017/SPLIT.txt, "
                         "JPEGImages/480p, Annotations/480p -> OUT/bags/<seq> + OUT/index.json")
    k.add_argument("data_dir", type=Path)
    k.add_argument("out", type=Path)
    k.add_argument("--split", default="val")
    k.add_argument("--resolution", default="480p")
    k.add_argument("--sequences", nargs="*", default=None, help="instead of the split's list")
    k.add_argument("--storage", choices=bags.STORAGES, default="mcap")
    k.add_argument("--fps", type=float, default=24.0)
    k.add_argument("--overwrite", action="store_true")

    for name in ("ref-davis", "ref-youtube-vos", "mevis"):
        k = kinds.add_parser(name, help="referring VOS: a bag per expression (caption topic) "
                             "+ OUT/index.json")
        k.add_argument("data_dir", type=Path)
        k.add_argument("out", type=Path)
        k.add_argument("--split", default=None,
                       help="default: valid (ref-davis, ref-youtube-vos), valid_u (mevis)")
        k.add_argument("--videos", nargs="*", default=None)
        k.add_argument("--storage", choices=bags.STORAGES, default="mcap")
        k.add_argument("--fps", type=float, default=24.0)
        k.add_argument("--overwrite", action="store_true")

    for name in ("fss1000", "deepglobe", "isic", "chest-xray"):
        k = kinds.add_parser(name, help="few-shot: PATNet's episodes (fixed seed), a bag per "
                             "episode + OUT/index.json")
        k.add_argument("data_dir", type=Path)
        k.add_argument("out", type=Path)
        k.add_argument("--shots", type=int, default=1)
        k.add_argument("--seed", type=int, default=0)
        k.add_argument("--episodes", type=int, default=600,
                       help="cross-domain sets (fss1000: every query image of every class)")
        k.add_argument("--classes-file", type=Path, default=None,
                       help="fss1000: class names, one a line (PATNet data/splits/fss/test.txt)")
        k.add_argument("--size", type=int, default=400,
                       help="evaluation size, square (0: the images' own size)")
        k.add_argument("--storage", choices=bags.STORAGES, default="mcap")
        k.add_argument("--overwrite", action="store_true")

    for name in ("pascal5i", "coco20i"):
        k = kinds.add_parser(name, help="FSSAM's protocol: 1,000 episodes of a fold, a bag per "
                             "episode + OUT/index.json")
        k.add_argument("data_dir", type=Path, help="VOC2012 (JPEGImages, SegmentationClassAug) "
                       "or MSCOCO2014 (val2014, annotations/val2014)")
        k.add_argument("out", type=Path)
        k.add_argument("--lists", type=Path, required=True,
                       help="FSSAM's lists/<pascal|coco>/fss_list/val (data_list_F.txt, "
                            "sub_class_file_list_F.txt)")
        k.add_argument("--fold", type=int, required=True, choices=[0, 1, 2, 3])
        k.add_argument("--shots", type=int, default=1)
        k.add_argument("--seed", type=int, default=321)
        k.add_argument("--episodes", type=int, default=1000)
        k.add_argument("--storage", choices=bags.STORAGES, default="mcap")
        k.add_argument("--overwrite", action="store_true")

    compare = sub.add_parser("compare", help="runs side by side (e.g. one per --reference-mode): "
                                             "mIoU, FB-IoU, J&F, false-positive rate, step time")
    compare.add_argument("runs", type=Path, nargs="+", help="output directories of finished runs")
    compare.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")

    info = sub.add_parser("info", help="list a bag's topics and what the evaluation sees")
    info.add_argument("bag", type=Path)

    play = sub.add_parser("play", help="publish a bag's messages over ROS 2 (needs rclpy)")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0)
    play.add_argument("--clock", action="store_true", help="publish /clock from bag time")
    play.add_argument("--topics", nargs="*", default=None,
                      help="topics to publish (default: all); one whose message type rclpy "
                           "cannot load is skipped with a warning")
    play.add_argument("--start-delay", type=float, default=0.5,
                      help="seconds to wait before the first message")
    play.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                      help="wait until each image topic has N subscribers")
    play.add_argument("--wait-timeout", type=float, default=30.0)
    return parser


def _live_settings(args: argparse.Namespace) -> dict[str, float | int]:
    if args.window < 1:
        raise ValueError(f"--window must be at least 1, got {args.window}")
    return {"startup_timeout": args.startup_timeout, "result_timeout": args.result_timeout,
            "window": args.window}


def engine_settings(args: argparse.Namespace) -> "EngineSettings":
    """The engine, caption and reference settings of `refseg-eval run`'s arguments.

    Raises:
        ValueError: naming the option, for a value the settings refuse.
    """
    from refseg_ros.eval.sources import EngineSettings
    from refseg_ros.runtime.acquisition import AcquisitionSettings
    from refseg_ros.runtime.captions import TextSettings
    from refseg_ros.runtime.reference_modes import ReferenceSettings
    from refseg_ros.runtime.transitions import TransitionSettings

    values = vars(args)  # the flags of the node's parameters, under their names
    text = settings_from(TextSettings, values)
    acquisition = settings_from(AcquisitionSettings, values)
    fssam = settings_from(ReferenceSettings, values)
    transitions = settings_from(TransitionSettings, values)
    for part in (text, acquisition, fssam, transitions):
        part.check()
    return EngineSettings(args.model, args.checkpoint or None, args.image_size, args.device,
                          args.seed, args.compute_threads, encoder_backend=args.encoder_backend,
                          encoder_precision=args.encoder_precision, text=text, reference_mode=args.reference_mode,
                          acquisition=acquisition, fssam=fssam, transitions=transitions)


def _cmd_run(args: argparse.Namespace) -> int:
    from refseg_ros.eval import fanout
    from refseg_ros.eval.runner import RunConfig, evaluate

    engine = engine_settings(args)
    if fanout.is_index(args.bag):
        return _cmd_run_index(args, engine)
    if (args.workers or 1) > 1 or args.address is not None:
        raise ValueError(f"{args.bag} is one bag, one sequence: --workers and --address "
                         "apply to a benchmark index (index.json)")
    cfg = RunConfig(bag=args.bag, out=args.out, prompt=args.prompt,
                    camera_topic=args.camera_topic, gt_topic=args.gt_topic,
                    reference_topic=args.bag_reference_topic, caption_topic=args.bag_caption_topic,
                    max_frames=args.max_frames, overwrite=args.overwrite,
                    progress=False if args.no_progress else None,
                    worst_frames=args.worst_frames, overlaps=args.overlaps or "keep",
                    engine=engine)
    source = None
    if args.source == "live":
        from refseg_ros.eval.live import LiveNodeSource, LiveSettings
        from refseg_ros.eval.outdir import NODE_LOG

        source = LiveNodeSource(cfg.engine, LiveSettings(**_live_settings(args),
                                                         log_path=args.out / NODE_LOG))
    outcome = evaluate(cfg, source=source)
    if outcome.report is None:
        print(f"already complete: {outcome.report_path}")
        return 0
    from refseg_ros.eval.report import finite

    summary = finite(outcome.report.summary)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                      for k, v in summary.items()}))
    for note in outcome.report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {outcome.report_path}")
    return 0


def _cmd_run_index(args: argparse.Namespace, engine: object) -> int:
    from refseg_ros.eval import fanout
    from refseg_ros.eval.report import finite

    cfg = fanout.IndexRunConfig(
        index=args.bag, out=args.out, engine=engine, workers=args.workers,
        address=args.address, gpus_per_worker=args.gpus_per_worker,
        max_retries=args.max_retries, prompt=args.prompt, overlaps=args.overlaps,
        camera_topic=args.camera_topic, gt_topic=args.gt_topic,
        reference_topic=args.bag_reference_topic, caption_topic=args.bag_caption_topic,
        max_frames=args.max_frames, worst_frames=args.worst_frames, overwrite=args.overwrite,
        progress=False if args.no_progress else None, mode=args.source,
        live=_live_settings(args) if args.source == "live" else {})
    outcome = fanout.run_index(cfg)
    if outcome.summary is None:
        print(f"already complete: all {len(outcome.reused)} sequences are finished, nothing "
              f"to do; report: {outcome.report_path}")
        return 0
    scalars = {k: v for k, v in finite(outcome.summary).items() if not isinstance(v, dict)}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in scalars.items()}))
    workers = f"{outcome.workers} worker" + ("s" if outcome.workers != 1 else "")
    print(f"{len(outcome.ran)} sequences run ({outcome.runtime}, {workers}), "
          f"{len(outcome.reused)} finished before, in {outcome.seconds:.1f} s")
    print(f"report: {outcome.report_path}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from refseg_ros.eval import builders

    if args.kind == "davis2017":
        from refseg_ros.eval.importers import davis2017

        print(davis2017.build(args.data_dir, args.out, split=args.split,
                              resolution=args.resolution, sequences=args.sequences,
                              storage=args.storage, fps=args.fps, overwrite=args.overwrite))
        return 0
    if args.kind in ("ref-davis", "ref-youtube-vos", "mevis"):
        from refseg_ros.eval.importers import refvos

        print(refvos.build(args.kind, args.data_dir, args.out, split=args.split,
                           videos=args.videos, storage=args.storage, fps=args.fps,
                           overwrite=args.overwrite))
        return 0
    if args.kind in ("fss1000", "deepglobe", "isic", "chest-xray"):
        from refseg_ros.eval.importers import fewshot

        print(fewshot.build(args.kind, args.data_dir, args.out, shots=args.shots,
                            seed=args.seed, episodes=args.episodes,
                            classes_file=args.classes_file, size=args.size or None,
                            storage=args.storage, overwrite=args.overwrite))
        return 0
    if args.kind in ("pascal5i", "coco20i"):
        from refseg_ros.eval.importers import pascal5i

        print(pascal5i.build(args.data_dir, args.lists, args.out, fold=args.fold,
                             shots=args.shots, seed=args.seed, episodes=args.episodes,
                             dataset="pascal" if args.kind == "pascal5i" else "coco",
                             storage=args.storage, overwrite=args.overwrite))
        return 0
    if args.kind == "synthetic":
        w, h = args.size
        out = builders.synthetic_to_bag(args.out, num_frames=args.frames, height=h, width=w,
                                        seed=args.seed, fps=args.fps, storage=args.storage,
                                        overwrite=args.overwrite, depth=args.depth)
    elif args.kind == "davis":
        out = builders.davis_to_bag(args.root, args.sequence, args.out, storage=args.storage,
                                    fps=args.fps, max_frames=args.max_frames,
                                    overwrite=args.overwrite)
    else:
        out = builders.fss_to_bag(args.root, args.out, storage=args.storage,
                                  episodes_per_class=args.episodes_per_class, seed=args.seed,
                                  classes=args.classes, shots=args.shots, overwrite=args.overwrite)
    print(out)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from refseg_ros.eval.report import compare_runs

    table = compare_runs(args.runs)
    print(table)
    if args.out is not None:
        from refseg_ros.atomicfile import atomic_write

        atomic_write(args.out, (table + "\n").encode())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    with bags.BagReader(args.bag) as r:
        print(f"bag: {r.path}")
        print(f"protocol: {r.protocol}")
        for topic in sorted(r.topics):
            print(f"  {topic}  {r.topics[topic]}  {r.counts.get(topic, 0)} msgs")
        labels = r.object_labels()
        if labels:
            print("objects: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from refseg_ros.eval.player import play_bag

    n = play_bag(args.bag, rate=args.rate, publish_clock=args.clock, topics=args.topics,
                 start_delay=args.start_delay, wait_for_subscribers=args.wait_subscribers,
                 wait_timeout=args.wait_timeout)
    print(f"published {n} messages")
    return 0


def _exit_code(exc: BaseException) -> Optional[int]:
    """The exit status for an error the command reports in one line; None: not one."""
    from refseg_ros.eval.outdir import OutputDirError
    from refseg_ros.eval.plan import PlanError

    if isinstance(exc, (bags.BagError, PlanError, OutputDirError, FileNotFoundError,
                        FileExistsError, ValueError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, RuntimeError):
        # Matched by name: the engine and rclpy are imported only by the commands using them.
        name = type(exc).__name__
        if name in ("CheckpointError", "PlayerError"):
            return EXIT_BAD_INPUT
        if name == "LiveEvalError":
            return 1
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"run": _cmd_run, "build": _cmd_build, "info": _cmd_info, "play": _cmd_play,
                "compare": _cmd_compare}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("refseg-eval: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:
        cause = getattr(exc, "cause", None) if type(exc).__name__ == "SequenceError" else None
        code = _exit_code(cause if isinstance(cause, BaseException) else exc)
        if code is None:
            raise
        print(f"refseg-eval: error: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
