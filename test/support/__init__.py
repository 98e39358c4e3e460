"""Helpers shared by the test suite, one module each, imported as ``support.<module>``.

pyproject's pytest settings put test/ on sys.path (``pythonpath``) and import the test
files with ``--import-mode=importlib``, so test files in different folders may share a
name, and every test imports its helpers from here:

- ``node_harness``: the node as a real process, a listener in the test process, the
  synthetic scene, parameter and service helpers;
- ``camera``, ``depth_camera``: camera processes (``python -m support.camera`` from test/,
  started by ``node_harness.start_camera`` / ``start_rgbd``);
- ``dds_peer``: publisher, subscriber, server and client processes for the message tests;
- ``distro_layout``: python with rclpy laid out as an older ROS 2 distribution;
- ``standins``: the vision_msgs / tf2_msgs stand-ins (``standin_msgs/``), built once;
- ``hub_server``: a Hugging Face hub and file server on 127.0.0.1;
- ``tiny_models``: tiny random-weight models built from configs;
- ``clips``: small synthetic clips with exact masks;
- ``shared_fixtures``: where the numerical parity fixtures live.
"""

from __future__ import annotations

from pathlib import Path

TEST_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TEST_DIR.parent


def pyproject() -> dict:
    """pyproject.toml, parsed (tomllib on Python 3.11+; on 3.10 the same parser as pip ships it)."""
    try:
        import tomllib  # novermin (Python 3.11)
    except ModuleNotFoundError:
        from pip._vendor import tomli as tomllib
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
