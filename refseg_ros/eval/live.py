"""Live evaluation: results from the segmenter node in replay mode, fed over DDS.

:class:`LiveNodeSource` plugs into the runner like the offline source. It starts the
node as a child process (``python -m refseg_ros.ros.main``, mode replay, the offline
run's model settings, a fresh target store, private node and topic names so that
nothing else on the ROS domain interferes), plays the bag's camera frames to it (raw CDR
bytes, reliable), teaches the targets, and turns the node's label image and object list
of each stamp back into per-target masks (see ``node_outputs``).

Reproducing the offline protocol exactly. The engine pins a prompt given with its image
at the index of the last frame it processed, and the node always teaches with an image
(a reference's own, or a frame); memory selection depends only on index differences.
So:

- references (``reference-topic``, one-shot): once every earlier frame has its result,
  the reference goes out on the node's reference topic and playback waits for the
  node's acknowledgement, then continues: the reference is pinned right before the
  frame the offline replay adds it before. A further reference of a target already
  taught goes out with ``add_view`` (k-shot), as the offline replay adds an example;
- masks on a frame (``first-frame-gt``): the frame is sent alone, and once its result is
  in, AddTarget gives the node the mask on that frame's image: pinned at that frame,
  as offline. The node has not seen the target on that frame, so that frame's result
  lacks the target; the protocol never scores a target on its prompt frame;
- one-shot episodes: ResetTargets between episodes (offline: a fresh stream).

An episode mixing the two kinds of prompt cannot be reproduced this way and is refused.
Between teaching points frames are sent as fast as the node answers, at most ``window``
ahead of its latest result, so that no reliable sample is ever pushed out of the
publisher's queue before it is delivered. Everything else is refused with
:class:`LiveEvalError`, which names the bag, the topic and the frames concerned and
ends with the node's last log lines.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from refseg_ros.eval import bags, metrics
from refseg_ros.eval.node_outputs import NodeOutput, object_masks
from refseg_ros.eval.nodeproc import NodeProcess, node_command, node_environment
from refseg_ros.eval.plan import Episode, EvalPlan, TargetPrompt
from refseg_ros.eval.sources import EngineSettings, FrameResult

log = logging.getLogger("refseg_ros.eval")

CAMERA_TYPES = (bags.IMAGE_TYPE, bags.COMPRESSED_TYPE)


class LiveEvalError(RuntimeError):
    """The node could not be started, taught or heard, or the plan cannot be reproduced
    over the node's interface."""


@dataclass
class LiveSettings:
    """How patient the live source is, and where the node's output goes."""

    startup_timeout: float = 300.0  # s for the node to load its model and come up
    result_timeout: float = 60.0  # s for any one answer (a frame's result, a teaching ack)
    window: int = 16  # frames sent ahead of the node's latest result
    log_path: Optional[Path] = None  # the node's output; default: a temporary folder
    diagnostics_period: float = 0.25  # the node's /diagnostics period, s


def check_reproducible(plan: EvalPlan) -> None:
    """Refuse plans whose teaching the node's interface cannot reproduce exactly."""
    for ep in plan.episodes:
        kinds = {p.kind for p in ep.prompts}
        if len(kinds) > 1:
            raise LiveEvalError(
                f"episode {ep.index} teaches both references and masks on frames; the live "
                "mode reproduces the offline order of teaching only for one kind per episode")
        for p in ep.prompts:
            if p.kind == "mask" and (p.on_frame not in ep.frames
                                     or plan.frame_stamps[p.on_frame] != p.stamp_ns):
                raise LiveEvalError(f"target {p.target_id}'s mask lies on no frame of episode "
                                    f"{ep.index}; the live mode teaches masks on their frame")


class LiveNodeSource:
    """Results of the node in replay mode (see the module docstring)."""

    def __init__(self, engine: EngineSettings, live: Optional[LiveSettings] = None) -> None:
        self.settings = engine
        self.live = live or LiveSettings()
        self._info: dict[str, Any] = {}

    def fingerprint(self) -> dict[str, Any]:
        return {"mode": "live", **self.settings.as_dict()}

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": "live", **self.settings.as_dict()}
        out["random_weights"] = not self.settings.checkpoint
        out.update(self._info)
        return out

    def timing_label(self) -> str:
        return ("node time per frame over DDS: from when the node could start the frame "
                "(sent, and the previous result received) to its result arriving")

    def results(self, plan: EvalPlan, reader: bags.BagReader, camera_topic: str,
                skip: set[int]) -> Iterator[FrameResult]:
        check_reproducible(plan)
        text = self.settings.text
        if text is not None and text.text_mode == "clip" and text.chosen() == "samwise":
            raise LiveEvalError("the live mode evaluates SAMWISE's causal mode; in clip mode the node "
                                "publishes a clip's results late, as extra messages (evaluate clip mode "
                                "offline)")
        recipe = self.settings.recipe()
        if recipe.tracker == "fssam" and not recipe.acquisition:
            raise LiveEvalError("the node gates FSSAM targets by FSSAM's own DINOv2 (runtime.recipes.for_node): "
                                "evaluate fssam+acquisition live, or plain fssam offline")
        todo = {i: ep for ep in plan.episodes if ep.index not in skip for i in ep.frames}
        if not todo:
            return
        session = LiveSession(self.settings, self.live, reader, camera_topic)
        try:
            session.start()
            yield from session.play(plan, todo)
            session.finish()
        finally:
            try:
                session.close()
            finally:
                self._info = session.summary()


