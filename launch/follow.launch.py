"""Start the refseg follow controller with ROS 2's launch:

    ros2 launch refseg_ros follow.launch.py [objects_topic:=camera/image_raw/refseg/objects]
        [target_id:=N | target_label:=LABEL] [cmd_vel_topic:=cmd_vel] [stamped:=true]
        [stop_distance:=M] [max_linear_speed:=V] [max_angular_speed:=W]
        [params_file:=follow.yaml] [autostart:=false] [namespace:=robot1] [use_sim_time:=true]

The node is `refseg_follow` of package refseg_ros, the same process `refseg-follow`
starts (refseg_ros.ros.follow_node). Every parameter (docs/NODE.md, "Following a target")
can also come from params_file (node name refseg_follow); an argument given overrides it,
one left empty keeps the node's default.
With autostart:=false the node waits unconfigured for a lifecycle manager.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# launch argument -> (parameter type, description): the parameter of that name, passed
# only when given (the node's own defaults stay the one source of them)
ARGUMENTS = {
    "objects_topic": (str, "the segmenter's objects topic of the camera (default camera/image_raw/refseg/objects)"),
    "target_id": (int, "target id to follow; 0: by target_label, else the newest caption target"),
    "target_label": (str, "label to follow when target_id is 0"),
    "cmd_vel_topic": (str, "velocity command topic (default cmd_vel)"),
    "stamped": (bool, "true: publish geometry_msgs/TwistStamped instead of Twist"),
    "stop_distance": (float, "metres: stop approaching at this range"),
    "max_linear_speed": (float, "m/s"),
    "max_angular_speed": (float, "rad/s"),
}


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _follow(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    parameters = []
    if arg("params_file"):
        parameters.append(arg("params_file"))
    parameters.append({name: ParameterValue(arg(name), value_type=kind)
                       for name, (kind, _) in ARGUMENTS.items() if arg(name)})
    parameters.append({"use_sim_time": _truthy(arg("use_sim_time"))})
    return [Node(package="refseg_ros", executable="refseg_follow", name="refseg_follow",
                 namespace=arg("namespace"), output="screen", parameters=parameters,
                 arguments=[] if _truthy(arg("autostart")) else ["--no-autostart"])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value="", description=f"{text}; empty: the node's default")
          for name, (_, text) in ARGUMENTS.items()],
        DeclareLaunchArgument("params_file", default_value="", description="ros-args parameters file"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure and activate on start"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        OpaqueFunction(function=_follow),
    ])
