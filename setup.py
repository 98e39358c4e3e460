"""The pip entry of refseg_ros: `pip install .` (or `pip install -e .`) runs this file.

Everything pip needs (name, version, dependencies, console scripts, packages, package
data) is declared once, in pyproject.toml; setuptools reads it from there, so this file
passes nothing to setup() and must not: a keyword given here as well would be a second
source of truth (setuptools refuses some of them and silently prefers others).

The ROS 2 build does not use this file. package.xml declares the build type
ament_cmake, which colcon identifies before it looks for a setup.py, and CMakeLists.txt
installs the Python package beside the generated messages (docs/BUILD.md).
"""

from setuptools import setup

setup()
