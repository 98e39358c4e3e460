"""refseg-follow closed-loop over DDS: the real node in its own process drives a simulated robot.

The test process runs a small kinematic world (a unicycle robot integrating the Twist it
receives, a target point moving slowly, a second target standing elsewhere) and publishes,
at 10 Hz, the SegmentedObjectArray the segmenter would publish for what the robot's
forward camera sees (bearing and position in the optical frame, state tracked in view,
occluded out of it), stamped with the current clock. It also serves the segmenter's
list_targets (target 1 a reference, target 2 a caption), so the node follows its default,
the newest caption target. Checks: the robot ends within the stopping distance facing
the target, no command exceeds the limits, and a zero command comes within one timeout of
the target leaving view, of the objects falling silent, of stale arrays and on SIGTERM.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Optional

import pytest

from support.node_harness import Listener, start_follow
from support.processes import Process


HFOV = math.radians(90.0)       # the simulated camera's horizontal field of view
DEPTH_RANGE = (0.2, 8.0)        # metres within which it measures depth
RATE = 10.0                     # objects arrays per second, as a segmenter on a GPU
FRAME_ID = "camera_optical_frame"
OBJECTS = "/camera/image_raw/refseg/objects"
NODE = "refseg_follow"
LAW = {"stop_distance": 1.0, "linear_gain": 0.8, "angular_gain": 2.0, "max_linear_speed": 0.4,
       "max_angular_speed": 0.8, "occlusion_timeout": 0.6, "stale_timeout": 1.0, "message_timeout": 0.8}
# DDS delivery and scheduling on a loaded machine, on top of a timeout and one frame period
SLACK = 1.0


@dataclass
class World:
    """A unicycle robot (x, y, yaw; REP-103: x forward, y left) and points in the plane."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    points: dict = field(default_factory=dict)      # target id -> [x, y]
    velocities: dict = field(default_factory=dict)  # target id -> (vx, vy) m/s

    def step(self, linear: float, angular: float, dt: float) -> None:
        self.x += linear * math.cos(self.yaw) * dt
        self.y += linear * math.sin(self.yaw) * dt
        self.yaw += angular * dt
        for tid, (vx, vy) in self.velocities.items():
            self.points[tid][0] += vx * dt
            self.points[tid][1] += vy * dt

    def optical(self, tid: int) -> tuple[float, float, float]:
        """The point in the camera's optical frame (z forward, x right, y down; camera at
        the robot's centre looking along its x axis, the point 0.3 m below it)."""
        dx, dy = self.points[tid][0] - self.x, self.points[tid][1] - self.y
        forward = math.cos(self.yaw) * dx + math.sin(self.yaw) * dy
        left = -math.sin(self.yaw) * dx + math.cos(self.yaw) * dy
        return -left, 0.3, forward

    def distance(self, tid: int) -> float:
        return math.hypot(self.points[tid][0] - self.x, self.points[tid][1] - self.y)

    def heading_error(self, tid: int) -> float:
        x, _, z = self.optical(tid)
        return math.atan2(x, z)

    def visible(self, tid: int) -> bool:
        x, _, z = self.optical(tid)
        return z > 0 and abs(math.atan2(x, z)) < HFOV / 2


