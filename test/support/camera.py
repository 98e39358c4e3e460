"""A camera for the node tests, as its own process: publishes the synthetic scene.

    python -m support.camera --topic /cam0/image_raw --frame-id cam0 --rate 30 [--compressed]
                           [--count N] [--stamps FILE] [--best-effort]

Stamps are the wall clock at publishing; with --stamps every published stamp is appended
to FILE ("sec nanosec" per line) so that a test can check that results carry them.
"""

from __future__ import annotations

import argparse
import time

import cv2
import rclpy
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from support.node_harness import image_msg, scene


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--frame-id", default="camera")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--compressed", action="store_true")
    parser.add_argument("--count", type=int, default=0, help="frames to publish (0: forever)")
    parser.add_argument("--stamps")
    parser.add_argument("--best-effort", action="store_true")
    parser.add_argument("--subscribers", type=int, default=1, help="wait for this many subscribers first")
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("test_camera")
    reliability = ReliabilityPolicy.BEST_EFFORT if args.best_effort else ReliabilityPolicy.RELIABLE
    # A counted run keeps every frame in its history, so a reader that is slow to acknowledge
    # (a busy machine) still gets them all.
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(10, args.count), reliability=reliability)
    frames = [scene(args.width, args.height, t)[0] for t in range(20)]
    if args.compressed:
        payloads = [cv2.imencode(".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                    for f in frames]
        pub = node.create_publisher(CompressedImage, args.topic, qos)
    else:
        from sensor_msgs.msg import Image
        pub = node.create_publisher(Image, args.topic, qos)
    stamps = open(args.stamps, "a") if args.stamps else None
    # Wait for the subscribers, so that a counted run is not spent talking to nobody.
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() < args.subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    if args.subscribers > 1:
        time.sleep(1.0)  # the subscribers' side of discovery too
    period = 1.0 / args.rate
    next_time = time.monotonic()
    sent = 0
    try:
        while args.count == 0 or sent < args.count:
            stamp = node.get_clock().now().to_msg()
            i = sent % len(frames)
            if args.compressed:
                msg = CompressedImage(format="jpeg", data=payloads[i])
                msg.header.frame_id = args.frame_id
                msg.header.stamp = stamp
            else:
                msg = image_msg(frames[i], "rgb8", args.frame_id, stamp)
            if stamps is not None:
                stamps.write(f"{stamp.sec} {stamp.nanosec}\n")
                stamps.flush()
            pub.publish(msg)
            sent += 1
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        # A counted run: its reliable frames must reach the readers before the writer goes.
        if not pub.wait_for_all_acked(Duration(seconds=30)):
            print("test camera: not every reader acknowledged every frame within 30 s", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if stamps is not None:
            stamps.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
