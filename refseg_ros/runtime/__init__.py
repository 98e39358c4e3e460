"""ROS-free pieces of the node's runtime: frame scheduling, statistics, rendering, targets.

They are kept apart from refseg_ros.ros so that they can be tested and benchmarked without
DDS, and so that the ROS layer stays a thin translation between messages and these.
"""
