"""Fixtures of the node tests (test/ros/): the processes a test starts, a listener on the
first camera's results, and a tiny OWLv2 detector folder for the caption tests.

A module that needs another listener defines a ``listener`` fixture of its own, which
takes precedence over this one.
"""

from __future__ import annotations

import pytest

from support.node_harness import CAM0_OBJECTS, Listener
from support.tiny_models import save_owlv2


@pytest.fixture
def procs():
    """A list the test appends the processes it starts to (support.processes.Process);
    they are stopped in reverse order when the test ends."""
    started = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def listener(request):
    """A Listener named after the test module, recording the node's status events and the
    object arrays of the camera CAM0 (on CAM0_OBJECTS); closed when the test ends."""
    from refseg_ros.msg import SegmentedObjectArray

    listener = Listener(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_") + "_listener")
    listener.listen_status()
    listener.listen(CAM0_OBJECTS, SegmentedObjectArray)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def owl_folder(tmp_path_factory):
    """A tiny random-weight OWLv2 saved with its processor (support.tiny_models.save_owlv2),
    once per module."""
    return save_owlv2(tmp_path_factory.mktemp("owl") / "owlv2")
