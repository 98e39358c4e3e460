"""Quality of service, following REP-2003.

Live: camera images are subscribed with the sensor-data profile (best effort, shallow),
which matches both best-effort and reliable camera drivers and never makes a driver wait
for us. Replay: images are subscribed reliably with a deep queue, so a bag player's every
frame arrives. Results are published reliably (system default), deep in replay mode so
that a recorder misses nothing. `qos_reliability` and `qos_depth` override the input side.
"""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

LIVE_OUTPUT_DEPTH = 10
REPLAY_DEPTH = 1000
_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}


def image_input_qos(mode: str, reliability: str = "", depth: int = 0) -> QoSProfile:
    """Subscription QoS for camera images in `mode`, with optional overrides."""
    if mode == "replay":
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=REPLAY_DEPTH,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
    else:
        profile = QoSProfile(history=qos_profile_sensor_data.history,
                             depth=qos_profile_sensor_data.depth,
                             reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability)
    if reliability:
        profile.reliability = parse_reliability(reliability)
    if depth > 0:
        profile.depth = depth
    return profile


def output_qos(mode: str, depth: int = 0) -> QoSProfile:
    """Publisher QoS for masks, objects and overlays."""
    default = REPLAY_DEPTH if mode == "replay" else LIVE_OUTPUT_DEPTH
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth if depth > 0 else default,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def teaching_qos() -> QoSProfile:
    """References, captions and status: reliable, nothing a user sends is dropped."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def status_qos() -> QoSProfile:
    """Status events: reliable, and the latest ones kept for subscribers that join late
    (with a transient-local subscription, e.g. `ros2 topic echo --qos-durability
    transient_local`), so that start-up and restore messages are not lost to discovery."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def parse_reliability(value: str) -> ReliabilityPolicy:
    try:
        return _RELIABILITY[value.strip().lower().replace("-", "_")]
    except KeyError:
        raise ValueError(f"qos_reliability must be reliable or best_effort, got {value!r}") from None
