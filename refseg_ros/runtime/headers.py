"""Plausibility of a camera message's header: its stamp and its frame id.

A result copies its source header, so a wrong header is passed on silently unless it is
caught here: a stamp of 0 (a driver that never sets it), a stamp far from the receiving
clock (two machines whose clocks disagree, or a bag replayed without use_sim_time), or an
empty frame id (no TF frame to put the result in). Such frames are still segmented; the
node says why once per camera and reports latency as unknown instead of absurd.
"""

from __future__ import annotations

from typing import Optional

# How far a stamp may lie from the clock when the message arrives, in seconds: DDS
# delivers in milliseconds, so this only catches clocks that disagree.
DEFAULT_STAMP_TOLERANCE = 5.0
HEADER_PROBLEMS = ("zero_stamp", "stamp_skew", "empty_frame_id")


def header_problems(stamp: float, frame_id: str, received: float,
                    tolerance: float = DEFAULT_STAMP_TOLERANCE) -> dict[str, str]:
    """What is implausible about a header: {kind: reason}, empty when nothing is.

    Kinds: HEADER_PROBLEMS.

    Args:
        stamp: header.stamp in seconds.
        frame_id: header.frame_id.
        received: the node's clock when the message arrived, in seconds (ROS time: sim
            time under use_sim_time).
        tolerance: largest plausible distance between stamp and clock, seconds.
    """
    problems = {}
    if stamp == 0.0:
        problems["zero_stamp"] = "header.stamp is 0 (the driver does not stamp its frames)"
    elif abs(received - stamp) > tolerance:
        way = "ahead of" if stamp > received else "behind"
        problems["stamp_skew"] = (f"header.stamp is {abs(received - stamp):.1f} s {way} this node's clock "
                                  f"(clocks of different machines, or use_sim_time unset for a bag)")
    if not frame_id:
        problems["empty_frame_id"] = "header.frame_id is empty (results cannot be placed in a TF frame)"
    return problems


def plausible_latency(stamp: float, received: float, now: float,
                      tolerance: float = DEFAULT_STAMP_TOLERANCE) -> Optional[float]:
    """Seconds from the stamp to `now`, or None when the stamp is not plausible at arrival."""
    if stamp == 0.0 or abs(received - stamp) > tolerance:
        return None
    return now - stamp
