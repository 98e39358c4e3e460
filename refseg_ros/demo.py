"""The main job on a default input: the segmenter node follows a taught object.

A synthetic camera (moving, occluding, re-appearing shapes with exact ground truth) is
published over DDS on this machine; a reference (the red disc shown alone on another
background) is taught on the reference topic; the node, in its own process, publishes
masks, objects and overlays, which are written to the output folder as PNG images and
JSON lines, with a contact sheet of the overlays.

The model runs on the checkpoint given, else the weights cache's; a checkpoint missing
from the cache is fetched there first (refseg-weights' resumable download) unless
--no-download. A machine that cannot reach the server goes on with random weights, and
the first line of output says which weights are used.

A caption ("the red disc") is taught too, on the caption topic, when a text model is in
the Hugging Face cache (fetched there first, as `refseg-weights --for captions` does,
under the same --no-download and --connect-timeout); the node's `text_path: auto` finds
it. Without one, one line says why captions are not tracked and how to fetch the model.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

TOPIC = "/camera/image_raw"
STATE_NAMES = ("acquiring", "tracked", "occluded", "lost")  # SegmentedObject.STATE_*
NODE = "/refseg"
CONNECT_TIMEOUT = 3.0  # seconds for name lookup + connection before the demo calls itself offline
CAPTION = "the red disc"


@dataclass(frozen=True)
class Weights:
    """The weights the demo runs on: a checkpoint file, or random ones and why."""

    checkpoint: Optional[str]
    note: str = ""  # where a checkpoint came from, or why there is none

    def first_line(self) -> str:
        """The demo's first line of output: which weights it uses."""
        if self.checkpoint:
            return f"refseg-demo: weights from {self.checkpoint}{f' ({self.note})' if self.note else ''}"
        return (f"refseg-demo: RANDOM WEIGHTS - {self.note}, so the masks show the pipeline at work, "
                f"not what a trained SAM2 finds.")


def resolve_checkpoint(
    given: Optional[str],
    model: str,
    download: bool = True,
    base_url: Optional[str] = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = 30.0,
) -> Weights:
    """The weights to use: the checkpoint given, else the weights cache's, else a download.

    A model whose official checkpoint is not in the cache ($REFSEG_WEIGHTS) is fetched into
    it from `base_url` (default `$REFSEG_WEIGHTS_URL`, else the official site) with
    refseg-weights' resumable, size-checked download, unless `download` is false. The
    server must accept a connection within `connect_timeout` seconds and then send
    something at least every `read_timeout` seconds; a fetched file is loaded into the
    model once before it is used, and removed from the cache if it does not load. Any
    failure to fetch gives random weights with the reason, never an error. Progress and
    notes go to stderr.

    Raises SystemExit when `given` names a file that does not exist.
    """
    if given:
        if not Path(given).is_file():
            raise SystemExit(f"refseg-demo: checkpoint {given} does not exist")
        return Weights(given)
    from .engine import weights

    found = weights.cached_checkpoint(model)
    if found:
        return Weights(str(found))
    entry = weights.CHECKPOINTS.get(model)
    if entry is None:
        return Weights(None, f"no checkpoint given, and {model} has no official checkpoint to fetch")
    dest = weights.cache_dir() / entry.filename
    if not download:
        return Weights(None, f"no checkpoint given or cached ({dest}), and --no-download")
    url = weights.checkpoint_url(model, base_url)
    print(f"refseg-demo: fetching the {model} checkpoint from {url} into {dest} "
          f"(--no-download to skip) ...", file=sys.stderr, flush=True)
    show = weights._print_progress(model)
    line_open = False  # a progress line without its newline is on stderr

    def progress(done: int, total: Optional[int]) -> None:
        nonlocal line_open
        line_open = True
        show(done, total)

    def note(text: str) -> None:
        nonlocal line_open
        print(("\n" if line_open else "") + f"refseg-demo: {text}", file=sys.stderr, flush=True)
        line_open = False

    try:
        weights.probe(url, connect_timeout)
        weights.download(url, dest, entry.sha256, progress=progress, timeout=read_timeout)
    except (weights.DownloadError, OSError) as exc:
        note(str(exc))
        note(f"for trained weights run `refseg-weights {model}` when online, copy {entry.filename} "
             f"into {dest.parent}, or pass --checkpoint PATH")
        return Weights(None, f"the {model} checkpoint is not cached and could not be fetched from {url}")
    note(f"saved {dest}; checking that it loads into {model}")
    problem = checkpoint_problem(dest, model)
    if problem:
        for path in (dest, dest.with_name(dest.name + ".sha256")):
            path.unlink(missing_ok=True)
        note(f"removed it again: {problem}")
        return Weights(None, f"the {model} checkpoint fetched from {url} does not load")
    return Weights(str(dest), f"fetched from {url}")


