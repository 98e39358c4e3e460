"""ROS-free rules behind live mode under load: the model's thread plan, header
plausibility, and the diagnosis of a camera whose frames do not arrive."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refseg_ros.runtime.headers import header_problems, plausible_latency
from refseg_ros.runtime.stats import CameraStats
from refseg_ros.runtime.threads import plan_threads


@pytest.mark.parametrize("cores,requested,intra", [(2, 0, 1), (16, 0, 15), (1, 0, 1), (2, 2, 2), (8, 3, 3)])
def test_thread_plan_leaves_a_core_for_intake(cores, requested, intra):
    plan = plan_threads(requested, cores=cores)
    assert (plan.intra_op, plan.inter_op, plan.cores) == (intra, 1, cores)
    assert str(cores) in plan.reason


def test_thread_plan_refuses_a_negative_count():
    with pytest.raises(ValueError, match="compute_threads"):
        plan_threads(-1, cores=4)


def test_apply_threads_sets_torch_in_a_fresh_process():
    code = ("import torch; from refseg_ros.runtime.threads import apply_threads, plan_threads; "
            "p = apply_threads(plan_threads(0, cores=3)); "
            "print(p.intra_op, p.inter_op, torch.get_num_threads(), torch.get_num_interop_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "1", "2", "1"]


def test_plausible_headers_say_nothing():
    assert header_problems(100.0, "cam", 100.02) == {}
    assert plausible_latency(100.0, 100.02, 100.5) == pytest.approx(0.5)


@pytest.mark.parametrize("stamp,frame_id,kinds,words", [
    (0.0, "cam", {"zero_stamp"}, "stamp is 0"),
    (100.0 + 3600, "cam", {"stamp_skew"}, "3600.0 s ahead of"),
    (100.0 - 60, "cam", {"stamp_skew"}, "60.0 s behind"),
    (100.0, "", {"empty_frame_id"}, "frame_id is empty"),
    (0.0, "", {"zero_stamp", "empty_frame_id"}, "stamp is 0"),
])
def test_implausible_headers_are_named(stamp, frame_id, kinds, words):
    problems = header_problems(stamp, frame_id, 100.0, tolerance=5.0)
    assert set(problems) == kinds
    assert words in " ".join(problems.values())


def test_latency_of_an_implausible_stamp_is_unknown_not_absurd():
    assert plausible_latency(0.0, 1.7e9, 1.7e9 + 0.2) is None
    assert plausible_latency(1.7e9 - 3600, 1.7e9, 1.7e9 + 0.2) is None
    stats = CameraStats("cam")
    stats.on_input()
    stats.on_processed(None, 0.1, 0.001)
    report = stats.report()
    assert report.latency_last is None and report.latency_mean is None and report.processed == 1


def test_missing_frames_are_diagnosed_only_with_publishers_and_time():
    from refseg_ros.ros.diagnostics import NO_FRAME_SECONDS, camera_status, missing_frames

    stats = CameraStats("cam")
    report = stats.report()
    assert missing_frames(report, publishers=1) is None  # too early to tell
    stats._started -= NO_FRAME_SECONDS + 1
    report = stats.report()
    assert missing_frames(report, publishers=0) is None  # nobody publishes: nothing is lost
    reason = missing_frames(report, publishers=2)
    assert "2 publisher(s)" in reason and "QoS" in reason and "MB" in reason
    status = camera_status("refseg", report, "live", 1, publishers=2)
    assert status.level == status.WARN and status.message == reason
    stats.on_input()
    assert missing_frames(stats.report(), publishers=2) is None


def test_header_problem_makes_diagnostics_warn():
    from refseg_ros.ros.diagnostics import camera_status

    stats = CameraStats("cam")
    stats.on_input()
    stats.on_processed(0.1, 0.1, 0.001)
    from diagnostic_msgs.msg import DiagnosticStatus

    assert camera_status("refseg", stats.report(), "live", 1, 1).level == DiagnosticStatus.OK
    stats.on_header("header.stamp is 0")
    status = camera_status("refseg", stats.report(), "live", 1, 1)
    assert status.level == status.WARN and "implausible header: header.stamp is 0" in status.message
