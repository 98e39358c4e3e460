"""The follow controller's parameters: one table, declared with descriptors (range or
choices, read-only), read into `FollowOptions` and the control law's `FollowSettings`.

Read-only parameters (topics, the message type) are fixed when the process starts
(`-p name:=value`, a parameters file, a launch file); `ros2 param set` refuses them with
rclpy's reason. The others can change on a running node: a set is checked here (a value
out of range is refused by rclpy from the descriptor, one that cannot work by
`FollowSettings.check`) and takes effect on the next objects message.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..runtime.follow import FollowSettings

_LAW = FollowSettings()
_UINT32_MAX = 2 ** 32 - 1


@dataclass(frozen=True)
class Spec:
    """One parameter: default, description, range (lo, hi) for numbers, read_only."""

    default: Any
    description: str
    range: Optional[tuple[float, float]] = None
    read_only: bool = False


# name -> Spec. The control law's defaults are FollowSettings' own.
PARAMETERS: dict[str, Spec] = {
    "objects_topic": Spec("camera/image_raw/refseg/objects", "refseg_ros/SegmentedObjectArray of the camera to follow "
                          "with (relative names resolve in the node's namespace)", read_only=True),
    "cmd_vel_topic": Spec("cmd_vel", "where velocity commands go", read_only=True),
    "stamped": Spec(False, "publish geometry_msgs/TwistStamped (header: clock, base_frame_id) instead of "
                    "geometry_msgs/Twist", read_only=True),
    "status_topic": Spec("~/status", "std_msgs/String: what the controller does and why it stopped "
                         "(transient local)", read_only=True),
    "list_targets_service": Spec("refseg/list_targets", "the segmenter's list_targets service: which targets "
                                 "are captions (for the default target)", read_only=True),
    "base_frame_id": Spec("base_link", "frame_id of TwistStamped commands"),
    "target_id": Spec(0, "target id to follow; 0: by target_label, else the newest caption target",
                      (0, _UINT32_MAX)),
    "target_label": Spec("", "label to follow (the newest target with exactly this label) when target_id is 0"),
    "list_period": Spec(2.0, "seconds between list_targets calls while following the newest caption target "
                        "(also called at once when an unknown id appears)", (0.1, 3600.0)),
    "stop_distance": Spec(_LAW.stop_distance, "metres: the robot stops approaching at this horizontal range",
                          (0.0, 100.0)),
    "linear_gain": Spec(_LAW.linear_gain, "1/s: forward speed (m/s) per metre beyond stop_distance", (0.0, 100.0)),
    "angular_gain": Spec(_LAW.angular_gain, "1/s: yaw rate (rad/s) per radian of heading error", (0.0, 100.0)),
    "max_linear_speed": Spec(_LAW.max_linear_speed, "m/s: forward speed limit", (0.0, 20.0)),
    "max_angular_speed": Spec(_LAW.max_angular_speed, "rad/s: yaw rate limit", (0.0, 20.0)),
    "occlusion_timeout": Spec(_LAW.occlusion_timeout, "seconds (frame time) the last command is held while the "
                              "target is occluded or acquiring before a stop; 0: stop at once", (0.0, 60.0)),
    "stale_timeout": Spec(_LAW.stale_timeout, "seconds an objects array's stamp may lie from the clock before a "
                          "stop (above the segmenter's latency)", (0.001, 3600.0)),
    "message_timeout": Spec(_LAW.message_timeout, "seconds without objects before a stop (above the "
                            "segmenter's frame period)", (0.001, 3600.0)),
}

#: Parameters that are FollowSettings fields (the control law's).
LAW_PARAMETERS = tuple(f.name for f in fields(FollowSettings))


@dataclass(frozen=True)
class FollowOptions:
    """The node's own (non control law) parameter values."""

    objects_topic: str
    cmd_vel_topic: str
    stamped: bool
    status_topic: str
    list_targets_service: str
    base_frame_id: str
    target_id: int
    target_label: str
    list_period: float


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    """The ParameterDescriptor of one table row (range for numbers, read_only)."""
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def declare(node: Node) -> None:
    """Declare every parameter on `node`. Raises rclpy's InvalidParameterValueException
    when a start-up override lies out of its range."""
    for name, spec in PARAMETERS.items():
        node.declare_parameter(name, spec.default, descriptor(name, spec))


def read(node: Node, changes: Sequence[Parameter] = ()) -> tuple[FollowOptions, FollowSettings]:
    """The current values, with `changes` (a set being checked) applied over them.

    Raises ValueError naming the parameter when a value cannot work.
    """
    values = {name: node.get_parameter(name).value for name in PARAMETERS}
    values.update({p.name: p.value for p in changes if p.name in PARAMETERS})
    law = FollowSettings().updated(**{k: values[k] for k in LAW_PARAMETERS})
    options = FollowOptions(**{f.name: values[f.name] for f in fields(FollowOptions)})
    return options, law
