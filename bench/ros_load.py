"""The model step inside the running node while cameras publish at real rates.

The node runs as its own process (`refseg-node`, live mode, image_size 512 on the CPU,
one reference target), each camera as another process publishing best-effort frames, as
camera drivers do. For each load the step time comes from the node's /diagnostics, and is
printed as its ratio to the no-load step: the same engine, same thread settings, stepping
the same frames in a process with no camera and no ROS, measured right before and right
after each load (their mean), so that other work on the machine moves both sides alike. The fraction of published frames
the node received comes from the cameras' counts and the node's frames_received.

    python bench/ros_load.py [--quick] [--compute-threads N] [--executor multi|single|events]
                             [--compare] [--encoder-backends B [B ...]] [--json FILE]

--compare also runs the node with the model on every core (compute_threads = cores) and
with each executor at 30 Hz, the measurements behind the node's defaults.
--encoder-backends runs the 30 Hz load once more per image-encoder backend (the node's
encoder_backend: torch, onnxruntime, openvino; BACKEND-PRECISION sets encoder_precision
too, e.g. openvino-bf16), each against the no-load step on the same backend, and prints
each backend's node step as a ratio to torch's. A section before the loads measures what
taking one camera message costs a subscriber process,
serialized (the node's way) against typed.

Goal: ratio <= 1.15 with a 30 Hz camera, received >= 95 %.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ros_overhead import scene  # noqa: E402  (the same synthetic frames)

IMAGE_SIZE = 512
CAMERAS = ["/bench/cam0/image_raw", "/bench/cam1/image_raw", "/bench/cam2/image/compressed"]
AT_30HZ = "1 camera 30 Hz 640x480 raw"  # the load the variants (--compare, --encoder-backends) run
DIAG_WINDOW_S = 5.0  # the node's diagnostics average over the last 5 s


# ------------------------------------------------------------------------ children
def camera_main(topic: str, rate: float, width: int, height: int, seconds: float, jpeg: bool) -> None:
    """Child: publish best effort at `rate` for `seconds`, then print how many were sent."""
    import cv2
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from refseg_ros import imaging

    rclpy.init()
    node = rclpy.create_node("bench_camera")
    frames = [scene(width, height, t)[0] for t in range(10)]
    if jpeg:
        pub = node.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
        payloads = [cv2.imencode(".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
        messages = [CompressedImage(format="jpeg", data=p) for p in payloads]
    else:
        pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
        messages = []
        for f in frames:
            msg = Image()
            for key, value in imaging.array_to_image_fields(f, "rgb8").items():
                setattr(msg, key, value)
            messages.append(msg)
    for msg in messages:
        msg.header.frame_id = "bench_camera"
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        msg = messages[sent % len(messages)]
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        sent += 1
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def encoder_settings(backend: str) -> dict[str, str]:
    """`encoder_backend` and `encoder_precision` (the node's parameters, EngineConfig's
    fields) of a --encoder-backends name: BACKEND, or BACKEND-PRECISION (openvino-bf16)."""
    encoder_backend, _, precision = backend.partition("-")
    return {"encoder_backend": encoder_backend, "encoder_precision": precision or "fp32"}


def engine_alone_main(threads: int, steps: int, backend: str = "torch") -> None:
    """Child: the no-load step, the engine with the node's thread settings and encoder
    backend, and no ROS."""
    from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine
    from refseg_ros.runtime.threads import apply_threads, plan_threads

    plan = apply_threads(plan_threads(threads))
    engine = SegmentationEngine.from_config(EngineConfig(image_size=IMAGE_SIZE, device="cpu",
                                                         **encoder_settings(backend)))
    engine.add_stream("cam")
    frame0, masks = scene(640, 480, 0)
    engine.add_target("cam", MaskPrompt(masks[0]), label="object", image=frame0)
    times = []
    for i in range(steps + 2):
        frame, _ = scene(640, 480, i)
        t0 = time.perf_counter()
        engine.step("cam", frame, float(i))
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": statistics.mean(times[2:]), "threads": plan.intra_op}), flush=True)


def intake_main(topic: str, raw: bool, seconds: float) -> None:
    """Child: subscribe (serialized or typed) for `seconds`; print CPU seconds per message."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_intake")
    count = [0]
    node.create_subscription(Image, topic, lambda _m: count.__setitem__(0, count[0] + 1),
                             qos_profile_sensor_data, raw=raw)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while count[0] == 0:
        executor.spin_once(timeout_sec=0.1)
    cpu0, n0, t0 = time.process_time(), count[0], time.monotonic()
    while time.monotonic() - t0 < seconds:
        executor.spin_once(timeout_sec=0.1)
    cpu, n = time.process_time() - cpu0, count[0] - n0
    print(json.dumps({"cpu_per_msg_ms": 1e3 * cpu / max(n, 1), "messages": n, "cpu_share": cpu / seconds}),
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], stdout=subprocess.PIPE,
                            text=True)


