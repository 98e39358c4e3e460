"""CameraReports -> diagnostic_msgs/DiagnosticArray, one status per camera plus the model."""

from __future__ import annotations

from typing import Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from ..runtime.stats import CameraReport

STALE_INPUT_SECONDS = 5.0
# After this long with publishers on the topic and no frame, frames are not getting through.
NO_FRAME_SECONDS = 5.0
MAX_SAMPLE_BYTES = 16 * 2**20  # config/fastdds_local.xml's shared-memory segment


def missing_frames(rep: CameraReport, publishers: int) -> Optional[str]:
    """Why a camera with publishers has delivered no frame, or None while that is not the case."""
    if rep.received or not publishers or rep.seconds_active < NO_FRAME_SECONDS:
        return None
    return (f"{publishers} publisher(s) on the topic but no frame arrived in {rep.seconds_active:.0f} s; "
            f"likely causes: incompatible QoS (a reliable subscription to a best-effort camera, see "
            f"qos_reliability), frames larger than the transport carries ({MAX_SAMPLE_BYTES // 2**20} MB "
            f"shared-memory segments in config/fastdds_local.xml; a 4000x3000 rgb8 frame is 36 MB: use "
            f"compressed images or a larger segment on both ends), or a camera process started without "
            f"that profile (docs/NODE.md)")


def _fmt(value: Optional[float], scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def camera_status(node_name: str, rep: CameraReport, mode: str, targets: int,
                  publishers: int = 0) -> DiagnosticStatus:
    """One camera's health: rates, drops, latency and step time; `publishers` matched on
    its topic. WARN when frames do not arrive, stop arriving, or carry an implausible
    header; ERROR when every frame is rejected."""
    level, message = DiagnosticStatus.OK, "processing"
    if rep.received == 0:
        level = DiagnosticStatus.WARN
        message = missing_frames(rep, publishers) or "no frame received yet"
    elif rep.seconds_since_input is not None and rep.seconds_since_input > STALE_INPUT_SECONDS:
        level, message = DiagnosticStatus.WARN, f"no frame for {rep.seconds_since_input:.0f} s"
    elif rep.last_error and rep.processed == 0:
        level, message = DiagnosticStatus.ERROR, f"every frame rejected: {rep.last_error}"
    elif rep.header_problem:
        level, message = DiagnosticStatus.WARN, f"implausible header: {rep.header_problem}"
    values = {
        "mode": mode,
        "targets": str(targets),
        "input_rate_hz": _fmt(rep.input_rate, digits=2),
        "processed_rate_hz": _fmt(rep.processed_rate, digits=2),
        "frames_received": str(rep.received),
        "frames_processed": str(rep.processed),
        "frames_dropped": str(rep.dropped),
        "frames_rejected": str(rep.rejected),
        "overlays_published": str(rep.overlays),
        "latency_ms": _fmt(rep.latency_last, 1e3),
        "latency_mean_ms": _fmt(rep.latency_mean, 1e3),
        "latency_max_ms": _fmt(rep.latency_max, 1e3),
        "step_time_ms": _fmt(rep.step_mean, 1e3),
        "ros_overhead_ms": _fmt(rep.overhead_mean, 1e3),
        "last_rejection": rep.last_error or "none",
        "header_problem": rep.header_problem or "none",
        "publishers": str(publishers),
    }
    return DiagnosticStatus(
        level=level, name=f"{node_name}: camera {rep.camera}", message=message,
        hardware_id=rep.camera, values=[KeyValue(key=k, value=v) for k, v in values.items()])


def model_status(node_name: str, model: str, device: str, image_size: int, random_weights: bool,
                 retained_bytes: int) -> DiagnosticStatus:
    """The shared model: a WARN while it runs on random weights (masks mean nothing then)."""
    level, message = DiagnosticStatus.OK, "model loaded"
    if random_weights:
        level, message = DiagnosticStatus.WARN, "random weights (no checkpoint): masks are meaningless"
    values = {"model": model, "device": device, "image_size": str(image_size),
              "retained_memory_mb": f"{retained_bytes / 2**20:.1f}"}
    return DiagnosticStatus(level=level, name=f"{node_name}: model", message=message,
                            hardware_id=device, values=[KeyValue(key=k, value=v) for k, v in values.items()])


def diagnostic_array(header: Header, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    return DiagnosticArray(header=header, status=list(statuses))
