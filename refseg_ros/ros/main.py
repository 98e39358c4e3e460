"""`refseg-node`: run the segmenter without ROS 2's launch tools.

    refseg-node [--no-autostart] [--executor multi|single|events] [--threads N]
                --ros-args --params-file config/segmenter.yaml

By default the node drives itself through configure and activate, as a launch file's
lifecycle event handlers would; with --no-autostart it waits unconfigured for a
lifecycle manager (or `ros2 lifecycle set`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.utilities import remove_ros_args


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="refseg-node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-autostart", action="store_true",
                        help="stay unconfigured; wait for lifecycle transitions")
    parser.add_argument("--executor", choices=EXECUTORS, default=DEFAULT_EXECUTOR,
                        help=f"rclpy executor (default {DEFAULT_EXECUTOR}; docs/NODE.md, 'CPU threads')")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of the multi executor (default: cameras + 4)")
    return parser.parse_args(list(remove_ros_args(list(argv)))[1:])


EXECUTORS = ("multi", "single", "events")
DEFAULT_EXECUTOR = "multi"


def make_executor(kind: str, threads: int) -> Executor:
    """The executor that spins the node: `multi` (a thread pool, so a slow service call
    never holds up frame intake), `single`, or `events` (rclpy's experimental C++ events
    executor, one thread)."""
    if kind == "multi":
        return MultiThreadedExecutor(num_threads=threads)
    if kind == "single":
        return SingleThreadedExecutor()
    from rclpy.experimental import EventsExecutor

    return EventsExecutor()


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv)
    rclpy.init(args=argv)
    from .node import SegmenterNode  # after init: loads the generated message modules

    node = SegmenterNode()
    cameras = len(node.get_parameter("cameras").value or [])
    return spin_lifecycle(node, make_executor(args.executor, args.threads or cameras + 4),
                          autostart=not args.no_autostart)


def spin_lifecycle(node: LifecycleNode, executor: Executor, autostart: bool) -> int:
    """Spin a lifecycle node that has a `release()` until Ctrl-C or shutdown; with
    `autostart`, configure and activate it first. Returns 1 when a transition fails, else 0.
    Whatever happens, the node is released and destroyed and the context shut down."""
    executor.add_node(node)
    try:
        if autostart:
            for step in ("configure", "activate"):
                if getattr(node, f"trigger_{step}")() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"{step} failed; see the error above")
                    return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.release()
        finally:
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