class Sim:
    """The world in closed loop with the node: receives commands, publishes objects."""

    LABELS = {1: "box", 2: "the red mug"}
    KINDS = {1: "reference", 2: "caption"}

    def __init__(self, listener: Listener, node: Process, world: World):
        from geometry_msgs.msg import Twist
        from refseg_ros.msg import SegmentedObjectArray
        from refseg_ros.srv import ListTargets

        self.listener, self.node, self.world = listener, node, world
        self.hidden: set[int] = set()   # targets the segmenter reports occluded (out of view)
        self.commands: list[tuple[float, float, float]] = []  # (monotonic, linear, angular)
        self.sideways: list = []  # commands with a component a unicycle cannot follow
        self.current = (0.0, 0.0)
        self.clock_offset = 0.0         # added to the stamps (stale arrays)
        self.path: list[tuple[float, float, float]] = []  # (monotonic, x, y)

        def on_twist(msg) -> None:
            self.commands.append((time.monotonic(), msg.linear.x, msg.angular.z))
            if any((msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y)):
                self.sideways.append(msg)
            self.current = (msg.linear.x, msg.angular.z)

        def on_list(request, reply):
            from refseg_ros.msg import TargetInfo

            reply.success = True
            reply.targets = [TargetInfo(target_id=t, label=self.LABELS[t], kind=self.KINDS[t],
                                        caption=self.LABELS[t] if self.KINDS[t] == "caption" else "")
                             for t in sorted(world.points)]
            return reply

        node_ = listener.node
        self._subs = [node_.create_subscription(Twist, "/cmd_vel", on_twist, 10)]
        self._service = node_.create_service(ListTargets, "/refseg/list_targets", on_list)
        self._pub = node_.create_publisher(SegmentedObjectArray, OBJECTS, 10)

    def array(self):
        from refseg_ros.msg import SegmentedObject, SegmentedObjectArray

        stamp = self.listener.node.get_clock().now().nanoseconds * 1e-9 + self.clock_offset
        msg = SegmentedObjectArray()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int(round((stamp % 1.0) * 1e9)) % 10 ** 9
        msg.header.frame_id = FRAME_ID
        for tid in sorted(self.world.points):
            o = SegmentedObject(target_id=tid, label=self.LABELS[tid], score=0.9, frame_id=FRAME_ID)
            x, y, z = self.world.optical(tid)
            if tid in self.hidden or not self.world.visible(tid):
                o.state = SegmentedObject.STATE_OCCLUDED
            else:
                o.state = SegmentedObject.STATE_TRACKED
                o.area = 400
                n = math.sqrt(x * x + y * y + z * z)
                o.has_bearing = True
                o.bearing.x, o.bearing.y, o.bearing.z = x / n, y / n, z / n
                if DEPTH_RANGE[0] <= z <= DEPTH_RANGE[1]:
                    o.has_position = True
                    o.position.x, o.position.y, o.position.z = x, y, z
            msg.objects.append(o)
        return msg

    def run(self, seconds: float, publish: bool = True, until=None) -> float:
        """Step the world in real time for `seconds` (or until `until()`), publishing an
        objects array every frame when `publish`; returns the seconds it ran."""
        start = last = time.monotonic()
        next_frame = start
        while time.monotonic() - start < seconds:
            if not self.node.alive():
                raise AssertionError(f"follow node died:\n{self.node.output()[-3000:]}")
            now = time.monotonic()
            self.world.step(*self.current, now - last)
            last = now
            self.path.append((now, self.world.x, self.world.y))
            if publish:
                self._pub.publish(self.array())
            if until is not None and until():
                break
            next_frame += 1.0 / RATE
            time.sleep(max(0.0, next_frame - time.monotonic()))
        return time.monotonic() - start

    def wait_heard(self, timeout: float = 60.0) -> None:
        self.listener.wait_for(lambda: self._pub.get_subscription_count() > 0, timeout,
                               "the follow node subscribing to the objects", self.node)

    def first_stop_after(self, t0: float) -> Optional[float]:
        """Monotonic time of the first zero command received after t0."""
        return next((t for t, v, w in self.commands if t >= t0 and v == 0.0 and w == 0.0), None)

    def moving_commands_after(self, t0: float) -> list:
        return [c for c in self.commands if c[0] > t0 and (c[1] != 0.0 or c[2] != 0.0)]

    def travelled_since(self, t0: float) -> float:
        points = [(x, y) for t, x, y in self.path if t >= t0]
        return math.hypot(points[-1][0] - points[0][0], points[-1][1] - points[0][1]) if points else 0.0


@pytest.fixture
def listener():
    lst = Listener("follow_sim")
    yield lst
    lst.close()


def assert_stops(sim: Sim, since: float, timeout: float, what: str) -> float:
    """A zero command arrives within timeout + SLACK of `since`, and nothing moves after it."""
    sim.run(timeout + SLACK + 1.0, publish=what != "silence", until=lambda: sim.first_stop_after(since))
    stop = sim.first_stop_after(since)
    assert stop is not None, f"no stop command after {what}:\n{sim.node.output()[-3000:]}"
    assert stop - since <= timeout + SLACK, f"stop came {stop - since:.2f} s after {what}"
    sim.run(1.0, publish=what != "silence")
    assert not sim.moving_commands_after(stop), f"commands that move after the stop on {what}"
    zeros = [c for c in sim.commands if c[0] >= since and c[1:] == (0.0, 0.0)]
    assert len(zeros) == 1, f"{len(zeros)} zero commands after {what}: a stop is sent once"
    assert sim.current == (0.0, 0.0)
    return stop - since