@dataclass(frozen=True)
class TextModel:
    """The text model the node's `text_path: auto` will find (a hub id), or None and why not."""

    repo_id: Optional[str]
    note: str = ""

    def line(self) -> str:
        """The demo's line about captions."""
        if self.repo_id:
            return f"refseg-demo: captions through {self.repo_id} ({self.note}): teaching {CAPTION!r} too"
        return (f"refseg-demo: captions not tracked - {self.note}; fetch a text model with "
                f"`refseg-weights --for captions` (or pass --no-caption)")


def resolve_text_model(download: bool = True, connect_timeout: float = CONNECT_TIMEOUT,
                       read_timeout: float = 30.0) -> TextModel:
    """A detector in the Hugging Face cache for the caption, fetched there first if none is.

    The first of `models.AUTO_DETECTORS` that is cached is taken; else the captions mode's
    detector is fetched from the hub (`$HF_ENDPOINT`) unless `download` is false, the hub
    cannot be reached within `connect_timeout` seconds, or `$HF_HUB_OFFLINE` is set. Never
    raises: a failure is the returned note. Progress goes to stderr.
    """
    from huggingface_hub import constants

    from . import models
    from .engine import weights

    for name in models.AUTO_DETECTORS:
        if models.cached_hub_model(models.MODELS[name].source):
            return TextModel(models.MODELS[name].source, "in the Hugging Face cache")
    entry = next(models.MODELS[n] for n in models.MODES["captions"] if n in models.AUTO_DETECTORS)
    if not download:
        return TextModel(None, f"no text model in the Hugging Face cache ({models.hub_cache()}), and --no-download")
    if constants.HF_HUB_OFFLINE:
        return TextModel(None, f"no text model in the Hugging Face cache ({models.hub_cache()}), and HF_HUB_OFFLINE")
    print(f"refseg-demo: fetching the text model {entry.source} ({entry.size_mb} MB) from {constants.ENDPOINT} "
          f"into {models.hub_cache()} (--no-download to skip) ...", file=sys.stderr, flush=True)
    try:
        weights.probe(constants.ENDPOINT, connect_timeout)
        models.fetch_hub(entry.source)
    except weights.DownloadError as exc:
        return TextModel(None, f"{entry.source} is not cached and could not be fetched ({exc})")
    return TextModel(entry.source, f"fetched from {constants.ENDPOINT}")


def checkpoint_problem(path: Path, model: str) -> Optional[str]:
    """Why the checkpoint file at `path` does not load into `model` (None when it does).

    The state dict does not depend on the image size, so a small model is built to check.
    """
    from .engine.errors import CheckpointError
    from .engine.model import build_model, load_checkpoint

    try:
        load_checkpoint(build_model(model, image_size=128), path)
    except CheckpointError as exc:
        return str(exc)
    return None


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="refseg-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--frames", type=int, default=30, help="frames of the synthetic camera")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--rate", type=float, default=5.0, help="camera frames per second")
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--checkpoint", default=None,
                        help="SAM2 checkpoint (default: the weights cache's, fetched there first if missing)")
    parser.add_argument("--no-download", action="store_true",
                        help="do not fetch a missing checkpoint (random weights unless one is given or cached)")
    parser.add_argument("--weights-url", default=None,
                        help="where to fetch checkpoints from (default $REFSEG_WEIGHTS_URL, else the official site)")
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT,
                        help="seconds to reach the weights server before going on offline")
    parser.add_argument("--no-caption", action="store_true",
                        help=f"teach the reference only, not the caption {CAPTION!r}")
    parser.add_argument("--image-size", type=int, default=None,
                        help="model input size (default: 1024 with a checkpoint, 256 on random weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="give up when the node has sent nothing for this many seconds")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    chosen = resolve_checkpoint(args.checkpoint, args.model, download=not args.no_download,
                                base_url=args.weights_url, connect_timeout=args.connect_timeout)
    checkpoint = chosen.checkpoint
    print(chosen.first_line(), flush=True)
    text = (TextModel(None, "--no-caption") if args.no_caption else
            resolve_text_model(download=not args.no_download, connect_timeout=args.connect_timeout))
    args.caption = CAPTION if text.repo_id else ""
    if not args.no_caption:
        print(text.line(), flush=True)
    image_size = args.image_size or (1024 if checkpoint else 256)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()

    from .eval.synthetic import generate, render_reference

    scene = generate(num_frames=args.frames, height=args.height, width=args.width, seed=0)
    reference = render_reference(1, height=args.height, width=args.width, seed=0)
    node = start_node(args, checkpoint, image_size)
    try:
        return run_camera(args, scene, reference, node)
    finally:
        stop_node(node)


