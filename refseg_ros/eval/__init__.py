"""Evaluation: rosbag I/O, synthetic scenes, metrics, reports and the CLI; offline, and
live through the node.

Nothing here imports rclpy at import time, so evaluation runs without a ROS install;
only the bag player (``refseg_ros.eval.player``) and the live evaluation's client of the
node (``refseg_ros.eval.eval_client``, the one module here that uses ``refseg_ros.ros``)
need rclpy, and are imported when used.
"""
