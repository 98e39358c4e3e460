"""How many CPU threads the model may use, so that frame intake always has a core.

PyTorch's CPU kernels run on an OpenMP pool of intra-op threads, one per core by default.
OpenMP threads meet at a barrier after every parallel region; when another thread of the
process (a DDS receive thread, the executor taking a camera message) is scheduled on one
of their cores, the others wait at the barrier until it gets the core back. With one
intra-op thread per core and a 30 Hz camera, that made each engine step 4x slower on an
idle 2-core machine and up to 20x slower on a busy one (docs/BENCHMARKS.md, "Model step
under camera load"). Leaving cores for intake removes the wait: the model then has fewer
threads, but none of them is preempted in the middle of a parallel region.

This module is ROS-free: the node and the evaluation's offline runner both use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Cores left to everything that is not the model: DDS receive threads, the executor that
# takes camera messages, publishing results. One is enough for several 30 Hz cameras
# with serialized intake (bench/ros_load.py).
INTAKE_CORES = 1


@dataclass(frozen=True)
class ThreadPlan:
    """The thread counts for torch in this process.

    intra_op: threads of one CPU kernel (torch.set_num_threads).
    inter_op: threads running independent ops side by side (torch.set_num_interop_threads);
        SAM2's inference graph is one chain, so one is enough.
    cores: the cores this process may run on (its CPU affinity).
    reason: how intra_op was chosen, for the log.
    """

    intra_op: int
    inter_op: int
    cores: int
    reason: str


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; os.cpu_count() where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_threads(requested: int = 0, cores: int | None = None, reserve: int = INTAKE_CORES) -> ThreadPlan:
    """Choose torch's thread counts.

    Args:
        requested: intra-op threads wanted; 0 derives them from the machine:
            ``max(1, cores - reserve)``.
        cores: cores available (default: this process's CPU affinity).
        reserve: cores left for intake when ``requested`` is 0.

    Raises:
        ValueError: ``requested`` is negative.
    """
    cores = available_cores() if cores is None else max(1, int(cores))
    requested = int(requested)
    if requested < 0:
        raise ValueError(f"compute_threads must be 0 (auto) or a positive count, got {requested}")
    if requested:
        return ThreadPlan(requested, 1, cores, f"compute_threads {requested} as configured ({cores} cores)")
    intra = max(1, cores - reserve)
    return ThreadPlan(intra, 1, cores, f"{intra} of {cores} cores ({cores - intra} left for intake)")


def apply_threads(plan: ThreadPlan) -> ThreadPlan:
    """Set torch's thread counts for this process and return the plan in force.

    The inter-op count can only be set before torch runs its first parallel work; when it
    is too late for that, the process keeps the count it has and the returned plan says so.
    """
    import torch

    torch.set_num_threads(plan.intra_op)
    inter = plan.inter_op
    if torch.get_num_interop_threads() != inter:
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError:  # already started: keep what this process has
            inter = torch.get_num_interop_threads()
    return ThreadPlan(torch.get_num_threads(), inter, plan.cores, plan.reason)
