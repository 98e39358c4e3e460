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
from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.utilities import remove_ros_args

from .lifecycle import spin_lifecycle


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


if __name__ == "__main__":
    sys.exit(main())
