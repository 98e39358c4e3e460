"""CameraReports -> diagnostic_msgs/DiagnosticArray, one status per camera plus the model."""

from __future__ import annotations

from typing import Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from ..runtime.stats import CameraReport

STALE_INPUT_SECONDS = 5.0


def _fmt(value: Optional[float], scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def camera_status(node_name: str, rep: CameraReport, mode: str, targets: int) -> DiagnosticStatus:
    """One camera's health: rates, drops, latency and step time."""
    level, message = DiagnosticStatus.OK, "processing"
    if rep.received == 0:
        level, message = DiagnosticStatus.WARN, "no frame received yet"
    elif rep.seconds_since_input is not None and rep.seconds_since_input > STALE_INPUT_SECONDS:
        level, message = DiagnosticStatus.WARN, f"no frame for {rep.seconds_since_input:.0f} s"
    elif rep.last_error and rep.processed == 0:
        level, message = DiagnosticStatus.ERROR, f"every frame rejected: {rep.last_error}"
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