def test_follow_closes_the_loop_and_stops(tmp_path, listener):
    world = World(points={1: [2.0, -1.5], 2: [3.0, 1.2]}, velocities={2: (0.06, -0.04)})
    node = start_follow(tmp_path, LAW)
    status = f"/{NODE}/status"
    listener.listen_status(status)
    try:
        sim = Sim(listener, node, world)
        sim.wait_heard()

        # 1. approach the newest caption target (2), which drifts, then stands
        sim.run(6.0)
        world.velocities[2] = (0.0, 0.0)
        done = lambda: (abs(world.distance(2) - LAW["stop_distance"]) < 0.1  # noqa: E731
                        and abs(world.heading_error(2)) < 0.05)
        sim.run(60.0, until=done)
        sim.run(1.0)
        assert world.distance(2) <= LAW["stop_distance"] + 0.15, (world, node.output()[-3000:])
        assert world.distance(2) >= LAW["stop_distance"] - 0.3, world
        assert abs(world.heading_error(2)) < 0.1, world
        assert world.distance(1) > 1.5, "drove to the reference target, not the caption"
        listener.wait_status("following target 2 (the red mug)", topic=status, timeout=10)

        def moving_again() -> None:
            t = time.monotonic()
            sim.run(10.0, until=lambda: sim.moving_commands_after(t) and sim.current[0] > 0.05)
            assert sim.current[0] > 0.05, "the robot did not move again"

        # 2. the target walks away, then leaves the view: held for occlusion_timeout, then a stop
        world.velocities[2] = (0.4 * math.cos(world.yaw), 0.4 * math.sin(world.yaw))
        moving_again()
        world.velocities[2] = (0.0, 0.0)
        sim.hidden.add(2)
        left = time.monotonic()
        took = assert_stops(sim, left, LAW["occlusion_timeout"], "the target leaving view")
        assert sim.travelled_since(left) <= LAW["max_linear_speed"] * (LAW["occlusion_timeout"] + SLACK)
        listener.wait_status("occluded for more than occlusion_timeout", topic=status, timeout=10)
        print(f"stop {took:.2f} s after the target left view")

        # 3. back in view 2.5 m ahead: moves again; then the objects fall silent
        sim.hidden.discard(2)
        world.points[2] = [world.x + 2.5 * math.cos(world.yaw), world.y + 2.5 * math.sin(world.yaw)]
        moving_again()
        silent = time.monotonic()
        took = assert_stops(sim, silent, LAW["message_timeout"], "silence")
        print(f"stop {took:.2f} s after the objects fell silent")

        # 4. stale arrays (stamped 3 s ago) stop it at once
        world.points[2] = [world.x + 2.5 * math.cos(world.yaw), world.y + 2.5 * math.sin(world.yaw)]
        moving_again()
        sim.clock_offset = -3.0
        took = assert_stops(sim, time.monotonic(), 1.0 / RATE, "stale objects")
        print(f"stop {took:.2f} s after stale objects")
        sim.clock_offset = 0.0

        # 5. SIGTERM while moving (a service manager's stop): one zero command before the process
        # exits (SIGINT: test_follow_params.py)
        world.points[2] = [world.x + 3.0 * math.cos(world.yaw), world.y + 3.0 * math.sin(world.yaw)]
        moving_again()
        asked = time.monotonic()
        os.killpg(node.pid, signal.SIGTERM)
        assert node.popen.wait(timeout=15) == 0, node.output()[-3000:]
        listener.wait_for(lambda: sim.first_stop_after(asked), 10.0, "a stop command on shutdown")

        # never beyond the limits, in any command
        assert len(sim.commands) > 50 and not sim.sideways
        for _, v, w in sim.commands:
            assert 0.0 <= v <= LAW["max_linear_speed"] + 1e-9, v
            assert abs(w) <= LAW["max_angular_speed"] + 1e-9, w
        assert max(v for _, v, _ in sim.commands) == pytest.approx(LAW["max_linear_speed"])
    finally:
        if node.alive():
            node.stop()
