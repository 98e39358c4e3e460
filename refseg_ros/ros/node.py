"""The segmenter: one lifecycle node, one model, several cameras.

Lifecycle:
  configure   read parameters, build the engine (model), open the target store and teach
              the engine every stored target again; the target services come up here,
              so targets can be listed and taught while the node is inactive.
  activate    create publishers and subscriptions, start the worker thread.
  deactivate  stop the worker, drop subscriptions and publishers, give device memory back
              (targets and their memories stay).
  cleanup     drop the engine and the services.

Frames are handed from subscription callbacks to a single worker through a mailbox
(refseg_ros.runtime.mailbox): live mode keeps only each camera's newest frame, replay
mode keeps every frame in order. Frames arrive serialized and only the one the worker
takes is deserialized and converted (refseg_ros.ros.camera), and the model's CPU threads
leave a core for intake (refseg_ros.runtime.threads, parameter compute_threads), so a fast
camera does not slow the model down. Teaching is acknowledged (service reply or status
message) only after the target store has it on disk.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Optional

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import Header, String

from ..engine import EngineConfig, EngineError, SegmentationEngine
from ..runtime import geometry
from ..runtime.headers import HEADER_PROBLEMS, header_problems, plausible_latency
from ..runtime.mailbox import Closed, Envelope, FrameMailbox
from ..runtime.captions import open_caption_path
from ..runtime.recipes import open_for_node
from ..runtime.registry import TargetRegistry, TeachError, camera_key
from ..runtime.render import label_image
from ..runtime.threads import apply_threads, plan_threads
from ..store import TargetStore
from refseg_ros.msg import ReferenceTarget, TargetInfo
from refseg_ros.srv import AddTarget, ListTargets, RemoveTarget, ResetTargets
from . import params, qos, requests
from .rclpy_compat import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from .camera import CameraChannel, output_topic
from .conversions import depth_from_message, frame_from_message, intrinsics_from_camera_info
from .diagnostics import camera_status, diagnostic_array, missing_frames, model_status
from .params_file import NODE_NAME
from .lifecycle import ReleasingNode
from .standard_outputs import StandardOutputs

# The one warning of a node without a checkpoint (logged at configure; /diagnostics says it too).
RANDOM_WEIGHTS_WARNING = ("no checkpoint given: the model has random weights and its masks are meaningless "
                          "(fine for tests, not for use)")


class SegmenterNode(ReleasingNode):
    """Finds and follows taught targets in every configured camera."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        params.declare(self)
        self.settings: Optional[params.Settings] = None  # set by configure, None when unconfigured
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.engine: Optional[SegmentationEngine] = None
        self.registry: Optional[TargetRegistry] = None
        self.cameras: dict[str, CameraChannel] = {}
        self._target_services: list = []
        self._teaching_subs: list = []
        self._status_pub = None
        self._diag_pub = None
        self._diag_timer = None
        self._outputs: Optional[StandardOutputs] = None  # vision_msgs detections and target TF frames
        self._mailbox: Optional[FrameMailbox] = None
        self._worker: Optional[threading.Thread] = None
        self._latest: dict[str, np.ndarray] = {}
        self._history: dict[str, dict[int, tuple]] = {}  # clip mode: frame index -> (header, rgb)
        self._pending_status: list[str] = []
        self._last_reported: dict[tuple[str, str], float] = {}
        self._said_once: set[tuple[str, str]] = set()  # (camera, kind) of warnings given once
        self._teach_group = MutuallyExclusiveCallbackGroup()
        self._frame_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()

    # ================================================================== lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = params.read(self)
            cameras = {}
            for i, topic in enumerate(settings.cameras):
                channel = CameraChannel(camera_key(topic), topic, settings.transport(i),
                                        info_topic=settings.camera_info_topic(i), depth_topic=settings.depth_topic(i))
                if channel.name in cameras:
                    raise ValueError(f"cameras {cameras[channel.name].topic} and {topic} are the same camera")
                cameras[channel.name] = channel
            store = TargetStore(settings.store_dir) if settings.store_dir else None
            threads = apply_threads(plan_threads(settings.compute_threads))
            self.get_logger().info(f"model CPU threads: {threads.intra_op} intra-op, {threads.inter_op} "
                                   f"inter-op ({threads.reason})")
            self.get_logger().info(
                f"loading {settings.model} (image_size {settings.image_size}, device {settings.device})")
            engine = SegmentationEngine.from_config(EngineConfig(
                model=settings.model, checkpoint=settings.checkpoint or None,
                image_size=settings.image_size, device=settings.device,
                precision=settings.precision, compile=settings.compile, seed=settings.seed,
                preprocessing=settings.preprocessing))
            captions, captions_note = open_caption_path(settings.text(), engine, settings.model)
            # A text model that was asked for and cannot be loaded is a warning; none asked for is not.
            failed = captions is None and settings.text().chosen() != "none"
            (self.get_logger().warning if failed else self.get_logger().info)(captions_note)
            reference = open_for_node(settings.reference(), settings.acquisition(), settings.transitions(), engine)
            for note in reference.notes.values():
                self.get_logger().info(note)
            registry = TargetRegistry(engine, store, list(cameras), settings.max_caption_length,
                                      settings.max_label_length, settings.max_targets, captions, captions_note,
                                      reference.setup)
            restored = registry.restore()
        except Exception as exc:  # a bad parameter, checkpoint or store: say which, stay unconfigured
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        if engine.random_weights:
            self.get_logger().warning(RANDOM_WEIGHTS_WARNING)
        self.settings, self.engine, self.cameras, self.registry = settings, engine, cameras, registry
        for line in restored:
            self.get_logger().info(line)
        where = f"target store {store.dir}" if store else "no target store (store_dir empty)"
        self._pending_status = [captions_note, *reference.notes.values()] + restored + [
            f"configured: {len(cameras)} camera(s) ({', '.join(cameras)}), {where}, "
            f"{len(registry.ids())} target(s)"]
        self._create_services()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        s = self.settings
        try:
            input_qos = qos.image_input_qos(s.mode, s.qos_reliability, s.qos_depth)
        except ValueError as exc:
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        output_qos = qos.output_qos(s.mode, s.output_qos_depth)
        self._status_pub = self.create_publisher(String, s.status_topic, qos.status_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._mailbox = FrameMailbox(replay=s.mode == "replay", capacity=input_qos.depth)
        for channel in self.cameras.values():
            channel.open(self, input_qos, output_qos, s.output_namespace, self._on_frame, self._frame_group,
                         self._subscription_events(channel))
            # Replay: frames may wait in the deep queue, so may their depth images.
            depth_queue = s.depth_queue_size if s.mode == "live" else max(s.depth_queue_size, input_qos.depth)
            channel.open_geometry(self, input_qos, output_qos, s.output_namespace, self._on_camera_info,
                                  self._frame_group, s.point_targets, depth_queue)
        self._outputs, output_notes = StandardOutputs.open(
            self, {name: output_topic(name, s.output_namespace, "") for name in self.cameras}, output_qos, s)
        self._teaching_subs = [
            self.create_subscription(ReferenceTarget, s.reference_topic, self._on_reference,
                                     qos.teaching_qos(), callback_group=self._teach_group),
            # serialized: a caption that is not UTF-8 is refused here, not in the executor
            self.create_subscription(String, s.caption_topic, self._on_caption,
                                     qos.teaching_qos(), callback_group=self._teach_group, raw=True),
        ]
        self._diag_timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics,
                                            callback_group=self._diag_group)
        self._worker = threading.Thread(target=self._work, args=(self._mailbox,),
                                        name="refseg-worker", daemon=True)
        self._worker.start()
        for line in self._pending_status:
            self._status(line)
        self._pending_status = []
        for text, warning in output_notes:
            self._status(text, error=warning)
        self._status(f"active ({s.mode} mode): segmenting {', '.join(self.cameras)}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        SegmentationEngine.release_device_memory()
        self.get_logger().info("inactive: processing stopped, unused device memory released")
        return super().on_deactivate(state)

    def _stop_processing(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()
        if self._worker is not None:
            self._worker.join()
        self._worker, self._mailbox = None, None
        for channel in self.cameras.values():
            channel.close(self)
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None
        for sub in self._teaching_subs:
            self.destroy_subscription(sub)
        self._teaching_subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self.destroy_publishers("_status_pub", "_diag_pub")
        self._latest.clear()
        self._history.clear()
        self._said_once.clear()

    def release(self) -> None:
        """Stop processing and drop services, engine and device memory (cleanup, shutdown, exit)."""
        self._stop_processing()
        for service in self._target_services:
            self.destroy_service(service)
        self._target_services = []
        if self.registry is not None:
            self.registry.close()
        self.registry, self.engine, self.settings = None, None, None
        SegmentationEngine.release_device_memory()

    # ================================================================ parameters
    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        """A set_parameters request, checked against params.PARAMETERS: live parameters
        are used from the next frame on; read-only ones are refused while configured, as
        are values out of range, with the reason (also logged and on the status topic)."""
        try:
            settings = params.changed_settings(self.settings, parameters)
            given: list[str] = []
            if settings is not None and self.registry is not None and (
                    settings.text() != self.settings.text() or settings.acquisition() != self.settings.acquisition()):
                given = self.registry.update_services(settings.text(), settings.acquisition())
        except ValueError as exc:
            self._status(f"set_parameters refused: {exc}", error=True)
            return SetParametersResult(successful=False, reason=str(exc))
        if settings is not None:
            old, self.settings = self.settings, settings
            registry, timer = self.registry, self._diag_timer
            if registry is not None:  # teaching limits: read per request
                registry.max_caption_length = settings.max_caption_length
                registry.max_label_length = settings.max_label_length
                registry.max_targets = settings.max_targets
            if timer is not None and settings.diagnostics_period != old.diagnostics_period:
                timer.timer_period_ns = int(settings.diagnostics_period * 1e9)
            changed = [f"{p.name}={getattr(settings, p.name)!r}" for p in parameters if p.name in params.PARAMETERS]
            given_text = f"; {' and '.join(given)} use{'s' if len(given) == 1 else ''} them from the next frame"
            self._status(f"parameters set: {', '.join(changed)}{given_text if given else ''}")
        return SetParametersResult(successful=True)

    # ===================================================================== frames
    def _on_frame(self, channel: CameraChannel, data: bytes) -> None:
        channel.stats.on_input()
        mailbox = self._mailbox
        if mailbox is not None and mailbox.put(channel.name, data, self.get_clock().now().nanoseconds * 1e-9):
            channel.stats.on_dropped()

    def _subscription_events(self, channel: CameraChannel) -> SubscriptionEventCallbacks:
        def incompatible(info: QoSRequestedIncompatibleQoSInfo) -> None:
            policy = info.last_policy_kind.name.removeprefix("RMW_QOS_POLICY_").lower()
            self._status(f"camera {channel.name}: a publisher on {channel.topic} has QoS incompatible with "
                         f"this subscription ({policy}); its frames never arrive. "
                         f"Set qos_reliability to match the camera (docs/NODE.md)", error=True)

        return SubscriptionEventCallbacks(incompatible_qos=incompatible)

    def _say_once(self, camera: str, kind: str, text: Optional[str]) -> None:
        """A warning about a camera on the status topic, once per activation (and once more
        after it stopped applying and came back)."""
        key = (camera, kind)
        if text is None:
            self._said_once.discard(key)
        elif key not in self._said_once:
            self._said_once.add(key)
            self._status(f"camera {camera}: {text}", error=True)

    def _work(self, mailbox: FrameMailbox) -> None:
        while True:
            try:
                envelope = mailbox.get(timeout=0.5)
            except Closed:
                return
            if envelope is None:
                continue
            try:
                self._process(envelope)
            except Exception as exc:  # the worker must outlive any one frame
                if not self.context.ok():
                    return  # shutting down (Ctrl-C): publishers are gone, nothing to report
                try:
                    self.get_logger().error(f"frame on camera {envelope.camera} failed: "
                                            f"{traceback.format_exc()}")
                    self._reject(self.cameras[envelope.camera], f"internal error: {exc}")
                except Exception:
                    pass

    def _process(self, envelope: Envelope) -> None:
        channel = self.cameras[envelope.camera]
        start = time.perf_counter()
        try:
            msg = channel.decode(envelope.message)
            rgb = frame_from_message(msg)
        except ValueError as exc:
            self._reject(channel, str(exc))
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        problems = header_problems(stamp, msg.header.frame_id, envelope.clock, self.settings.stamp_tolerance)
        channel.stats.on_header("; ".join(problems.values()))
        for kind in HEADER_PROBLEMS:
            reason = problems.get(kind)
            self._say_once(channel.name, kind, reason and f"implausible header: {reason}")
        self._latest[channel.name] = rgb
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        depth_data = channel.pair_depth(stamp_ns, self.settings.depth_stamp_tolerance)
        results, events, step = [], [], 0.0
        if self.registry.tracked_ids(channel.name):
            t0 = time.perf_counter()
            try:
                res = self.engine.step(channel.name, rgb, stamp)
            except EngineError as exc:
                self._reject(channel, str(exc))
                return
            step = time.perf_counter() - t0
            results, events = res.targets, res.events
            self._publish_late(channel, res, msg.header, rgb)
        label = label_image(results, rgb.shape[0], rgb.shape[1])
        self._say_once(channel.name, "label_range", (
            f"target id(s) {', '.join(map(str, label.unpainted))} exceed 65535: not in the label image "
            f"(their own masks travel with object_masks: true)") if label.unpainted else None)
        if depth_data is None:  # the depth message may have come in during the step
            depth_data = channel.pair_depth(stamp_ns, self.settings.depth_stamp_tolerance)
        channel.forget_depth_before(stamp_ns, self.settings.depth_stamp_tolerance)
        located = self._locate(channel, results, rgb.shape[0], rgb.shape[1], depth_data)
        drawn = channel.publish(msg.header, rgb, results, label, self.settings.overlay_alpha,
                                self.settings.object_masks, located)
        self._publish_standard(channel, msg.header, results, located)
        overhead = time.perf_counter() - start - step
        latency = plausible_latency(stamp, envelope.clock, self.get_clock().now().nanoseconds * 1e-9,
                                    self.settings.stamp_tolerance)
        channel.stats.on_processed(latency, step, overhead, drawn)
        for event in events:
            self._status(f"camera {channel.name}: {event}")

    # ================================================================== geometry
    def _publish_late(self, channel: CameraChannel, res, header, rgb: np.ndarray) -> None:
        """Results of earlier frames (a clip-mode caption target: its clip completed on
        this frame) go out as extra messages with those frames' headers; the frame's own
        messages carry the other targets. Frames are kept for this only in clip mode."""
        history = self._history.setdefault(channel.name, {})
        if self.settings.text_mode == "clip":
            history[res.frame_index] = (header, rgb)
            for old in [i for i in history if i <= res.frame_index - self.settings.text_window]:
                del history[old]
        by_frame: dict[int, list] = {}
        for index, _, result in res.late:
            by_frame.setdefault(index, []).append(result)
        for index, results in sorted(by_frame.items()):
            if index not in history:
                continue
            then, frame = history[index]
            label = label_image(results, frame.shape[0], frame.shape[1])
            located = self._locate(channel, results, frame.shape[0], frame.shape[1], None)
            channel.publish(then, frame, results, label, self.settings.overlay_alpha, self.settings.object_masks,
                            located)
            self._publish_standard(channel, then, results, located)

    def _publish_standard(self, channel: CameraChannel, header, results, located) -> None:
        """vision_msgs detections and target TF frames of one frame (those switched on)."""
        outputs = self._outputs  # read once: deactivation may drop it meanwhile
        if outputs is not None:
            self._say_once(channel.name, "tf_frame",
                           outputs.publish(channel.name, header, results, located, channel.intrinsics, self.settings))

    def _on_camera_info(self, channel: CameraChannel, msg) -> None:
        """Keep the camera's newest valid CameraInfo; say once why an invalid one is refused
        (bearing and position then stay unset until a valid one arrives)."""
        settings = self.settings
        if settings is None:
            return
        rectified = settings.rectified(list(self.cameras).index(channel.name))
        key = (tuple(msg.k), tuple(msg.d), tuple(msg.p), msg.width, msg.height, msg.distortion_model, rectified)
        if key == channel.info_key:
            return  # the same calibration again (CameraInfo comes with every frame)
        channel.info_key = key
        try:
            channel.intrinsics = intrinsics_from_camera_info(msg, rectified)
        except ValueError as exc:
            channel.intrinsics = None
            self._say_once(channel.name, "camera_info", f"CameraInfo on {channel.info_topic} refused: {exc}")
            return
        self._say_once(channel.name, "camera_info", None)

    def _locate(self, channel: CameraChannel, results, height: int, width: int,
                depth_data: Optional[bytes]) -> list:
        """Every result's centroid, and its bearing and position where CameraInfo and a
        paired depth image allow; problems with either are said once on the status topic."""
        s = self.settings
        intrinsics = channel.intrinsics
        if intrinsics is not None and intrinsics.width and intrinsics.height \
                and (intrinsics.width, intrinsics.height) != (width, height):
            self._say_once(channel.name, "camera_info_size",
                           f"CameraInfo on {channel.info_topic} is for {intrinsics.width}x{intrinsics.height} "
                           f"images, the frames are {width}x{height}: no bearing or position")
            intrinsics = None
        else:
            self._say_once(channel.name, "camera_info_size", None)
        # Decoded even when no target is visible, so that a bad depth stream is reported
        # before it matters (0.4 ms at 640x480).
        depth = None if depth_data is None else self._depth_for(channel, depth_data, height, width, intrinsics)
        located = geometry.locate_all([r.mask for r in results], [r.box for r in results], intrinsics, depth,
                                      s.depth_percentile, s.depth_min_range, s.depth_max_range)
        if depth is not None:
            if any(w.position is not None and w.position.valid_pixels for w in located):
                self._say_once(channel.name, "depth_empty", None)
            elif not np.any((depth >= s.depth_min_range) & (depth <= s.depth_max_range)):
                self._say_once(channel.name, "depth_empty",
                               f"depth image on {channel.depth_topic} has no valid pixel (all 0, NaN, inf or "
                               f"outside [{s.depth_min_range:g}, {s.depth_max_range:g}] m): no position")
        return located

    def _depth_for(self, channel: CameraChannel, data: bytes, height: int, width: int,
                   intrinsics) -> Optional[np.ndarray]:
        """The paired depth image in metres at the colour frame's size, or None (said why)."""
        kind = "depth_decode"
        try:
            depth = depth_from_message(channel.decode_depth(data))
            if depth.shape != (height, width):
                kind = "depth_size"
                if intrinsics is None:
                    raise ValueError(f"depth image is {depth.shape[1]}x{depth.shape[0]}, the colour frame "
                                     f"{width}x{height}, and no valid CameraInfo has arrived to scale it by")
                depth = geometry.fit_depth(depth, height, width)
        except ValueError as exc:
            self._say_once(channel.name, kind, f"depth on {channel.depth_topic} not used: {exc}")
            return None
        for problem in ("depth_decode", "depth_size"):
            self._say_once(channel.name, problem, None)
        return depth

    def _reject(self, channel: CameraChannel, reason: str) -> None:
        """Count a rejected frame and say why, without repeating the same words too often."""
        channel.stats.on_rejected(reason)
        key = (channel.name, reason)
        now = time.monotonic()
        if now - self._last_reported.get(key, -1e9) < self.settings.status_repeat_period:
            return
        if len(self._last_reported) > 1000:  # reasons carry sizes and texts: keep the table small
            self._last_reported.clear()
        self._last_reported[key] = now
        self._status(f"rejected frame on camera {channel.name}: {reason}", error=True)

    def latest_frame(self, camera: str) -> Optional[np.ndarray]:
        """The camera's newest decoded frame, for prompts drawn "on the current frame"."""
        key = camera_key(camera)
        if key not in self.cameras:
            raise TeachError(f"unknown camera {camera!r} (cameras: {', '.join(self.cameras)})")
        return self._latest.get(key)

    # ================================================================== teaching
    def _create_services(self) -> None:
        group = self._teach_group
        self._target_services = [
            self.create_service(AddTarget, "~/add_target", self._srv_add, callback_group=group),
            self.create_service(RemoveTarget, "~/remove_target", self._srv_remove, callback_group=group),
            self.create_service(ListTargets, "~/list_targets", self._srv_list, callback_group=group),
            self.create_service(ResetTargets, "~/reset_targets", self._srv_reset, callback_group=group),
        ]

    def _teach(self, build, replace: bool = False, must_exist: bool = False,
               teach=None) -> tuple[bool, str, int]:
        """Build a target, teach it (`teach(registry, target)`, default the registry's
        `teach`), and say what happened (after the store has it)."""
        registry = self.registry
        if registry is None:
            return False, "the node is not configured", 0
        try:
            target = build()
            if teach is None:
                text = registry.teach(target, replace=replace, must_exist=must_exist)
            else:
                text = teach(registry, target)
        except TeachError as exc:
            return False, str(exc), 0
        return True, text, target.target_id

    def _srv_add(self, req: AddTarget.Request, resp: AddTarget.Response) -> AddTarget.Response:
        replacing = bool(req.target_id)
        ok, text, tid = self._teach(lambda: requests.from_add_request(req, self.latest_frame),
                                    replace=replacing, must_exist=replacing)
        resp.success, resp.target_id = ok, tid
        resp.message = text if ok else f"add_target rejected: {text}"
        self._status(resp.message, error=not ok)
        return resp

    def _srv_remove(self, req: RemoveTarget.Request, resp: RemoveTarget.Response) -> RemoveTarget.Response:
        resp.success, resp.message = self._registry_call(lambda r: r.remove(req.target_id), "remove_target")
        self._status(resp.message, error=not resp.success)
        return resp

    def _srv_reset(self, req: ResetTargets.Request, resp: ResetTargets.Response) -> ResetTargets.Response:
        resp.success, resp.message = self._registry_call(lambda r: r.reset(req.camera), "reset_targets")
        self._status(resp.message, error=not resp.success)
        return resp

    def _srv_list(self, req: ListTargets.Request, resp: ListTargets.Response) -> ListTargets.Response:
        registry = self.registry
        if registry is None:
            resp.success, resp.message = False, "the node is not configured"
            return resp
        statuses = registry.statuses()
        resp.targets = [TargetInfo(target_id=s.target.target_id, label=s.target.label, kind=s.target.kind,
                                   camera=s.target.camera, caption=s.target.caption, status=s.status, path=s.path,
                                   examples=1 + len(s.target.views) if s.target.kind == "reference" else 0)
                        for s in statuses]
        notes = sorted({f"{s.target.target_id}: {s.note}" for s in statuses if s.note})
        resp.success = True
        resp.message = f"{len(statuses)} target(s)" + (f"; waiting: {'; '.join(notes)}" if notes else "")
        return resp

    def _registry_call(self, call, what: str) -> tuple[bool, str]:
        if self.registry is None:
            return False, f"{what} rejected: the node is not configured"
        try:
            return True, call(self.registry)
        except TeachError as exc:
            return False, f"{what} rejected: {exc}"

    def _on_reference(self, msg: ReferenceTarget) -> None:
        if msg.add_view:
            ok, text = self._add_view(msg)
        else:
            ok, text, _ = self._teach(lambda: requests.from_reference(msg), replace=True)
        name = f" '{msg.label}'" if msg.label else ""
        self._status(text if ok else f"rejected reference{name}: {text}", error=not ok)

    def _add_view(self, msg: ReferenceTarget) -> tuple[bool, str]:
        registry = self.registry
        if registry is None:
            return False, "the node is not configured"
        try:
            return True, registry.add_view(*requests.view_from_reference(msg))
        except TeachError as exc:
            return False, str(exc)

    def _on_caption(self, data: bytes) -> None:
        """A caption on the caption topic: the same caption again is the same target; a new
        one is added or replaces the topic's earlier one (caption_topic_mode)."""
        replace = self.settings.caption_topic_mode == "replace"
        ok, text, _ = self._teach(lambda: requests.from_caption(requests.caption_text(data)),
                                  teach=lambda registry, target: registry.teach_topic_caption(target, replace))
        self._status(text if ok else f"rejected caption: {text}", error=not ok)

    # ==================================================================== output
    def _status(self, text: str, error: bool = False) -> None:
        # rclpy ties a severity to each logging call site: two separate calls, not one.
        if error:
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)
        pub = self._status_pub
        if pub is not None:
            pub.publish(String(data=text))

    def _publish_diagnostics(self) -> None:
        # The timer runs on an executor thread while a lifecycle transition may be
        # releasing these on another: read each once.
        pub, engine, registry, settings = self._diag_pub, self.engine, self.registry, self.settings
        if pub is None or engine is None or registry is None:
            return
        statuses = []
        for name, channel in self.cameras.items():
            report, publishers = channel.stats.report(), channel.publisher_count(self)
            self._say_once(name, "no frames", missing_frames(report, publishers))
            statuses.append(camera_status(self.get_name(), report, settings.mode,
                                          len(registry.tracked_ids(name)), publishers))
        statuses.append(model_status(self.get_name(), settings.model, str(engine.device),
                                     engine.image_size, engine.random_weights, engine.retained_bytes()))
        header = Header(stamp=self.get_clock().now().to_msg())
        pub.publish(diagnostic_array(header, statuses))