def child_json(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- driver
class Observer:
    """The bench's own node: teaches the target and records /diagnostics."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        from refseg_ros.msg import ReferenceTarget

        rclpy.init()
        self.node = rclpy.create_node("bench_observer")
        self.reports: list[tuple[float, dict[str, dict[str, str]]]] = []
        self.status: list[str] = []
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.node.create_subscription(String, "/refseg/status", lambda m: self.status.append(m.data), latched)
        self.reference_pub = self.node.create_publisher(ReferenceTarget, "/refseg/reference", 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:  # close() shut rclpy down
            pass

    def _on_diag(self, msg) -> None:
        cams = {s.hardware_id: {kv.key: kv.value for kv in s.values} for s in msg.status}
        self.reports.append((time.monotonic(), cams))

    def wait_status(self, text: str, timeout: float) -> None:
        """Raises RuntimeError when no status containing `text` came within `timeout` s."""
        deadline = time.monotonic() + timeout
        while not any(text in s for s in self.status):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no status {text!r} within {timeout} s; got {self.status[-5:]}")
            time.sleep(0.1)

    def teach(self) -> None:
        from refseg_ros import imaging
        from refseg_ros.msg import ReferenceTarget
        from sensor_msgs.msg import Image

        def image(array, encoding):
            msg = Image()
            for key, value in imaging.array_to_image_fields(array, encoding).items():
                setattr(msg, key, value)
            return msg

        frame, masks = scene(640, 480, 0)
        reference = ReferenceTarget(label="object", image=image(frame, "rgb8"),
                                    mask=image(masks[0].astype(np.uint8) * 255, "mono8"))
        for attempt in range(8):
            while self.reference_pub.get_subscription_count() == 0:
                time.sleep(0.05)
            time.sleep(1.0)  # a node started after an earlier one: its side of discovery too
            self.reference_pub.publish(reference)
            try:
                return self.wait_status("taught target", 15)
            except RuntimeError:  # sent to the earlier node's stale match: send again
                print(f"  reference not acknowledged within 15 s (try {attempt + 1}); sending again", flush=True)
        self.wait_status("taught target", 1)

    def received_after(self, cameras: list[str], since: float, timeout: float = 60.0) -> dict[str, int]:
        """Each camera's frames_received from the first report made after `since` (monotonic)."""
        deadline = time.monotonic() + max(0.0, since - time.monotonic()) + timeout
        while True:
            fresh = [c for t, c in self.reports if t > since]
            if fresh:
                return {k: int(fresh[0].get(k, {}).get("frames_received", "0")) for k in cameras}
            if time.monotonic() > deadline:
                raise RuntimeError("no diagnostics report from the node")
            time.sleep(0.05)

    def steps_between(self, camera: str, start: float, end: float) -> list[float]:
        return [float(c[camera]["step_time_ms"]) / 1e3 for t, c in self.reports
                if start <= t <= end and camera in c and c[camera].get("step_time_ms", "n/a") != "n/a"]

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown()  # ends spin(), so the spinning thread is gone before the interpreter
        self._thread.join(timeout=10)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def start_node(out: Path, compute_threads: int, executor: str, env: dict | None = None,
               backend: str = "torch") -> subprocess.Popen:
    from refseg_ros.ros.params_file import NODE_NAME, write_parameters

    params = write_parameters(out / "ros_load_params.yaml", {
        "cameras": list(CAMERAS), "image_size": IMAGE_SIZE, "device": "cpu", "checkpoint": "",
        "store_dir": "", "compute_threads": compute_threads, "diagnostics_period": 0.5,
        **encoder_settings(backend)})
    log = open(out / f"ros_load_node_{executor}_{compute_threads}_{backend}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "refseg_ros.ros.main", "--executor", executor,
                             "--ros-args", "-r", f"__node:={NODE_NAME}", "--params-file", str(params)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def camera_key(topic: str) -> str:
    return topic[: -len("/compressed")] if topic.endswith("/compressed") else topic


def measure_load(obs: Observer, cams: list[tuple[str, float, int, int]], seconds: float, warmup: float) -> dict:
    """Run cameras (topic, rate, width, height) at once; the step and received fraction."""
    keys = [camera_key(t) for t, *_ in cams]
    before = obs.received_after(keys, time.monotonic())
    procs = [child("--camera", t, str(r), str(w), str(h), str(seconds + warmup)) for t, r, w, h in cams]
    start = time.monotonic()
    time.sleep(warmup + DIAG_WINDOW_S)
    measure_start = time.monotonic()  # diagnostics from here on average steps taken under load only
    sent = sum(child_json(p)["sent"] for p in procs)
    end = time.monotonic()
    after = obs.received_after(keys, end + 1.0)  # the last frames in, then a fresh report
    received = sum(after[k] - before[k] for k in keys)
    steps = [s for k in keys for s in obs.steps_between(k, measure_start, end)]
    return {"step_s": statistics.mean(steps) if steps else float("nan"), "received": received / max(sent, 1),
            "sent": sent, "seconds": end - start}


def engine_alone(threads: int, steps: int, backend: str = "torch") -> float:
    """The no-load step (seconds): the engine alone in a fresh process, `steps` steps."""
    return child_json(child("--engine-alone", str(threads), str(steps), backend))["step_s"]


def run_node_loads(out: Path, threads: int, executor: str, loads: list, seconds: float, warmup: float,
                   obs: Observer, alone_steps: int, env: dict | None = None, backend: str = "torch") -> list[dict]:
    """Each load against the node, each beside the no-load step measured right before and
    right after it (the node idle meanwhile), so that load from other work on the machine
    moves both sides of a ratio alike."""
    from refseg_ros.runtime.threads import plan_threads

    intra = plan_threads(threads).intra_op
    rows = []
    node = start_node(out, threads, executor, env, backend)
    try:
        obs.status.clear()
        obs.wait_status("active", 600)  # a first encoder build takes a minute or more
        obs.teach()
        before = engine_alone(intra, alone_steps, backend)
        for name, cams in loads:
            if node.poll() is not None:
                raise RuntimeError(f"the node exited ({node.returncode}); see {out}")
            r = measure_load(obs, cams, seconds, warmup)
            after = engine_alone(intra, alone_steps, backend)
            r.update(load=name, executor=executor, compute_threads=threads, model_threads=intra, backend=backend,
                     env=" ".join(f"{k}={v}" for k, v in (env or {}).items()),
                     no_load_step_s=(before + after) / 2)
            r["ratio"] = r["step_s"] / r["no_load_step_s"]
            rows.append(r)
            print(f"  {executor:6s} {backend} threads {intra} {r['env']}: {name:34s} step {r['step_s'] * 1e3:7.0f} ms  "
                  f"no load {before * 1e3:5.0f}/{after * 1e3:5.0f} ms  ratio {r['ratio']:.2f}  "
                  f"received {r['received'] * 100:5.1f} %", flush=True)
            before = after
    finally:
        node.send_signal(signal.SIGINT)  # as Ctrl-C: the node stops cleanly
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
    return rows


def backend_table(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """The 30 Hz rows of the node's own settings, one per encoder backend, with the node
    step and the no-load step as ratios to torch's (markdown lines; none without a torch row)."""
    rows = [r for r in rows if r["load"] == AT_30HZ and r["executor"] == args.executor
            and r["compute_threads"] == args.compute_threads and not r["env"]]
    torch_row = next((r for r in rows if r["backend"] == "torch"), None)
    if torch_row is None or len(rows) < 2:
        return []
    lines = ["| encoder backend, 30 Hz 640x480 | node step ms | node step / torch's | no-load step / torch's | "
             "node / no-load | received |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['step_s'] * 1e3:.0f} | {r['step_s'] / torch_row['step_s']:.2f} | "
                     f"{r['no_load_step_s'] / torch_row['no_load_step_s']:.2f} | {r['ratio']:.2f} | "
                     f"{r['received'] * 100:.1f} % |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer loads, shorter windows")
    parser.add_argument("--compute-threads", type=int, default=0, help="the node's compute_threads (0: auto)")
    parser.add_argument("--executor", default="multi", choices=("multi", "single", "events"))
    parser.add_argument("--compare", action="store_true",
                        help="also all cores for the model, and every executor, at 30 Hz")
    parser.add_argument("--encoder-backends", nargs="+", default=[], metavar="BACKEND",
                        help="also the 30 Hz load on each of these encoder backends (torch, onnxruntime, openvino; "
                             "BACKEND-PRECISION for an opt-in precision, e.g. openvino-bf16)")
    parser.add_argument("--seconds", type=float, default=0.0, help="measured seconds per load")
    parser.add_argument("--only", default="", help="run only the loads whose name contains this")
    parser.add_argument("--no-intake", action="store_true", help="skip the intake cost section")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--camera", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--engine-alone", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--intake", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.camera:
        topic, rate, w, h, secs = args.camera
        return camera_main(topic, float(rate), int(w), int(h), float(secs), topic.endswith("/compressed")) or 0
    if args.engine_alone:
        threads, steps, backend = args.engine_alone
        return engine_alone_main(int(threads), int(steps), backend) or 0
    if args.intake:
        return intake_main(args.intake[0], args.intake[1] == "raw", float(args.intake[2])) or 0

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from refseg_ros.runtime.threads import available_cores, plan_threads

    args.out.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    seconds = args.seconds or (6.0 if args.quick else 12.0)
    warmup = 2.0
    auto = plan_threads(args.compute_threads).intra_op
    print(f"node: sam2.1_hiera_t at {IMAGE_SIZE}, CPU, {cores} cores, compute_threads "
          f"{args.compute_threads or 'auto'} ({auto} intra-op), executor {args.executor}; "
          f"{seconds:.0f} s measured per load", flush=True)

    # 1. what taking a message costs: serialized vs typed
    intake = []
    sizes = [] if args.no_intake else [(640, 480)] if args.quick else [(640, 480), (1280, 720)]
    for w, h in sizes:
        for mode in ("typed", "raw"):
            sub = child("--intake", "/bench/intake", mode, str(seconds))
            time.sleep(3.0)  # the subscriber up before the camera
            cam = child("--camera", "/bench/intake", "30", str(w), str(h), str(seconds + 4))
            r = child_json(sub)
            child_json(cam)
            r.update(size=f"{w}x{h}", mode=mode)
            intake.append(r)
            print(f"  intake {w}x{h} {mode:5s}: {r['cpu_per_msg_ms']:.3f} ms CPU per message "
                  f"({r['messages']} messages, {r['cpu_share'] * 100:.1f} % of a core)", flush=True)

    alone_steps = 3 if args.quick else 5

    # 2. the loads
    cam0, cam1, jpg = CAMERAS
    loads = [(f"1 camera {r} Hz 640x480 raw", [(cam0, r, 640, 480)]) for r in ((5, 30) if args.quick else (5, 15, 30))]
    if not args.quick:
        loads += [("1 camera 30 Hz 1280x720 raw", [(cam0, 30, 1280, 720)]),
                  ("1 camera 30 Hz 640x480 jpeg", [(jpg, 30, 640, 480)]),
                  ("1 camera 30 Hz 1280x720 jpeg", [(jpg, 30, 1280, 720)])]
    loads.append(("2 cameras 30 Hz 640x480 raw", [(cam0, 30, 640, 480), (cam1, 30, 640, 480)]))
    loads = [l for l in loads if args.only in l[0]]
    obs = Observer()
    rows, failures = [], []
    try:
        rows += run_node_loads(args.out, args.compute_threads, args.executor, loads, seconds, warmup, obs,
                               alone_steps)
        if args.compare:
            at30 = [l for l in loads if l[0] == AT_30HZ]
            variants = [(cores, args.executor, None),
                        # OpenMP threads that sleep at once instead of spinning at a barrier
                        (cores, args.executor, {"OMP_WAIT_POLICY": "PASSIVE"})]
            variants += [(args.compute_threads, other, None) for other in ("multi", "single", "events")
                         if other != args.executor]
            for threads, executor, env in variants:
                try:
                    rows += run_node_loads(args.out, threads, executor, at30, seconds, warmup, obs, alone_steps, env)
                except RuntimeError as exc:  # a variant that cannot run is a result too
                    print(f"  {executor} threads {threads}: FAILED: {exc}", flush=True)
                    failures.append(f"{executor}, model threads {threads}: {exc}")
        at30 = [(AT_30HZ, [(cam0, 30, 640, 480)])]
        for backend in args.encoder_backends:
            if backend == "torch" and any(r["load"] == AT_30HZ for r in rows):
                continue  # the main run's row
            try:
                rows += run_node_loads(args.out, args.compute_threads, args.executor, at30, seconds, warmup, obs,
                                       alone_steps, backend=backend)
            except RuntimeError as exc:
                print(f"  encoder backend {backend}: FAILED: {exc}", flush=True)
                failures.append(f"encoder backend {backend}: {exc}")
    finally:
        obs.close()

    print()
    print("| load | encoder backend | executor | model threads | step ms | no-load step ms | ratio | received |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']} | {r['backend']} | {r['executor']} | "
              f"{r['model_threads']}{' ' + r['env'] if r['env'] else ''} | "
              f"{r['step_s'] * 1e3:.0f} | {r['no_load_step_s'] * 1e3:.0f} | {r['ratio']:.2f} | "
              f"{r['received'] * 100:.1f} % |")
    for failure in failures:
        print(f"| {failure} | | | | | | | |")
    backend_rows = backend_table(rows, args)
    if backend_rows:
        print()
        print("\n".join(backend_rows))
    print()
    print("| intake, 30 Hz | CPU ms per message, typed | serialized | ratio |")
    print("|---|---|---|---|")
    for size in sorted({r["size"] for r in intake}):
        typed = next(r for r in intake if r["size"] == size and r["mode"] == "typed")["cpu_per_msg_ms"]
        raw = next(r for r in intake if r["size"] == size and r["mode"] == "raw")["cpu_per_msg_ms"]
        print(f"| {size} | {typed:.3f} | {raw:.3f} | {raw / typed:.2f} |")
    main_rows = [r for r in rows if r["executor"] == args.executor and r["compute_threads"] == args.compute_threads
                 and not r["env"] and r["backend"] == "torch"]
    at30 = [r for r in main_rows if "30 Hz" in r["load"]]
    worst = max((r["ratio"] for r in at30), default=float("nan"))
    least = min((r["received"] for r in main_rows), default=float("nan"))
    print()
    print(f"worst ratio at 30 Hz {worst:.2f} (goal <= 1.15), least received {least * 100:.1f} % (goal >= 95 %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "rows": rows, "intake": intake}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
