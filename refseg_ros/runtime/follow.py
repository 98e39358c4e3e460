"""The follow controller's control law and stop rules, from plain numbers only.

Conventions:

- Input: what the segmenter publishes for one target on one frame (`Sighting`): its state,
  the unit bearing ray and the 3D point in the camera's optical frame (REP-103: z forward,
  x right, y down) and the frame's stamp.
- Output: a velocity in the robot's base frame (REP-103: x forward, y left, z up), a
  unicycle command: `linear` along x in m/s, `angular` about z in rad/s, positive
  counter-clockwise (a left turn).
- The camera is taken to look forward along the base's x axis, level, on the base's
  vertical axis (optical z = base x, optical x = base -y). The heading error is
  `atan2(bearing.x, bearing.z)`, positive when the target is to the right, so turning
  towards it needs a negative (clockwise) yaw rate: `angular = -angular_gain * error`.
- Range: the horizontal distance `hypot(position.x, position.z)`, metres. The robot drives
  at `linear_gain * (range - stop_distance)` scaled by `cos(error)` (no forward speed while
  the target is abeam or behind), never backwards.

Stop rules (a stop is a zero command, given once: while stopped nothing more is sent):

- the target is lost, or is not in the objects array, or no target is chosen;
- the array is stale: its stamp lies more than `stale_timeout` seconds from the clock
  (or is zero, which says nothing about its age);
- the target is occluded or being acquired for more than `occlusion_timeout` seconds of
  frame time after it was last tracked (until then the last command is held: a short
  occlusion does not halt the robot);
- no objects array arrived for `message_timeout` seconds (`Follower.on_tick`, from a timer);
- the target's bearing or position is not finite, or the bearing is a zero vector;
- the node is deactivated or shut down (`Follower.halt`).

Nothing here needs ROS; refseg_ros.ros.follow_node turns messages into these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Iterable, Optional, Sequence

#: SegmentedObject's state constants (msg/SegmentedObject.msg).
STATE_ACQUIRING, STATE_TRACKED, STATE_OCCLUDED, STATE_LOST = 0, 1, 2, 3


@dataclass(frozen=True)
class FollowSettings:
    """The control law's gains, limits and timeouts (SI units: m, s, rad).

    Raises ValueError from `check` when a value cannot work.
    """

    stop_distance: float = 1.0      # m: range at which the robot stops approaching
    linear_gain: float = 0.5        # 1/s: m/s of forward speed per metre beyond stop_distance
    angular_gain: float = 1.5       # 1/s: rad/s of yaw rate per radian of heading error
    max_linear_speed: float = 0.5   # m/s
    max_angular_speed: float = 1.0  # rad/s
    occlusion_timeout: float = 1.0  # s of frame time the last command is held while not tracked
    stale_timeout: float = 1.0      # s: largest |clock - array stamp| accepted
    message_timeout: float = 1.0    # s without any objects array before a stop

    def check(self) -> None:
        """Refuse values that cannot work (negative limits, non-positive timeouts), naming the field."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value}")
        for name in ("stale_timeout", "message_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def updated(self, **values: float) -> "FollowSettings":
        """A copy with `values` replaced, checked (ValueError names a bad one)."""
        settings = replace(self, **{k: float(v) for k, v in values.items()})
        settings.check()
        return settings


@dataclass(frozen=True)
class Sighting:
    """One target on one frame, as the segmenter's SegmentedObject gives it.

    bearing: unit ray (x, y, z) in the optical frame, valid when has_bearing.
    position: point (x, y, z) in metres in the optical frame, valid when has_position.
    stamp: the objects array's header stamp, seconds (0: unknown).
    """

    state: int
    stamp: float
    has_bearing: bool = False
    bearing: tuple[float, float, float] = (0.0, 0.0, 0.0)
    has_position: bool = False
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Command:
    """A velocity to publish: `linear` m/s along base x, `angular` rad/s about base z.

    `stop` marks the zero command of a stop; `reason` says why it was given (for status) and
    `code` names its kind (following, holding, absent, no_stamp, stale, bad_input, lost,
    no_bearing, occluded, silent, no_target, halted).
    """

    linear: float
    angular: float
    reason: str
    stop: bool = False
    code: str = "following"  # short kind of reason: following, holding, absent, stale, lost, ...


def heading_error(bearing: Sequence[float]) -> float:
    """Radians from the optical axis to the bearing, in the horizontal plane; positive when
    the target is to the right (optical +x)."""
    return math.atan2(bearing[0], bearing[2])


def horizontal_range(position: Sequence[float]) -> float:
    """Metres from the camera to the point in the horizontal plane (optical x and z)."""
    return math.hypot(position[0], position[2])


def clamp(value: float, limit: float) -> float:
    """`value` limited to [-limit, limit]."""
    return max(-limit, min(limit, value))


def velocity(settings: FollowSettings, sighting: Sighting) -> tuple[float, float]:
    """(linear m/s, angular rad/s) that turn towards a tracked sighting with a bearing and,
    when it has a position, approach it to `stop_distance`; within the speed limits."""
    error = heading_error(sighting.bearing)
    angular = clamp(-settings.angular_gain * error, settings.max_angular_speed)
    linear = 0.0
    if sighting.has_position:
        ahead = horizontal_range(sighting.position) - settings.stop_distance
        linear = settings.linear_gain * max(ahead, 0.0) * max(math.cos(error), 0.0)
        linear = min(linear, settings.max_linear_speed)
    return linear, angular


class Follower:
    """Turns sightings of the followed target into commands, and decides when to stop.

    Every method returns the Command to publish, or None when nothing is to be sent (a stop
    already given, or a stop with nothing moving). Times are seconds on one clock (the
    node's); frame stamps are on the clock the segmenter stamps its arrays with.
    `settings` may be replaced at any time; the next call uses the new values.
    """

    def __init__(self, settings: FollowSettings):
        settings.check()
        self.settings = settings
        self.moving = False          # a non-zero command was sent since the last stop
        self.last: Optional[Command] = None
        self.last_message: Optional[float] = None  # clock time of the last objects array
        self.last_tracked: Optional[float] = None  # stamp of the last frame with the target tracked
        self.code = "idle"           # the kind of the latest decision, sent or not
        self.reason = "no objects yet"

    def on_sighting(self, sighting: Optional[Sighting], now: float, target: str = "target") -> Optional[Command]:
        """The command for one objects array: `sighting` is the followed target's entry
        (None: not in the array), `now` the clock on arrival, `target` its name for reasons."""
        s = self.settings
        self.last_message = now
        if sighting is None:
            return self.halt(f"{target} is not in the objects", "absent")
        if sighting.stamp <= 0:
            return self.halt("the objects' header has no stamp", "no_stamp")
        age = now - sighting.stamp
        if abs(age) > s.stale_timeout:
            return self.halt(f"the objects are stale ({age:.2f} s from the clock, "
                             f"stale_timeout {s.stale_timeout:g} s)", "stale")
        if not all(map(math.isfinite, sighting.bearing + sighting.position)) or (
                sighting.has_bearing and not any(sighting.bearing)):
            return self.halt(f"{target} has a bearing or position that is not a finite point "
                             f"(bearing {sighting.bearing}, position {sighting.position})", "bad_input")
        if sighting.state == STATE_LOST:
            self.last_tracked = None
            return self.halt(f"{target} is lost", "lost")
        if sighting.state == STATE_TRACKED and sighting.has_bearing:
            self.last_tracked = sighting.stamp
            linear, angular = velocity(s, sighting)
            return self._go(Command(linear, angular, f"following {target}"))
        if sighting.state == STATE_TRACKED:
            return self.halt(f"{target} has no bearing (no valid CameraInfo)", "no_bearing")
        unseen = None if self.last_tracked is None else sighting.stamp - self.last_tracked
        if self.moving and self.last is not None and unseen is not None and unseen <= s.occlusion_timeout:
            return self._go(replace(self.last, reason=f"holding the last command: {target} not seen for "
                                                     f"{unseen:.2f} s", code="holding"))
        what = "occluded" if sighting.state == STATE_OCCLUDED else "not found yet"
        return self.halt(f"{target} {what} for more than occlusion_timeout ({s.occlusion_timeout:g} s)",
                         "occluded")

    def on_tick(self, now: float) -> Optional[Command]:
        """Called periodically: a stop when no objects array came for `message_timeout`."""
        if self.last_message is not None and now - self.last_message > self.settings.message_timeout:
            return self.halt(f"no objects for {now - self.last_message:.2f} s "
                             f"(message_timeout {self.settings.message_timeout:g} s)", "silent")
        return None

    def halt(self, reason: str, code: str = "halted") -> Optional[Command]:
        """A zero command, once: None when nothing is moving. `code` names the kind of reason."""
        self.code, self.reason = code, reason
        if not self.moving:
            return None
        self.moving = False
        self.last = Command(0.0, 0.0, reason, stop=True, code=code)
        return self.last

    def _go(self, command: Command) -> Command:
        self.code, self.reason = command.code, command.reason
        self.moving = command.linear != 0.0 or command.angular != 0.0
        self.last = command
        return command


def choose_target(objects: Iterable[tuple[int, str]], target_id: int = 0, target_label: str = "",
                  caption_ids: Iterable[int] = ()) -> Optional[int]:
    """The id of the target to follow among `objects` ((id, label) pairs of one array).

    target_id > 0: that id (whether or not it is in the array: absent means lost).
    target_label: the newest (largest id) object with exactly that label in the array.
    Otherwise: the newest caption target (largest id in `caption_ids`, the targets of kind
    caption the segmenter lists); None when there is none.
    """
    if target_id > 0:
        return target_id
    if target_label:
        ids = [tid for tid, label in objects if label == target_label]
        return max(ids) if ids else None
    captions = list(caption_ids)
    return max(captions) if captions else None
