"""`refseg-follow`: a lifecycle node that drives a robot towards a segmented target.

    refseg-follow [--no-autostart] --ros-args -p objects_topic:=camera/image_raw/refseg/objects \
        [-p target_id:=N | -p target_label:=LABEL] [-p stamped:=true] ...

Subscribes to the segmenter's objects (`objects_topic`), picks the target to follow
(`target_id`, else the newest object labelled `target_label`, else the newest caption
target, learnt from the segmenter's `list_targets` service), and publishes velocity
commands on `cmd_vel_topic` (geometry_msgs/Twist, or TwistStamped with `stamped`): turn
towards the target's bearing, approach to `stop_distance` when its position is known,
within `max_linear_speed` and `max_angular_speed`. The control law and the stop rules are
refseg_ros.runtime.follow's; a stop is one zero command. Events go to `status_topic`.

Lifecycle (like the segmenter's; by default the process configures and activates itself):
  configure   read parameters, create the command and status publishers and the
              list_targets client.
  activate    subscribe to the objects, start the timeout timer.
  deactivate  stop the robot (one zero command), drop the subscription and timers.
  cleanup / shutdown / error   stop the robot if it moves, drop publishers and the client.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Optional, Sequence

import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from std_msgs.msg import String

from refseg_ros.msg import SegmentedObjectArray
from refseg_ros.srv import ListTargets

from ..runtime.follow import Command, Follower, Sighting, choose_target
from . import follow_params, qos
from .lifecycle import ReleasingNode, spin_lifecycle

NODE_NAME = "refseg_follow"
#: Seconds between checks for a silent objects topic.
TICK_PERIOD = 0.05
#: Seconds: an id not yet listed asks list_targets again, at most this often.
LIST_RETRY = 0.5
#: Seconds after which a list_targets call without an answer is given up.
LIST_CALL_TIMEOUT = 5.0
#: Commands and objects: reliable, only recent ones matter.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class FollowNode(ReleasingNode):
    """Follows one target of the segmenter's objects with velocity commands."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        follow_params.declare(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.options: Optional[follow_params.FollowOptions] = None
        self.follower: Optional[Follower] = None
        self._cmd_pub = None
        self._status_pub = None
        self._list_client = None
        self._objects_sub = None
        self._timers: list = []
        self._caption_ids: set[int] = set()
        self._listed_ids: set[int] = set()
        self._listing = None  # the list_targets call in flight
        self._last_list = -float("inf")
        self._said: tuple[str, Optional[int]] = ("", None)  # (code, target) last put on status
        self._said_waiting = False

    # ================================================================== lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            options, law = follow_params.read(self)
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.options, self.follower = options, Follower(law)
        self._said = (self.follower.code, None)
        self._cmd_pub = self.create_publisher(TwistStamped if options.stamped else Twist,
                                              options.cmd_vel_topic, COMMAND_QOS)
        self._status_pub = self.create_publisher(String, options.status_topic, qos.status_qos())
        self._list_client = self.create_client(ListTargets, options.list_targets_service)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._objects_sub = self.create_subscription(SegmentedObjectArray, self.options.objects_topic,
                                                     self._on_objects, COMMAND_QOS)
        self._timers = [self.create_timer(TICK_PERIOD, self._on_tick)]
        self._status(f"active: following {self._target_rule()} on {self._objects_sub.topic_name}, "
                     f"commands on {self._cmd_pub.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.halt("deactivated")
        self._unsubscribe()
        return super().on_deactivate(state)

    def release(self) -> None:
        """Drop the subscription, timers, publishers and client (a moving robot is stopped first)."""
        self.halt("shutting down")
        self._unsubscribe()
        if self._list_client is not None:
            self.destroy_client(self._list_client)
            self._list_client = None
        self.destroy_publishers("_cmd_pub", "_status_pub")
        self.follower = None

    def _unsubscribe(self) -> None:
        if self._objects_sub is not None:
            self.destroy_subscription(self._objects_sub)
            self._objects_sub = None
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []

    def halt(self, reason: str) -> None:
        """Stop the robot now (one zero command) if it moves, and wait up to 1 s for the
        command to be acknowledged, so that a process about to exit still delivers it."""
        if self.follower is None or self._cmd_pub is None:
            return
        command = self.follower.halt(reason)
        if command is not None:
            self._send(command)
            self._cmd_pub.wait_for_all_acked(Duration(seconds=1.0))
            self._said = (self.follower.code, self._said[1])
            self._status(f"stopped: {reason}")

    # ================================================================= parameters
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        if self.follower is None:  # not configured: the values are read at configure
            return SetParametersResult(successful=True)
        try:
            options, law = follow_params.read(self, changes)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        # Read-only ones cannot change here (rclpy refuses them first): topics stay as they are.
        self.options, self.follower.settings = options, law
        return SetParametersResult(successful=True)

    # ==================================================================== control
    def _on_objects(self, msg: Any) -> None:
        follower, options = self.follower, self.options
        if follower is None:
            return
        now = self._now()
        by_caption = options.target_id == 0 and not options.target_label
        since = now - self._last_list
        if by_caption and (since > options.list_period or (
                since > LIST_RETRY and any(o.target_id not in self._listed_ids for o in msg.objects))):
            self._list_targets(now)
        target = choose_target(((o.target_id, o.label) for o in msg.objects), options.target_id,
                               options.target_label, self._caption_ids)
        if target is None:
            self._apply(follower.halt(f"no target to follow: {self._target_rule()} is not known", "no_target"),
                        None)
            return
        found = next((o for o in msg.objects if o.target_id == target), None)
        sighting = None if found is None else Sighting(
            state=found.state, stamp=_seconds(msg.header.stamp),
            has_bearing=found.has_bearing, bearing=(found.bearing.x, found.bearing.y, found.bearing.z),
            has_position=found.has_position, position=(found.position.x, found.position.y, found.position.z))
        name = f"target {target}" + (f" ({found.label})" if found is not None and found.label else "")
        self._apply(follower.on_sighting(sighting, now, name), target)

    def _on_tick(self) -> None:
        if self.follower is not None:
            self._apply(self.follower.on_tick(self._now()), self._said[1])

    def _apply(self, command: Optional[Command], target: Optional[int]) -> None:
        """Publish `command` (if any) and say on status when what the robot does changed."""
        if command is not None:
            self._send(command)
        follower = self.follower
        if (follower.code, target) != self._said:
            self._said = (follower.code, target)
            self._status(follower.reason, error=follower.code not in ("following", "holding"))

    def _send(self, command: Command) -> None:
        twist = Twist()
        twist.linear.x, twist.angular.z = float(command.linear), float(command.angular)
        if self.options.stamped:
            stamped = TwistStamped(twist=twist)
            stamped.header.stamp = self.get_clock().now().to_msg()
            stamped.header.frame_id = self.options.base_frame_id
            self._cmd_pub.publish(stamped)
        else:
            self._cmd_pub.publish(twist)

    # ============================================================ target choice
    def _list_targets(self, now: float) -> None:
        """Ask the segmenter which targets are captions (one call at a time)."""
        if self._list_client is None or (self._listing is not None and now - self._last_list < LIST_CALL_TIMEOUT):
            return
        if not self._list_client.service_is_ready():
            if not self._said_waiting:
                self._said_waiting = True
                self._status(f"waiting for {self._list_client.srv_name} to learn the caption targets; "
                             f"or set target_id or target_label", error=True)
            return
        self._last_list = now
        self._listing = self._list_client.call_async(ListTargets.Request())
        self._listing.add_done_callback(self._on_listed)

    def _on_listed(self, future: Any) -> None:
        if future is self._listing:
            self._listing = None
        try:
            reply = future.result()
        except Exception as exc:  # the service went away mid-call
            self._status(f"list_targets failed: {exc}", error=True)
            return
        if reply is None or not reply.success:
            self._status(f"list_targets failed: {getattr(reply, 'message', 'no reply')}", error=True)
            return
        self._said_waiting = False
        self._listed_ids = {t.target_id for t in reply.targets}
        self._caption_ids = {t.target_id for t in reply.targets if t.kind == "caption"}

    def _target_rule(self) -> str:
        o = self.options
        if o.target_id:
            return f"target {o.target_id}"
        if o.target_label:
            return f"the newest target labelled {o.target_label!r}"
        return "the newest caption target"

    # =================================================================== helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _status(self, text: str, error: bool = False) -> None:
        if error:  # rclpy's logger wants one severity per call site
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)
        if self._status_pub is not None:
            self._status_pub.publish(String(data=text))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options of refseg-follow (ROS arguments removed)."""
    parser = argparse.ArgumentParser(prog="refseg-follow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-autostart", action="store_true",
                        help="stay unconfigured; wait for lifecycle transitions")
    return parser.parse_args(list(remove_ros_args(list(argv)))[1:])


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the follow node until SIGINT or SIGTERM; the robot is stopped before exit.
    Returns 1 when a parameter is refused or configure/activate fails."""
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv)
    # rclpy's own handlers would shut the context down before a stop could be sent.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        node = FollowNode()
    except Exception as exc:  # an override of the wrong type or out of range
        print(f"refseg-follow: {type(exc).__name__}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    return spin_lifecycle(node, SingleThreadedExecutor(), autostart=not args.no_autostart)


if __name__ == "__main__":
    sys.exit(main())
