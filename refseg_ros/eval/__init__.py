"""Offline evaluation: rosbag I/O, synthetic scenes, metrics, reports and the CLI.

Nothing here imports rclpy at import time, so evaluation runs without a ROS install;
only the bag player (``refseg_ros.eval.player``) needs rclpy, and imports it when run.
"""
