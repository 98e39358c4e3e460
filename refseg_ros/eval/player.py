"""Publish a bag's messages over ROS 2, at the pace they were recorded.

``ros2 bag play`` is not installable without a ROS install, and live evaluation needs a
player that the evaluation controls. The bag's CDR bytes are published as they are
(rclpy publishers accept serialised messages), so nothing is decoded on the way.

Images go out as reliable, volatile topics; everything else (references, captions) is
also transient-local, so that a node which subscribes a moment late still gets taught.
A topic whose message type rclpy cannot load (a custom type whose package is not built
and sourced here) is skipped with a warning, as ``ros2 bag play`` does.
rclpy is imported only when playing, so the rest of the evaluation runs without ROS.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from refseg_ros.eval import bags

STREAM_TYPES = (bags.IMAGE_TYPE, bags.COMPRESSED_TYPE)

log = logging.getLogger(__name__)


class PlayerError(RuntimeError):
    """Something cannot be published: a message type rclpy cannot load, a bag with no
    topic left to play, or subscribers that did not come."""


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Type``.

    Raises:
        PlayerError: the type is not built (its package cannot be imported or lacks it),
            or the name is not of the form pkg/msg/Type.
    """
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise PlayerError(f"message type {msgtype} is not available to rclpy ({exc}); build "
                          "and source the package that defines it, or leave its topic out "
                          "with --topics") from exc


def publishable_classes(path: Path, types: dict[str, str],
                        topics: Sequence[str]) -> dict[str, Any]:
    """The rclpy message class of each of ``topics`` (in that order) that can be published.

    A topic whose type rclpy cannot load (no Python module, or no type support) is left
    out with one warning naming the topic and its type.

    Raises:
        PlayerError: none of ``topics`` can be published.
    """
    from rclpy.type_support import check_for_type_support

    classes: dict[str, Any] = {}
    skipped: list[str] = []
    for topic in topics:
        msgtype = types[topic]
        try:
            cls = message_class(msgtype)
            check_for_type_support(cls)
        except PlayerError as exc:
            reason = exc.__cause__
        except Exception as exc:  # noqa: BLE001 - rosidl raises several kinds here
            reason = exc
        else:
            classes[topic] = cls
            continue
        skipped.append(f"{topic} [{msgtype}]")
        log.warning("skipping topic %s: its message type %s is not available to rclpy "
                    "(%s); build and source the package that defines it to play it",
                    topic, msgtype, reason)
    if not classes:
        raise PlayerError(f"bag {path}: nothing to play: no chosen topic has a message type "
                          f"rclpy can load (skipped {', '.join(skipped)})")
    return classes


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

    A chosen topic whose message type rclpy cannot load is skipped with a warning (see
    :func:`publishable_classes`).

    Raises:
        BagError: the bag cannot be read, or lacks one of ``topics``.
        PlayerError: no chosen topic can be published, or the subscribers awaited with
            ``wait_for_subscribers`` did not come within ``wait_timeout``.
    """
    with bags.BagReader(path) as reader:
        chosen = list(dict.fromkeys(topics)) if topics else sorted(reader.topics)
        reader.check_topics(chosen)  # before ROS starts
        import rclpy
        from rclpy.duration import Duration

        classes = publishable_classes(reader.path, reader.topics, chosen)
        messages = reader.raw_messages(list(classes))
        own_context = not rclpy.ok()
        if own_context:
            rclpy.init()
        node = rclpy.create_node(node_name)
        try:
            publishers = {}
            for t, cls in classes.items():
                msgtype = reader.topics[t]
                publishers[t] = node.create_publisher(cls, t, publisher_qos(msgtype, depth))
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