def start_node(args: argparse.Namespace, checkpoint: Optional[str], image_size: int) -> subprocess.Popen:
    params = {
        "cameras": f"[{TOPIC}]", "mode": "replay", "model": args.model,
        "image_size": str(image_size), "device": args.device, "store_dir": str(args.out / "store"),
    }
    if checkpoint:
        params["checkpoint"] = checkpoint
    command = [sys.executable, "-m", "refseg_ros.ros.main", "--ros-args"]
    for name, value in params.items():
        command += ["-p", f"{name}:={value}"]
    log = open(args.out / "node.log", "w")
    print(f"refseg-demo: starting the node (log: {args.out / 'node.log'})", flush=True)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop_node(node: subprocess.Popen) -> None:
    if node.poll() is None:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()


def run_camera(args, scene, reference, node_process: subprocess.Popen) -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header, String

    from .msg import ReferenceTarget, SegmentedObjectArray
    from .ros.conversions import image_message

    rclpy.init()
    node = rclpy.create_node("refseg_demo_camera")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    camera = node.create_publisher(Image, TOPIC, reliable)
    teach = node.create_publisher(ReferenceTarget, f"{NODE}/reference", reliable)
    say = node.create_publisher(String, f"{NODE}/caption", reliable)
    results: dict[int, dict] = {}
    status: list[str] = []
    lock = threading.Condition()
    stamp_to_index: dict[int, int] = {}  # header stamp of each frame sent (ns) -> its index

    # The time of the node's last message. The run is allowed as long as the node keeps
    # answering: at 1024 px on a small CPU a frame can take 10 s, so 30 frames outlast
    # any fixed limit that still catches a stuck node quickly.
    heard = [time.monotonic()]

    def on_status(msg: String) -> None:
        with lock:
            heard[0] = time.monotonic()
            status.append(msg.data)
            print(f"  status: {msg.data}", flush=True)
            lock.notify_all()

    def keep(kind: str):
        def callback(msg) -> None:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with lock:
                index = stamp_to_index.get(stamp)
                if index is None:
                    return
                heard[0] = time.monotonic()
                results.setdefault(index, {})[kind] = msg
                lock.notify_all()
        return callback

    node.create_subscription(String, f"{NODE}/status", on_status, latched)
    node.create_subscription(Image, f"{TOPIC}/refseg/mask", keep("mask"), reliable)
    node.create_subscription(SegmentedObjectArray, f"{TOPIC}/refseg/objects", keep("objects"), reliable)
    node.create_subscription(Image, f"{TOPIC}/refseg/overlay", keep("overlay"), reliable)
    spinner = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
    spinner.start()

    def wait_for(predicate, what: str) -> None:
        with lock:
            while not predicate():
                if node_process.poll() is not None:
                    raise SystemExit(f"refseg-demo: the node exited ({node_process.returncode}) while waiting for "
                                     f"{what}; see {args.out / 'node.log'}")
                if time.monotonic() - heard[0] > args.timeout:
                    raise SystemExit(f"refseg-demo: timed out waiting for {what} (nothing from the node "
                                     f"for {args.timeout:g} s)")
                lock.wait(0.2)

    try:
        wait_for(lambda: camera.get_subscription_count() > 0 and teach.get_subscription_count() > 0,
                 "the node to subscribe")
        header = Header(frame_id="reference")
        # A fixed id: a second run replaces the target its store restored, not adds one.
        ref = ReferenceTarget(header=header, target_id=1, label="red disc", camera="")
        ref.image = image_message(reference.image, "rgb8", header)
        ref.mask = image_message(reference.mask.astype(np.uint8) * 255, "mono8", header)
        teach.publish(ref)
        print("refseg-demo: taught a reference 'red disc' on the reference topic", flush=True)
        answered = lambda: [s for s in status if "'red disc'" in s and s.startswith(("taught", "replaced", "rejected"))]
        wait_for(lambda: answered(), "the node to acknowledge the reference")
        if answered()[0].startswith("rejected"):
            raise SystemExit("refseg-demo: the node rejected the reference; see the status above")
        if args.caption:
            teach_caption(args.caption, say, status, wait_for)
        period = 1.0 / args.rate
        for index, frame in enumerate(scene.frames):
            # A live camera: each frame is stamped with the time it is taken, on this
            # node's clock (ROS time; /clock under use_sim_time), as a camera driver does.
            head = Header(frame_id="camera", stamp=node.get_clock().now().to_msg())
            with lock:
                stamp_to_index[head.stamp.sec * 1_000_000_000 + head.stamp.nanosec] = index
            camera.publish(image_message(frame, "rgb8", head))
            time.sleep(period)
        wait_for(lambda: all(len(results.get(i, {})) >= 3 for i in range(len(scene))), "results of every frame")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return write_outputs(args, scene, results)


