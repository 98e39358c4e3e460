"""Publish a bag's messages over ROS 2, at the pace they were recorded.

``ros2 bag play`` is not installable without a ROS install, and live evaluation needs a
player that the evaluation controls. The bag's CDR bytes are published as they are
(rclpy publishers accept serialised messages), so nothing is decoded on the way.

Images go out as reliable, volatile topics; everything else (references, captions) is
also transient-local, so that a node which subscribes a moment late still gets taught.
rclpy is imported only when playing, so the rest of the evaluation runs without ROS.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from refseg_ros.eval import bags

STREAM_TYPES = (bags.IMAGE_TYPE, bags.COMPRESSED_TYPE)


class PlayerError(RuntimeError):
    """A bag topic that cannot be published (its message type is not built)."""


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Type``; a clear error when it is not built."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise PlayerError(f"message type {msgtype} is not available to rclpy ({exc}); build "
                          "and source the package that defines it, or leave its topic out "
                          "with --topics") from exc


def publisher_qos(msgtype: str, depth: int = 10) -> Any:
    """Reliable; images volatile, anything else also transient-local (see module doc)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    durability = (DurabilityPolicy.VOLATILE if msgtype in STREAM_TYPES
                  else DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=durability)


def play_bag(path: str | Path, *, rate: float = 1.0, publish_clock: bool = False,
             topics: Optional[Sequence[str]] = None, start_delay: float = 0.5,
             depth: int = 10, wait_for_subscribers: int = 0, wait_timeout: float = 30.0,
             ack_timeout: float = 5.0, stop: Optional[threading.Event] = None,
             on_publish: Optional[Callable[[str, int], None]] = None,
             node_name: str = "refseg_bag_player") -> int:
    """Publish the bag's messages in log-time order; returns how many were published.

    ``rate`` scales playback speed (2.0 plays twice as fast; 0 or less: as fast as
    possible). ``publish_clock`` publishes rosgraph_msgs/Clock with each message's log
    time on /clock, for nodes running with use_sim_time. ``start_delay`` leaves
    subscribers time to match the publishers before the first message; with
    ``wait_for_subscribers`` = n, playback also waits (up to ``wait_timeout`` s) until
    every image topic has n matched subscribers, since DDS discovery can take seconds
    and a volatile topic's early messages would otherwise reach no one. Before
    returning, it waits up to ``ack_timeout`` s for matched subscribers to acknowledge
    the last messages.
    """
    import rclpy
    from rclpy.duration import Duration

    with bags.BagReader(path) as reader:
        chosen = list(topics) if topics else sorted(reader.topics)
        messages = reader.raw_messages(chosen)  # checks the topics before ROS starts
        own_context = not rclpy.ok()
        if own_context:
            rclpy.init()
        node = rclpy.create_node(node_name)
        try:
            publishers = {}
            for t in chosen:
                msgtype = reader.topics[t]
                publishers[t] = node.create_publisher(message_class(msgtype), t,
                                                      publisher_qos(msgtype, depth))
            clock_pub = None
            if publish_clock:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(Clock, "/clock", 10)
            if wait_for_subscribers > 0:
                _wait_for_subscribers(node, publishers, reader.topics, wait_for_subscribers,
                                      wait_timeout)
            if start_delay > 0:
                time.sleep(start_delay)
            count = 0
            wall0: Optional[float] = None
            bag0 = 0
            for topic, log_time, raw in messages:
                if stop is not None and stop.is_set():
                    break
                if wall0 is None:
                    wall0, bag0 = time.monotonic(), log_time
                if rate > 0:
                    due = wall0 + (log_time - bag0) * 1e-9 / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if clock_pub is not None:
                    from rosgraph_msgs.msg import Clock

                    clock = Clock()
                    clock.clock.sec = int(log_time // 1_000_000_000)
                    clock.clock.nanosec = int(log_time % 1_000_000_000)
                    clock_pub.publish(clock)
                publishers[topic].publish(raw)
                count += 1
                if on_publish is not None:
                    on_publish(topic, log_time)
            # Reliable delivery still needs the publisher alive: wait for the acks.
            for pub in [*publishers.values(), *([clock_pub] if clock_pub else [])]:
                pub.wait_for_all_acked(Duration(seconds=ack_timeout))
            return count
        finally:
            node.destroy_node()
            if own_context:
                rclpy.shutdown()


def _wait_for_subscribers(node: Any, publishers: dict[str, Any], types: dict[str, str],
                          count: int, timeout: float) -> None:
    """Block until each image topic (every topic if none is an image) has ``count``
    matched subscriptions."""
    watched = [t for t in publishers if types[t] in STREAM_TYPES] or list(publishers)
    deadline = time.monotonic() + timeout
    while True:
        missing = [t for t in watched if publishers[t].get_subscription_count() < count]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise PlayerError(f"no {count} subscriber(s) on {', '.join(missing)} after "
                              f"{timeout:.0f} s")
        time.sleep(0.05)
