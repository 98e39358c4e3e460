"""refseg-follow's live parameters and TwistStamped output, over DDS with the node in its
own process: a limit set through the set_parameters service applies to the next command,
a read-only parameter and a value out of range are refused with the reason; deactivate
stops the robot once and activate resumes; SIGINT stops it before the process exits."""

from __future__ import annotations

import math
import time

from support.node_harness import Listener, start_follow

NODE = "/refseg_follow"


def objects(listener: Listener):
    """An array with target 3 ("box") tracked 4 m ahead and 0.5 m to the right, stamped now."""
    from refseg_ros.msg import SegmentedObject, SegmentedObjectArray

    msg = SegmentedObjectArray()
    msg.header.stamp = listener.node.get_clock().now().to_msg()
    msg.header.frame_id = "camera_optical_frame"
    o = SegmentedObject(target_id=3, label="box", state=SegmentedObject.STATE_TRACKED, has_bearing=True,
                        has_position=True, area=100)
    n = math.hypot(0.5, 4.0)
    o.bearing.x, o.bearing.z = 0.5 / n, 4.0 / n
    o.position.x, o.position.z = 0.5, 4.0
    msg.objects = [o, SegmentedObject(target_id=5, label="cup", state=SegmentedObject.STATE_LOST)]
    return msg


def set_parameters(listener: Listener, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                for k, v in values.items()])
    return listener.call(SetParameters, f"{NODE}/set_parameters", request).results


def change_state(listener: Listener, transition: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition))
    return listener.call(ChangeState, f"{NODE}/change_state", request).success


def test_live_limits_read_only_and_ranges_over_dds(tmp_path):
    from geometry_msgs.msg import Twist, TwistStamped
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.srv import DescribeParameters

    node = start_follow(tmp_path, {"stamped": True, "target_label": "box", "base_frame_id": "base_footprint",
                                   "max_linear_speed": 0.5})
    listener = Listener("follow_params")
    try:
        commands = []
        listener.node.create_subscription(TwistStamped, "/cmd_vel", lambda m: commands.append(m), 10)
        pub = listener.publisher("/camera/image_raw/refseg/objects", type(objects(listener)))
        listener.wait_for(lambda: pub.get_subscription_count() > 0, 60, "the node subscribing", node)

        def drive(until, seconds: float = 20.0) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not until():
                pub.publish(objects(listener))
                time.sleep(0.1)
            assert until(), f"no such command in {seconds} s: {[c.twist.linear.x for c in commands[-5:]]}\n" \
                            f"{node.output()[-3000:]}"

        drive(lambda: commands and commands[-1].twist.linear.x > 0)
        first = commands[-1]
        assert first.header.frame_id == "base_footprint" and first.header.stamp.sec > 0
        assert first.twist.linear.x == 0.5 and first.twist.angular.z < 0  # capped; target on the right

        descriptors = listener.call(DescribeParameters, f"{NODE}/describe_parameters", DescribeParameters.Request(
            names=["objects_topic", "max_linear_speed", "target_id"])).descriptors
        assert descriptors[0].read_only and not descriptors[1].read_only
        assert descriptors[1].floating_point_range[0].to_value == 20.0
        assert descriptors[2].integer_range[0].from_value == 0

        accepted, = set_parameters(listener, max_linear_speed=0.2)
        assert accepted.successful, accepted.reason
        since = len(commands)
        drive(lambda: len(commands) > since + 3)
        assert all(c.twist.linear.x == 0.2 for c in commands[since + 1:]), [c.twist.linear.x for c in commands]

        read_only, = set_parameters(listener, objects_topic="other/objects")
        assert not read_only.successful and "read-only" in read_only.reason, read_only.reason
        out_of_range, = set_parameters(listener, max_angular_speed=-1.0)
        assert not out_of_range.successful and "max_angular_speed" in out_of_range.reason, out_of_range.reason
        wrong_type, = set_parameters(listener, stop_distance="near")
        assert not wrong_type.successful

        since = len(commands)
        drive(lambda: len(commands) > since + 3)  # still following, with the accepted limit
        assert all(c.twist.linear.x == 0.2 for c in commands[since:])
        assert 0 < abs(commands[-1].twist.angular.z) <= 1.0

        # deactivate: one zero command, then nothing while inactive; activate: it follows again
        assert change_state(listener, Transition.TRANSITION_DEACTIVATE)
        listener.wait_for(lambda: commands[-1].twist.linear.x == 0.0, 10, "a stop on deactivate", node)
        since = len(commands)
        for _ in range(10):
            pub.publish(objects(listener))
            time.sleep(0.1)
        assert len(commands) == since and commands[-1].twist == Twist(), "commands while inactive"
        assert change_state(listener, Transition.TRANSITION_ACTIVATE)
        drive(lambda: len(commands) > since and commands[-1].twist.linear.x == 0.2)

        # SIGINT while moving: one zero command before the process exits
        assert node.stop(grace=15.0) == 0, node.output()[-3000:]
        listener.wait_for(lambda: commands[-1].twist == Twist(), 10, "a stop on SIGINT")
    finally:
        listener.close()
        node.stop()
