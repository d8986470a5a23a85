"""Robots: promptcam's tracks as ROS 2 messages (``ros2``) and MCAP recordings (``mcap_out``)."""
