"""`refseg-teach`: teach the running node a target from the command line.

    refseg-teach --image ref.png --mask mask.png --label mug [--camera /cam0/image_raw]
    refseg-teach --image ref2.png --mask mask2.png --add-view 7   # one more example of target 7
    refseg-teach --image frame.png --box 120 80 260 210 --label mug
    refseg-teach --caption "the red mug on the left"
    refseg-teach --list | --remove ID | --reset [--camera CAM]

A reference (image + mask) and a caption are published on the node's topics and the
tool prints the node's next status message about it; --service sends them through the
add_target service instead. A box (drawn on a frame saved from the camera) always goes
through the service, with the image. Exit status: 0 accepted, 1 rejected, 2 no answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np

from .. import imaging

# "caption ...": a caption the topic already gave ("caption 'x' already tracked as target N ...")
ACK_PREFIXES = ("taught ", "replaced ", "added view ", "caption ", "rejected reference", "rejected caption")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="refseg-teach", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--mask", help="mask file (nonzero = object), with --image")
    what.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                      help="box in pixels of --image (a frame saved from the camera)")
    what.add_argument("--caption", help="describe the object in words")
    what.add_argument("--list", action="store_true", help="list the node's targets")
    what.add_argument("--remove", type=int, metavar="ID", help="forget a target")
    what.add_argument("--reset", action="store_true", help="forget the targets of --camera (or all)")
    p.add_argument("--image", help="image file the mask or box lies on")
    p.add_argument("--label", default="", help="name of the target")
    p.add_argument("--camera", default="", help="camera (image topic) it applies to; default: every camera")
    p.add_argument("--target-id", type=int, default=0,
                   help="replace this target: its reference, or with --caption its caption (keeps the id)")
    p.add_argument("--add-view", type=int, default=0, metavar="ID",
                   help="with --image and --mask: one more example of reference target ID (k-shot)")
    p.add_argument("--node", default="/refseg", help="the node's name with namespace (default /refseg)")
    p.add_argument("--service", action="store_true", help="use the add_target service for a reference or caption")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node")
    args = p.parse_args(list(argv))
    if (args.mask is not None or args.box is not None) and not args.image:
        p.error("--mask and --box need --image")
    if args.add_view and (args.mask is None or args.service or args.target_id):
        p.error("--add-view goes with --image and --mask, on the reference topic (not --service, not --target-id)")
    return args


def read_image(path: str) -> np.ndarray:
    try:
        return imaging.read_image_file(path)
    except ValueError as exc:
        raise SystemExit(f"refseg-teach: {exc}") from None


def read_mask(path: str) -> np.ndarray:
    import cv2

    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise SystemExit(f"refseg-teach: cannot read mask {path}")
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return ((mask != 0) * 255).astype(np.uint8)


class Teacher:
    """A short-lived node that talks to the segmenter."""

    def __init__(self, node_name: str, timeout: float):
        import rclpy

        self.rclpy = rclpy
        self.prefix = node_name.rstrip("/")
        self.timeout = timeout
        rclpy.init()
        self.node = rclpy.create_node("refseg_teach")

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()

    def call(self, srv_type, name: str, request):
        client = self.node.create_client(srv_type, f"{self.prefix}/{name}")
        if not client.wait_for_service(timeout_sec=self.timeout):
            return None
        future = client.call_async(request)
        self.rclpy.spin_until_future_complete(self.node, future, timeout_sec=self.timeout)
        return future.result() if future.done() else None

    def publish_and_wait(self, topic: str, msg_type, msg) -> Optional[str]:
        """Publish on one of the node's topics; the node's next acknowledgement, or None."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        answers: list[str] = []
        # A volatile subscription: only what the node says from now on.
        self.node.create_subscription(String, f"{self.prefix}/status",
                                      lambda m: answers.append(m.data), qos)
        pub = self.node.create_publisher(msg_type, f"{self.prefix}/{topic}", qos)
        deadline = time.monotonic() + self.timeout
        while pub.get_subscription_count() == 0 or self.node.count_publishers(f"{self.prefix}/status") == 0:
            if time.monotonic() > deadline:
                return None
            self.rclpy.spin_once(self.node, timeout_sec=0.1)
        end = time.monotonic() + 0.5  # let the node's side of discovery finish too
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        pub.publish(msg)
        while time.monotonic() < deadline:
            self.rclpy.spin_once(self.node, timeout_sec=0.1)
            for text in answers:
                if text.startswith(ACK_PREFIXES):
                    return text
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from sensor_msgs.msg import Image  # noqa: F401  (checks the ROS environment early)
    from std_msgs.msg import String

    from refseg_ros import imaging
    from refseg_ros.msg import ReferenceTarget
    from refseg_ros.srv import AddTarget, ListTargets, RemoveTarget, ResetTargets

    def image_msg(array: np.ndarray, encoding: str) -> Image:
        msg = Image()
        for key, value in imaging.array_to_image_fields(array, encoding).items():
            setattr(msg, key, value)
        return msg

    teacher = Teacher(args.node, args.timeout)
    try:
        reply, answer = None, None
        if args.list:
            reply = teacher.call(ListTargets, "list_targets", ListTargets.Request())
            if reply is not None:
                for t in reply.targets:
                    where = t.camera or "every camera"
                    extra = f" caption={t.caption!r}" if t.caption else ""
                    examples = f" ({t.examples} examples)" if t.examples > 1 else ""
                    path = f" via {t.path}" if t.path else ""
                    print(f"{t.target_id:6d}  {t.label!r:24} {t.kind:9} {t.status:9} {where}{extra}{examples}{path}")
        elif args.remove is not None:
            reply = teacher.call(RemoveTarget, "remove_target", RemoveTarget.Request(target_id=args.remove))
        elif args.reset:
            reply = teacher.call(ResetTargets, "reset_targets", ResetTargets.Request(camera=args.camera))
        elif args.box is not None or args.service or (args.caption is not None and args.target_id):
            req = AddTarget.Request(camera=args.camera, label=args.label, target_id=args.target_id)
            if args.caption is not None:
                req.caption = args.caption
            else:
                req.image = image_msg(read_image(args.image), "rgb8")
                if args.box is not None:
                    req.box = [float(v) for v in args.box]
                else:
                    req.mask = image_msg(read_mask(args.mask), "mono8")
            reply = teacher.call(AddTarget, "add_target", req)
        elif args.caption is not None:
            answer = teacher.publish_and_wait("caption", String, String(data=args.caption))
        else:
            msg = ReferenceTarget(target_id=args.add_view or args.target_id, add_view=bool(args.add_view),
                                  label=args.label, camera=args.camera,
                                  image=image_msg(read_image(args.image), "rgb8"),
                                  mask=image_msg(read_mask(args.mask), "mono8"))
            answer = teacher.publish_and_wait("reference", ReferenceTarget, msg)
    finally:
        teacher.close()
    if reply is not None:
        print(reply.message)
        return 0 if reply.success else 1
    if answer is not None:
        print(answer)
        return 1 if answer.startswith("rejected") else 0
    print(f"refseg-teach: no answer from {args.node} within {args.timeout:.0f} s", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