def teach_caption(caption: str, say, status: list[str], wait_for) -> None:
    """Publish `caption` once on the caption topic and wait for the node's answer on status."""
    from std_msgs.msg import String

    wait_for(lambda: say.get_subscription_count() > 0, "the node to subscribe to captions")
    say.publish(String(data=caption))
    print(f"refseg-demo: taught a caption {caption!r} on the caption topic", flush=True)
    answered = lambda: [s for s in status if f"'{caption}'" in s]
    wait_for(lambda: answered(), "the node to acknowledge the caption")
    if answered()[0].startswith("rejected"):
        raise SystemExit("refseg-demo: the node rejected the caption; see the status above")


def write_outputs(args, scene, results) -> int:
    import cv2

    from .eval.metrics import region_similarity as jaccard
    from .ros.conversions import image_array

    lines, overlays, scores = [], [], []
    with open(args.out / "objects.jsonl", "w") as handle:
        for index in range(len(scene)):
            got = results[index]
            label = image_array(got["mask"])
            overlay = image_array(got["overlay"])
            cv2.imwrite(str(args.out / f"mask_{index:04d}.png"), label)
            cv2.imwrite(str(args.out / f"overlay_{index:04d}.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            overlays.append(overlay)
            objects = [{
                "target_id": o.target_id, "label": o.label, "score": round(float(o.score), 4),
                "state": STATE_NAMES[o.state] if o.state < len(STATE_NAMES) else str(o.state),
                "box": [o.bbox.x_offset, o.bbox.y_offset, o.bbox.width, o.bbox.height], "mask_value": o.mask_value,
            } for o in got["objects"].objects]
            stamp = got["objects"].header.stamp
            record = {"frame": index, "stamp_ns": stamp.sec * 1_000_000_000 + stamp.nanosec, "objects": objects}
            handle.write(json.dumps(record) + "\n")
            for o in got["objects"].objects:
                if o.mask_value:
                    scores.append(jaccard(label == o.mask_value, scene.masks[index][1]))
            lines.append(record)
    sheet = contact_sheet(overlays[:: max(1, len(overlays) // 12)][:12])
    cv2.imwrite(str(args.out / "contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print("refseg-demo: object topic, one line per frame:")
    for record in lines:
        desc = "; ".join(f"id {o['target_id']} '{o['label']}' state {o['state']} score {o['score']:.2f} "
                         f"box {o['box']}" for o in record["objects"]) or "no objects"
        print(f"  frame {record['frame']:3d}: {desc}")
    mean_j = float(np.mean(scores)) if scores else 0.0
    print(f"refseg-demo: {len(lines)} frames; mean J of the red disc {mean_j:.3f}")
    print(f"refseg-demo: wrote {args.out}/overlay_*.png, mask_*.png, objects.jsonl, contact_sheet.png")
    return 0


def contact_sheet(images: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Overlays tiled in a grid, for a look at the whole run in one picture."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return sheet


if __name__ == "__main__":
    sys.exit(main())
