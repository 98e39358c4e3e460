"""An RGB-D camera for the node tests, as its own process: the synthetic scene
(refseg_ros.eval.synthetic) with its exact depth and intrinsics.

    python -m support.depth_camera --topic /rgbd/image_raw --frame-id rgbd_optical
        [--info /rgbd/camera_info] [--depth /rgbd/depth/image_raw] [--encoding 32FC1|16UC1]
        [--depth-offset 0.5] [--rate 2] [--frames 12] [--gt FILE]

Per frame: the colour Image (rgb8), its CameraInfo and the aligned depth Image, all with
one stamp (the depth's shifted by --depth-offset seconds, to test pairing). With --gt each
published frame's stamp and index are appended to FILE ("sec nanosec index"), so that a
test can look up the frame's exact depth and ground truth. The clip loops.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from refseg_ros.eval import synthetic
from support.node_harness import image_msg


def camera_info(K: np.ndarray, width: int, height: int, frame_id: str, stamp) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id, info.header.stamp = frame_id, stamp
    info.k = [float(v) for v in K.reshape(-1)]
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def depth_image(depth_m: np.ndarray, encoding: str, frame_id: str, stamp) -> Image:
    if encoding == "16UC1":
        return image_msg(np.round(depth_m * 1000).astype(np.uint16), "16UC1", frame_id, stamp)
    msg = Image(height=depth_m.shape[0], width=depth_m.shape[1], encoding="32FC1", is_bigendian=0,
                step=depth_m.shape[1] * 4, data=np.ascontiguousarray(depth_m, np.float32).tobytes())
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    return msg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--frame-id", default="rgbd_optical")
    parser.add_argument("--info", default="")
    parser.add_argument("--depth", default="")
    parser.add_argument("--encoding", default="32FC1", choices=("32FC1", "16UC1"))
    parser.add_argument("--depth-offset", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=12, help="frames in the (looping) clip")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--gt")
    args = parser.parse_args()

    clip = synthetic.generate(args.frames, args.height, args.width)
    rclpy.init()
    node = rclpy.create_node("test_rgbd_camera")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, args.topic, qos)
    info_pub = node.create_publisher(CameraInfo, args.info, qos) if args.info else None
    depth_pub = node.create_publisher(Image, args.depth, qos) if args.depth else None
    gt = open(args.gt, "a") if args.gt else None
    deadline = time.monotonic() + 60
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the node's other subscriptions match too
    period = 1.0 / args.rate
    next_time = time.monotonic()
    sent = 0
    try:
        while True:
            i = sent % len(clip)
            now = node.get_clock().now()
            stamp = now.to_msg()
            if gt is not None:
                gt.write(f"{stamp.sec} {stamp.nanosec} {i}\n")
                gt.flush()
            # Depth and CameraInfo first: the node pairs when it has processed the frame.
            if info_pub is not None:
                info_pub.publish(camera_info(clip.K, args.width, args.height, args.frame_id, stamp))
            if depth_pub is not None:
                offset = Duration(nanoseconds=int(args.depth_offset * 1e9))
                depth_pub.publish(depth_image(clip.depth(i), args.encoding, args.frame_id, (now + offset).to_msg()))
            image_pub.publish(image_msg(clip.frames[i], "rgb8", args.frame_id, stamp))
            sent += 1
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        if gt is not None:
            gt.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
