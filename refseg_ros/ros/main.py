"""`refseg-node`: run the segmenter without ROS 2's launch tools.

    refseg-node [--no-autostart] [--executor multi|single|events] [--threads N]
                --ros-args --params-file config/segmenter.yaml

`--executor events` needs ROS 2 Kilted or newer; on Humble and Jazzy it is refused at
once (exit status 2) with the reason.

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

from .rclpy_compat import events_executor, has_events_executor, unsupported_events_reason
from .lifecycle import spin_lifecycle


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="refseg-node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-autostart", action="store_true",
                        help="stay unconfigured; wait for lifecycle transitions")
    parser.add_argument("--executor", choices=EXECUTORS, default=DEFAULT_EXECUTOR,
                        help=f"rclpy executor (default {DEFAULT_EXECUTOR}; docs/NODE.md, 'CPU threads')")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of the multi executor (default: cameras + 4)")
    args = parser.parse_args(list(remove_ros_args(list(argv)))[1:])
    if args.executor == "events" and not has_events_executor():
        parser.error(f"--executor events: {unsupported_events_reason()}")
    return args


EXECUTORS = ("multi", "single", "events")
DEFAULT_EXECUTOR = "multi"


def make_executor(kind: str, threads: int) -> Executor:
    """The executor that spins the node: `multi` (a thread pool, so a slow service call
    never holds up frame intake), `single`, or `events` (rclpy's experimental C++ events
    executor, one thread; Kilted and newer).

    Raises:
        rclpy_compat.Unsupported: `events` on a distribution without it (Humble, Jazzy).
    """
    if kind == "multi":
        return MultiThreadedExecutor(num_threads=threads)
    if kind == "single":
        return SingleThreadedExecutor()
    return events_executor()


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
