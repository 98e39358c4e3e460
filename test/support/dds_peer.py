"""Peer processes for ros/test_messages_dds.py: each role runs as its own python process.

    python test/support/dds_peer.py publisher  OUT_DIR SEED
    python test/support/dds_peer.py subscriber OUT_DIR
    python test/support/dds_peer.py server     OUT_DIR
    python test/support/dds_peer.py client     OUT_DIR

Each writes what it sent or received to OUT_DIR as serialized CDR bytes
(rclpy.serialization.serialize_message), for the test to compare. Every loop is bounded
by a deadline; a role that gives up exits non-zero.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message

from refseg_ros.msg import ReferenceTarget, SegmentedObject, SegmentedObjectArray, TargetInfo
from refseg_ros.srv import AddTarget, ListTargets
from sensor_msgs.msg import Image, RegionOfInterest

TIMEOUT_S = 45.0
REFERENCE_TOPIC = "refseg_test/reference"
OBJECTS_TOPIC = "refseg_test/objects"
ADD_SERVICE = "refseg_test/add_target"
LIST_SERVICE = "refseg_test/list_targets"

QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def image(width: int, height: int, encoding: str, channels: int, rng: np.random.Generator, frame_id: str) -> Image:
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 123_456_789
    msg.width = width
    msg.height = height
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * channels
    msg.data = rng.integers(0, 256, size=height * width * channels, dtype=np.uint8).tobytes()
    return msg


def reference_target(seed: int) -> ReferenceTarget:
    rng = np.random.default_rng(seed)
    msg = ReferenceTarget()
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec = 1_700_000_001
    msg.header.stamp.nanosec = 5
    msg.target_id = 7
    msg.label = "red mug ☕"
    msg.camera = "/camera/image_raw"
    msg.image = image(640, 480, "rgb8", 3, rng, "camera_optical")
    mask = image(640, 480, "mono8", 1, rng, "camera_optical")
    mask.data = np.where(np.frombuffer(bytes(mask.data), np.uint8) > 127, 255, 0).astype(np.uint8).tobytes()
    msg.mask = mask
    return msg


def segmented_objects(seed: int) -> SegmentedObjectArray:
    rng = np.random.default_rng(seed + 1)
    msg = SegmentedObjectArray()
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec = 1_700_000_002
    msg.header.stamp.nanosec = 999_999_999
    states = [
        SegmentedObject.STATE_TRACKED,
        SegmentedObject.STATE_OCCLUDED,
        SegmentedObject.STATE_LOST,
    ]
    objects = []
    for i, state in enumerate(states):
        obj = SegmentedObject()
        obj.target_id = 100 + i
        obj.label = f"object {i}"
        obj.score = float(np.float32(0.25 * (i + 1)))
        obj.state = state
        obj.bbox = RegionOfInterest(x_offset=10 * i, y_offset=20 * i, width=30 + i, height=40 + i,
                                    do_rectify=bool(i % 2))
        obj.mask_value = i + 1
        if i == 0:
            obj.mask = image(64, 48, "mono8", 1, rng, "camera_optical")
        objects.append(obj)
    msg.objects = objects
    return msg


def add_target_request() -> AddTarget.Request:
    rng = np.random.default_rng(11)
    req = AddTarget.Request()
    req.camera = "/camera/image_raw"
    req.label = "cup"
    req.caption = ""
    req.image = image(32, 24, "rgb8", 3, rng, "cam")
    req.mask = image(32, 24, "mono8", 1, rng, "cam")
    req.box = [1.5, 2.5, 30.0, 20.0]
    req.points = [3.0, 4.0, 10.0, 12.0]
    req.point_labels = [1, 0]
    return req


def write(out_dir: Path, name: str, msg) -> None:
    tmp = out_dir / (name + ".tmp")
    tmp.write_bytes(serialize_message(msg))
    tmp.rename(out_dir / name)


def run_publisher(out_dir: Path, seed: int) -> int:
    node = rclpy.create_node("refseg_test_publisher")
    ref_pub = node.create_publisher(ReferenceTarget, REFERENCE_TOPIC, QOS)
    obj_pub = node.create_publisher(SegmentedObjectArray, OBJECTS_TOPIC, QOS)
    reference, objects = reference_target(seed), segmented_objects(seed)
    write(out_dir, "sent_reference.cdr", reference)
    write(out_dir, "sent_objects.cdr", objects)
    deadline = time.monotonic() + TIMEOUT_S
    # Publish until the subscriber says it has both (it writes done), bounded in time:
    # discovery may take a moment, and a sample sent before matching may be missed.
    while time.monotonic() < deadline:
        if ref_pub.get_subscription_count() and obj_pub.get_subscription_count():
            ref_pub.publish(reference)
            obj_pub.publish(objects)
        if (out_dir / "done").exists():
            print("publisher: subscriber has both messages", flush=True)
            node.destroy_node()
            return 0
        rclpy.spin_once(node, timeout_sec=0.2)
    print("publisher: timed out", flush=True)
    return 1


def run_subscriber(out_dir: Path) -> int:
    node = rclpy.create_node("refseg_test_subscriber")
    got: dict[str, object] = {}

    def keep(name):
        def callback(msg):
            if name not in got:
                got[name] = msg
                write(out_dir, name, msg)
                print(f"subscriber: received {name}", flush=True)

        return callback

    node.create_subscription(ReferenceTarget, REFERENCE_TOPIC, keep("received_reference.cdr"), QOS)
    node.create_subscription(SegmentedObjectArray, OBJECTS_TOPIC, keep("received_objects.cdr"), QOS)
    (out_dir / "subscriber_ready").touch()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and len(got) < 2:
        rclpy.spin_once(node, timeout_sec=0.2)
    if len(got) < 2:
        print(f"subscriber: timed out with {sorted(got)}", flush=True)
        return 1
    (out_dir / "done").touch()
    node.destroy_node()
    return 0


def run_server(out_dir: Path) -> int:
    node = rclpy.create_node("refseg_test_server")
    served = []

    def add_target(request, response):
        write(out_dir, "server_request.cdr", request)
        response.success = True
        response.message = (
            f"added '{request.label}' for {request.camera}: image {request.image.width}x"
            f"{request.image.height} {request.image.encoding}, {len(request.box)} box values, "
            f"{len(request.point_labels)} points"
        )
        response.target_id = 40 + len(request.points)
        served.append("add")
        return response

    def list_targets(request, response):
        response.success = True
        response.message = "2 targets"
        response.targets = [
            TargetInfo(target_id=1, label="cup", kind="mask", camera="/camera/image_raw", caption="", status="tracked"),
            TargetInfo(target_id=2, label="dog", kind="caption", camera="", caption="a brown dog", status="waiting"),
        ]
        served.append("list")
        return response

    node.create_service(AddTarget, ADD_SERVICE, add_target)
    node.create_service(ListTargets, LIST_SERVICE, list_targets)
    (out_dir / "server_ready").touch()
    deadline = time.monotonic() + TIMEOUT_S
    # Serve until the client has written its results (it may retry a call).
    while time.monotonic() < deadline and not (out_dir / "client_done").exists():
        rclpy.spin_once(node, timeout_sec=0.2)
    print(f"server: served {served}", flush=True)
    node.destroy_node()
    return 0 if (out_dir / "client_done").exists() else 1


def call(node, client, request, deadline: float):
    """Call a service, retrying while time remains (a first call right after discovery can be lost)."""
    while time.monotonic() < deadline:
        if not client.wait_for_service(timeout_sec=1.0):
            continue
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=min(5.0, max(0.1, deadline - time.monotonic())))
        if future.done() and future.result() is not None:
            return future.result()
        client.remove_pending_request(future)
    raise TimeoutError(f"no response from {client.srv_name}")


def run_client(out_dir: Path) -> int:
    node = rclpy.create_node("refseg_test_client")
    deadline = time.monotonic() + TIMEOUT_S
    add = node.create_client(AddTarget, ADD_SERVICE)
    lst = node.create_client(ListTargets, LIST_SERVICE)
    request = add_target_request()
    write(out_dir, "client_request.cdr", request)
    write(out_dir, "add_response.cdr", call(node, add, request, deadline))
    write(out_dir, "list_response.cdr", call(node, lst, ListTargets.Request(), deadline))
    (out_dir / "client_done").touch()
    print("client: done", flush=True)
    node.destroy_node()
    return 0


def main(argv: list[str]) -> int:
    role, out_dir = argv[1], Path(argv[2])
    rclpy.init()
    try:
        if role == "publisher":
            return run_publisher(out_dir, int(argv[3]))
        if role == "subscriber":
            return run_subscriber(out_dir)
        if role == "server":
            return run_server(out_dir)
        if role == "client":
            return run_client(out_dir)
        raise SystemExit(f"unknown role {role}")
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
