"""The rclpy API that differs between the ROS 2 distributions this package runs on.

Every use of an rclpy name that is not the same on Humble (rclpy 3.3), Jazzy (7.1),
Kilted (9.1) and newer goes through this module, so a new distribution means a change
here only. What differs, and what the rest of the package may rely on:

- QoS event callbacks: ``rclpy.event_handler`` from Iron on; ``rclpy.qos_event`` on
  Humble (Jazzy still has it, deprecated, with a warning on import).
- The events executor: ``rclpy.experimental.EventsExecutor`` from Kilted on; Humble and
  Jazzy have none (:func:`events_executor` raises :class:`Unsupported` there).
- A subscription's matched publisher count: ``Subscription.get_publisher_count()`` from
  Jazzy on; on Humble, the publishers of its topic in the ROS graph
  (:func:`publisher_count`).

Everything else the package uses (lifecycle nodes, executors, QoS profiles, typed
parameter declarations, ``raw=True`` subscriptions, serialization, signal-handler
options) is the same from Humble on.
"""

from __future__ import annotations

from typing import Any

try:  # Iron and newer
    from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks  # type: ignore

__all__ = ["QoSRequestedIncompatibleQoSInfo", "SubscriptionEventCallbacks", "Unsupported", "events_executor",
           "has_events_executor", "publisher_count", "rclpy_version",
           "unsupported_events_reason"]


class Unsupported(RuntimeError):
    """A feature this distribution's rclpy lacks; the message says which and what to use."""


def rclpy_version() -> str:
    """The installed rclpy's version (e.g. ``3.3.16`` on Humble, ``9.1.2`` on Kilted), or
    ``unknown`` when its package metadata is missing (a source build without it)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("rclpy", "ros-rclpy"):  # an apt/colcon install; the PyPI wheels
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def has_events_executor() -> bool:
    """Whether this rclpy has the events executor (Kilted and newer)."""
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        return False
    return True


def events_executor() -> Any:
    """A new ``rclpy.experimental.EventsExecutor`` (one thread, C++ event queue).

    Raises:
        Unsupported: this rclpy has no events executor (Humble, Jazzy); the message names
            the rclpy version and the executors that work.
    """
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        raise Unsupported(unsupported_events_reason()) from None
    return EventsExecutor()


def unsupported_events_reason() -> str:
    """Why the events executor cannot run here, and what to use instead (one line)."""
    return (f"the events executor needs rclpy.experimental.EventsExecutor (ROS 2 Kilted or newer); "
            f"this rclpy ({rclpy_version()}) has none: use --executor multi or single")


def publisher_count(node: Any, subscription: Any) -> int:
    """Publishers matched with `subscription` (Jazzy and newer), or on Humble the
    publishers of its topic in `node`'s view of the ROS graph (matched or not)."""
    count = getattr(subscription, "get_publisher_count", None)
    if count is not None:
        return int(count())
    return int(node.count_publishers(subscription.topic_name))
