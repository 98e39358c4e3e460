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
takes is deserialized and converted, and the model's CPU threads leave a core for intake
(refseg_ros.runtime.threads, parameter compute_threads), so a fast camera does not slow
the model down. Teaching is acknowledged (service reply or status message) only after
the target store has it on disk.

A frame's way (`_work`): take (the mailbox), receive (its camera's channel: decode, check
the header, pair depth), step (the engine), locate and publish (the channel again:
geometry, then every output). Each stage takes and gives a list of frames; each camera's
channel (refseg_ros.ros.camera) owns its subscriptions, decoding, depth pairing, locator
and publishers, and reports its own problems (refseg_ros.ros.status).
"""

from __future__ import annotations

import threading
import traceback
from typing import Callable, Optional, Sequence, TypeVar

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import Header, String

from ..engine import EngineConfig, EngineError, SegmentationEngine, StepResult, StepsFailed
from ..runtime.mailbox import Closed, Envelope, FrameMailbox
from ..runtime.captions import open_caption_path
from ..runtime.recipes import open_for_node
from ..runtime.registry import TargetRegistry, TeachError, camera_key
from ..runtime.threads import apply_threads, plan_threads
from ..store import TargetStore
from refseg_ros.msg import ReferenceTarget, TargetInfo
from refseg_ros.srv import AddTarget, ListTargets, RemoveTarget, ResetTargets
from . import params, qos, requests
from .camera import CameraChannel, CameraFrame, output_topic
from .diagnostics import camera_status, diagnostic_array, missing_frames, model_status
from .params_file import NODE_NAME
from .lifecycle import ReleasingNode
from .standard_outputs import StandardOutputs
from .status import StatusReports

# The one warning of a node without a checkpoint (logged at configure; /diagnostics says it too).
RANDOM_WEIGHTS_WARNING = ("no checkpoint given: the model has random weights and its masks are meaningless "
                          "(fine for tests, not for use)")

Item = TypeVar("Item", Envelope, CameraFrame)


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
        self.reports = StatusReports(self.get_logger())  # the log and the status topic
        self._target_services: list = []
        self._teaching_subs: list = []
        self._diag_pub = None
        self._diag_timer = None
        self._outputs: Optional[StandardOutputs] = None  # vision_msgs detections and target TF frames
        self._mailbox: Optional[FrameMailbox] = None
        self._worker: Optional[threading.Thread] = None
        self._pending_status: list[str] = []
        self._teach_group = MutuallyExclusiveCallbackGroup()
        self._frame_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()

    # ================================================================== lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.reports.publisher is not None:  # an earlier failed configure's (_say_unconfigured)
            self.destroy_publisher(self.reports.publisher)
            self.reports.publisher = None
        try:
            settings = params.read(self)
            cameras = {}
            for i, topic in enumerate(settings.cameras):
                channel = CameraChannel(camera_key(topic), topic, settings.transport(i), self.reports,
                                        info_topic=settings.camera_info_topic(i), depth_topic=settings.depth_topic(i),
                                        rectified=settings.rectified(i))
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
                preprocessing=settings.preprocessing, batch_cameras=settings.batch_cameras,
                encoder_backend=settings.encoder_backend, encoder_precision=settings.encoder_precision,
                encoder_backend_fallback=settings.encoder_backend_fallback))
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
        except Exception as exc:  # a bad parameter, checkpoint, store or encoder backend: say which, stay unconfigured
            self._say_unconfigured(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        if engine.random_weights:
            self.get_logger().warning(RANDOM_WEIGHTS_WARNING)
        encoder_lines = [f"image encoder: {engine.encoder.description}"]
        if engine.encoder_note:
            self.get_logger().warning(engine.encoder_note)
            encoder_lines.append(engine.encoder_note)
        self.settings, self.engine, self.cameras, self.registry = settings, engine, cameras, registry
        for line in restored:
            self.get_logger().info(line)
        where = f"target store {store.dir}" if store else "no target store (store_dir empty)"
        self._pending_status = encoder_lines + [captions_note, *reference.notes.values()] + restored + [
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
        self.reports.publisher = self.create_publisher(String, s.status_topic, qos.status_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._mailbox = FrameMailbox(replay=s.mode == "replay", capacity=input_qos.depth)
        self._outputs, output_notes = StandardOutputs.open(
            self, {name: output_topic(name, s.output_namespace, "") for name in self.cameras}, output_qos, s)
        # Replay: frames may wait in the deep queue, so may their depth images.
        depth_queue = s.depth_queue_size if s.mode == "live" else max(s.depth_queue_size, input_qos.depth)
        for channel in self.cameras.values():
            channel.open(self, self._mailbox, input_qos, output_qos, s.output_namespace, self._frame_group,
                         s.point_targets, depth_queue, self._outputs)
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
        self.destroy_publishers("_diag_pub")
        if self.reports.publisher is not None:
            self.destroy_publisher(self.reports.publisher)
            self.reports.publisher = None
        self.reports.forget_once()

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
            for i, channel in enumerate(self.cameras.values()):  # from each camera's next CameraInfo
                channel.rectified = settings.rectified(i)
            changed = [f"{p.name}={getattr(settings, p.name)!r}" for p in parameters if p.name in params.PARAMETERS]
            given_text = f"; {' and '.join(given)} use{'s' if len(given) == 1 else ''} them from the next frame"
            self._status(f"parameters set: {', '.join(changed)}{given_text if given else ''}")
        return SetParametersResult(successful=True)

    # ===================================================================== frames
    def _work(self, mailbox: FrameMailbox) -> None:
        """The worker thread, until the mailbox closes: take, receive, step, locate, publish.

        Every stage works on a list of frames (today one: the mailbox hands out one at a
        time) and passes on those that go on; a frame that fails in a stage is rejected
        with the reason and the worker goes on with the next.
        """
        while True:
            try:
                envelopes = self._take(mailbox)
            except Closed:
                return
            settings = self.settings  # one set of parameters for the whole way
            frames = self._each(envelopes, CameraChannel.receive, settings)
            frames = self._step(frames, settings)
            frames = self._each(frames, CameraChannel.locate, settings)
            self._each(frames, CameraChannel.publish, settings)

    @staticmethod
    def _take(mailbox: FrameMailbox) -> list[Envelope]:
        """The frames waiting in the mailbox for the worker: at most one per camera
        (`FrameMailbox.get_batch`: live, each camera's newest; replay, each camera's
        oldest), or none after 0.5 s.

        Raises:
            Closed: the mailbox was closed (deactivation).
        """
        return mailbox.get_batch(timeout=0.5)

    def _step(self, frames: Sequence[CameraFrame], settings: params.Settings) -> list[CameraFrame]:
        """The engine's step on the frames of the cameras with targets, giving each its
        `result` and `step_seconds`; a camera without targets is not stepped. A frame the
        engine refuses or fails on is rejected with the reason and goes no further."""
        to_step = [f for f in frames if self.registry.tracked_ids(f.camera)]
        results = self._step_together(to_step, settings) if to_step else {}
        stepped = []
        for frame in frames:
            if any(frame is f for f in to_step):
                if frame.camera not in results:
                    continue
                frame.result = results[frame.camera]
                frame.step_seconds = frame.result.step_seconds
            stepped.append(frame)
        return stepped

    def _step_together(self, frames: Sequence[CameraFrame], settings: params.Settings) -> dict[str, StepResult]:
        """One `engine.step_many` call for the frames (one per camera: their plain
        image-encoder passes run as one batch, see the `batch_cameras` parameter); the
        results by camera. When the engine refuses the call (EngineError: nothing was
        stepped) each frame is stepped alone, so that only the bad one is refused; a
        camera whose stages failed (StepsFailed) is rejected, the others keep theirs."""
        try:
            results = self.engine.step_many([(f.camera, f.rgb, f.stamp) for f in frames])
        except EngineError as exc:
            if len(frames) == 1:
                self.cameras[frames[0].camera].reject(str(exc), settings)
                return {}
            results = {}
            for frame in frames:
                results.update(self._step_together([frame], settings))
            return results
        except StepsFailed as exc:
            results = exc.results
            for camera, error in exc.failures.items():
                self._failed(camera, error, settings)
        except Exception as exc:  # the worker must outlive any frame
            for frame in frames:
                self._failed(frame.camera, exc, settings)
            return {}
        return {result.stream_id: result for result in results}

    def _each(self, items: Sequence[Item],
              stage: Callable[[CameraChannel, Item, params.Settings], Optional[CameraFrame]],
              settings: params.Settings) -> list[CameraFrame]:
        """A channel's `stage` (a CameraChannel method) on every item (an envelope or a
        frame), by its camera's channel; the frames it gives on, in order. An item whose
        stage raises is rejected as an internal error."""
        out = []
        for item in items:
            try:
                frame = stage(self.cameras[item.camera], item, settings)
            except Exception as exc:  # the worker must outlive any one frame
                self._failed(item.camera, exc, settings)
                continue
            if frame is not None:
                out.append(frame)
        return out

    def _failed(self, camera: str, exc: Exception, settings: Optional[params.Settings]) -> None:
        """Log a frame's unexpected failure with its traceback and reject the frame."""
        if not self.context.ok() or settings is None:
            return  # shutting down (Ctrl-C): publishers are gone, nothing to report
        try:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.get_logger().error(f"frame on camera {camera} failed: {trace}")
            self.cameras[camera].reject(f"internal error: {exc}", settings)
        except Exception:
            pass

    def latest_frame(self, camera: str) -> Optional[np.ndarray]:
        """The camera's newest decoded frame, for prompts drawn "on the current frame"."""
        key = camera_key(camera)
        if key not in self.cameras:
            raise TeachError(f"unknown camera {camera!r} (cameras: {', '.join(self.cameras)})")
        return self.cameras[key].latest

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
    def _say_unconfigured(self, text: str) -> None:
        """Log why configure failed and put it on the status topic (latched, so a client
        that joins later reads it; the next configure takes the publisher down)."""
        self.get_logger().error(text)
        if self.reports.publisher is None:
            self.reports.publisher = self.create_publisher(String, self.get_parameter("status_topic").value,
                                                           qos.status_qos())
        self.reports.publisher.publish(String(data=text))

    def _status(self, text: str, error: bool = False) -> None:
        self.reports.say(text, error)

    def _publish_diagnostics(self) -> None:
        # The timer runs on an executor thread while a lifecycle transition may be
        # releasing these on another: read each once.
        pub, engine, registry, settings = self._diag_pub, self.engine, self.registry, self.settings
        if pub is None or engine is None or registry is None:
            return
        statuses = []
        for name, channel in self.cameras.items():
            report, publishers = channel.stats.report(), channel.publisher_count(self)
            self.reports.once(name, "no frames", missing_frames(report, publishers))
            statuses.append(camera_status(self.get_name(), report, settings.mode,
                                          len(registry.tracked_ids(name)), publishers))
        statuses.append(model_status(self.get_name(), settings.model, str(engine.device),
                                     engine.image_size, engine.random_weights, engine.retained_bytes()))
        header = Header(stamp=self.get_clock().now().to_msg())
        pub.publish(diagnostic_array(header, statuses))