class LiveSession:
    """One node process and its client, for one pass over the bag's frames."""

    def __init__(self, engine: EngineSettings, live: LiveSettings, reader: bags.BagReader,
                 camera_topic: str) -> None:
        self.engine = engine
        self.live = live
        self.reader = reader
        self.camera_topic = camera_topic
        self.msgtype = reader.require_topic(camera_topic, CAMERA_TYPES)
        self.name = f"refseg_eval_{os.getpid()}_{secrets.token_hex(3)}"
        # A private topic: no other node or player on the domain gets in between.
        self.node_topic = f"/{self.name}/{camera_topic.strip('/')}"
        self.tmp = Path(tempfile.mkdtemp(prefix="refseg-live-"))
        self.log_path = Path(live.log_path) if live.log_path else self.tmp / "node.log"
        self.proc: Optional[NodeProcess] = None
        self.client: Any = None
        self.inflight: collections.deque[tuple[int, int, int]] = collections.deque()
        self.sent_at: dict[int, float] = {}
        self.id_map: dict[int, int] = {}  # node target id -> ground-truth id
        self.latencies: list[float] = []
        self.prev_arrival: Optional[float] = None
        self.published = 0
        self.failed = False
        self._status_checked = 0

    # ------------------------------------------------------------------- errors
    def where(self) -> str:
        return f"bag {self.reader.path}, camera topic {self.camera_topic!r}"

    def fail(self, text: str) -> LiveEvalError:
        self.failed = True
        msg = f"live evaluation of {self.where()}: {text}"
        tail = self.proc.log_tail() if self.proc is not None else ""
        if tail:
            msg += f"\nlast lines of the node's log ({self.log_path}):\n{tail}"
        return LiveEvalError(msg)

    def check_health(self, doing: str) -> None:
        """Raise if the node died, sent output that is unreadable or unpaired, or rejected a frame."""
        if self.proc is not None and not self.proc.alive():
            raise self.fail(f"the node exited with status {self.proc.returncode} while "
                            f"{doing}")
        errors = self.client.errors()
        if errors:
            raise self.fail(f"bad output from the node: {errors[0]}")
        lines = self.client.status_lines(self._status_checked)
        self._status_checked += len(lines)
        for line in lines:
            if line.startswith("rejected frame"):
                raise self.fail(f"the node {line}")

    # ---------------------------------------------------------------- lifecycle
    def node_params(self) -> dict[str, Any]:
        transport = "compressed" if self.msgtype == bags.COMPRESSED_TYPE else "raw"
        params: dict[str, Any] = {
            "mode": "replay", "cameras": [self.node_topic], "camera_transports": [transport],
            "model": self.engine.model, "checkpoint": self.engine.checkpoint or "",
            "device": self.engine.device, "seed": self.engine.seed,
            "encoder_backend": self.engine.encoder_backend, "encoder_precision": self.engine.encoder_precision,
            "store_dir": str(self.tmp / "store"), "object_masks": True,
            "diagnostics_period": self.live.diagnostics_period,
        }
        if self.engine.image_size is not None:
            params["image_size"] = self.engine.image_size
        if self.engine.compute_threads:
            params["compute_threads"] = self.engine.compute_threads
        if self.engine.text is not None:
            params.update({k: v for k, v in vars(self.engine.text).items()})
        params.update(self.engine.reference_parameters())
        return params

    def start(self) -> None:
        """Start client and node; return once the node is active and connected."""
        try:
            from refseg_ros.eval.eval_client import ReplayClient
        except ImportError as exc:
            raise self.fail(f"the live mode needs rclpy and the generated refseg_ros messages "
                            f"(source scripts/env.sh, or a built and sourced workspace): "
                            f"{exc}") from exc

        # The evaluation and its node share the environment: same domain, and DDS on
        # this machine unless the caller said otherwise.
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        key = self.node_topic
        if key.endswith("/compressed"):
            key = key[: -len("/compressed")]
        self.client = ReplayClient(self.name, self.node_topic, self.msgtype, key,
                                   depth=self.live.window + 4)
        cmd = node_command(self.node_params(), self.name)
        log.info("starting the node: %s", " ".join(cmd))
        self.proc = NodeProcess(cmd, self.log_path, node_environment())
        deadline = time.monotonic() + self.live.startup_timeout
        while True:
            if not self.proc.alive():
                raise self.fail(f"the node exited with status {self.proc.returncode} before "
                                "it became active (a bad parameter, model or checkpoint?)")
            active = any(s.startswith("active (") for s in self.client.status_lines())
            if active and self.client.connected() and self.client.services_ready():
                return
            if time.monotonic() > deadline:
                raise self.fail(f"the node did not become active within "
                                f"{self.live.startup_timeout:.0f} s")
            self.client.wait(0.1)

    def finish(self) -> None:
        """Wait briefly for a /diagnostics report that counts every frame sent."""
        deadline = time.monotonic() + 4 * self.live.diagnostics_period + 3.0
        while time.monotonic() < deadline:
            diag = self.client.camera_diagnostics or {}
            if (_int(diag.get("frames_processed")) or 0) >= self.published and \
                    self.client.diagnostics_received > (self.prev_arrival or 0.0):
                return
            self.client.wait(0.05)
        log.info("no final /diagnostics report from the node; the last one is reported")

    def close(self) -> None:
        """Stop the node, then the client; the temporary folder goes unless it holds the
        log of a failed run."""
        try:
            if self.proc is not None:
                code = self.proc.stop()
                log.info("node stopped (exit status %s)", code)
        finally:
            try:
                if self.client is not None:
                    self.client.close()
            finally:
                keep = (self.failed and self.log_path.parent == self.tmp
                        and self.log_path.exists())
                shutil.rmtree(self.tmp / "store", ignore_errors=True)
                if not keep:
                    shutil.rmtree(self.tmp, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        """What the report says about the node: its counters, model and latency."""
        out: dict[str, Any] = {"node": {"name": self.name, "camera_topic": self.node_topic,
                                        "log": str(self.log_path),
                                        "frames_sent": self.published,
                                        "exit_status": self.proc.returncode if self.proc
                                        else None}}
        client = self.client
        diag = getattr(client, "camera_diagnostics", None)
        if diag:
            out["node_diagnostics"] = {k: _int(diag.get(k)) for k in (
                "frames_received", "frames_processed", "frames_dropped", "frames_rejected")}
        model = getattr(client, "model_diagnostics", None)
        if model:
            out["random_weights"] = "random weights" in model.get("message", "")
            out["resolved_device"] = model.get("device")
            out["model_image_size"] = _int(model.get("image_size"))
        out["end_to_end_latency"] = dict(
            metrics.latency_summary(self.latencies),
            what="result arrival - frame publication (includes waiting behind earlier frames)")
        return out

    # ------------------------------------------------------------------ playing
    def play(self, plan: EvalPlan, todo: dict[int, Episode]) -> Iterator[FrameResult]:
        """Send the frames of ``todo`` in order, teaching as the offline replay does."""
        last = max(todo)
        current: Optional[Episode] = None
        pending: list[TargetPrompt] = []
        frames = self.reader.raw_messages([self.camera_topic])
        for index, (_, _, raw) in enumerate(frames):
            if index > last:
                break
            ep = todo.get(index)
            if ep is None:
                continue
            stamp = plan.frame_stamps[index]
            if current is None or ep.index != current.index:
                yield from self.drain()
                if current is not None:
                    self.reset(ep)
                current = ep
                pending = sorted(ep.prompts, key=lambda p: p.stamp_ns)
            references = []
            while pending and pending[0].stamp_ns <= stamp and pending[0].kind in ("reference", "caption"):
                references.append(pending.pop(0))
            on_frame = []
            while pending and pending[0].stamp_ns <= stamp:
                on_frame.append(pending.pop(0))
            if references:
                yield from self.drain()
                for p in references:
                    if p.caption:
                        self.teach_caption(p)
                    else:
                        self.teach_reference(p)
            while len(self.inflight) >= max(1, self.live.window):
                yield self.collect()
            self.sent_at[stamp] = self.client.publish_frame(raw)
            self.inflight.append((index, stamp, ep.index))
            self.published += 1
            if on_frame:
                yield from self.drain()
                image = _decode(raw, self.msgtype)
                for p in on_frame:
                    self.teach_mask(p, image, index)
        yield from self.drain()

    def drain(self) -> Iterator[FrameResult]:
        while self.inflight:
            yield self.collect()

    def collect(self) -> FrameResult:
        """Wait for the result of the oldest frame in flight."""
        index, stamp, episode = self.inflight[0]
        deadline = time.monotonic() + self.live.result_timeout
        while True:
            out = self.client.take(stamp)
            if out is not None:
                break
            self.check_health(f"frame {index} (stamp {stamp}) was being processed")
            if time.monotonic() > deadline:
                missing = [i for i, _, _ in self.inflight]
                shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
                raise self.fail(f"no result from the node within {self.live.result_timeout:.0f}"
                                f" s for {len(missing)} frame(s) sent: frames {shown} (the "
                                f"first stamped {stamp})")
            self.client.wait(0.05)
        self.inflight.popleft()
        return self.to_result(out, index, episode)

    def to_result(self, out: NodeOutput, index: int, episode: int) -> FrameResult:
        try:
            by_node = object_masks(out)
        except ValueError as exc:
            raise self.fail(f"frame {index}: {exc}") from None
        masks: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        states: dict[int, str] = {}
        for obj in out.objects:
            gid = self.id_map.get(obj.target_id)
            if gid is None:
                log.warning("frame %d: the node reports target %d, which the evaluation did "
                            "not teach; ignored", index, obj.target_id)
                continue
            masks[gid] = by_node[obj.target_id]
            scores[gid] = obj.score
            states[gid] = obj.state
        sent = self.sent_at.pop(out.stamp_ns)
        start = max(sent, self.prev_arrival) if self.prev_arrival is not None else sent
        self.latencies.append(out.received - sent)
        self.prev_arrival = out.received
        return FrameResult(out.stamp_ns, episode, masks, scores, states, out.received - start)

    # ----------------------------------------------------------------- teaching
    def teach_reference(self, p: TargetPrompt) -> None:
        """Publish the reference and wait for the node to say it has it."""
        since = len(self.client.status_lines())
        add_view = p.target_id in self.id_map
        self.client.publish_reference(p.target_id, p.label, p.image, p.mask, add_view=add_view)
        ok = re.compile(rf"^added view \d+ to target {p.target_id}\b" if add_view else
                        rf"^(taught|replaced) target {p.target_id}\b")
        deadline = time.monotonic() + self.live.result_timeout
        while True:
            for line in self.client.status_lines(since):
                if ok.match(line):
                    self.id_map[p.target_id] = p.target_id
                    return
                if line.startswith("rejected reference"):
                    raise self.fail(f"the node refused the reference for target "
                                    f"{p.target_id} ({p.label!r}): {line}")
            if self.proc is not None and not self.proc.alive():
                self.check_health(f"target {p.target_id} was being taught")
            if time.monotonic() > deadline:
                raise self.fail(f"the node did not acknowledge the reference for target "
                                f"{p.target_id} within {self.live.result_timeout:.0f} s")
            self.client.wait(0.05)

    def teach_caption(self, p: TargetPrompt) -> None:
        """AddTarget with the caption; the node's id is mapped to the ground-truth id."""
        resp = self.client.add_caption_target(p.label, p.caption, self.live.result_timeout, self.proc.alive)
        if resp is None:
            self.check_health(f"caption target {p.target_id} was being taught")
            raise self.fail(f"AddTarget for caption target {p.target_id} got no answer within "
                            f"{self.live.result_timeout:.0f} s")
        if not resp.success or "is waiting" in resp.message:
            raise self.fail(f"the node does not track caption target {p.target_id} ({p.caption!r}): "
                            f"{resp.message}")
        self.id_map[int(resp.target_id)] = p.target_id

    def teach_mask(self, p: TargetPrompt, image: np.ndarray, index: int) -> None:
        """AddTarget with the mask on the frame the node has just processed."""
        resp = self.client.add_mask_target(p.label, image, p.mask, self.live.result_timeout,
                                           self.proc.alive)
        if resp is None:
            self.check_health(f"target {p.target_id} was being taught on frame {index}")
            raise self.fail(f"AddTarget for target {p.target_id} on frame {index} got no "
                            f"answer within {self.live.result_timeout:.0f} s")
        if not resp.success:
            raise self.fail(f"the node refused target {p.target_id} ({p.label!r}) on frame "
                            f"{index}: {resp.message}")
        self.id_map[int(resp.target_id)] = p.target_id

    def reset(self, ep: Episode) -> None:
        """Forget the previous episode's targets (offline: a fresh stream)."""
        resp = self.client.reset_targets(self.live.result_timeout, self.proc.alive)
        if resp is None or not resp.success:
            self.check_health(f"targets were being reset before episode {ep.index}")
            why = resp.message if resp is not None else "no answer"
            raise self.fail(f"resetting the targets before episode {ep.index} failed: {why}")
        self.id_map = {}


def _decode(raw: bytes, msgtype: str) -> np.ndarray:
    """A bag frame's CDR bytes as RGB, decoded as the offline replay decodes it."""
    msg = bags.typestore().deserialize_cdr(raw, msgtype)
    return bags.message_to_rgb(msg, msgtype)


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
