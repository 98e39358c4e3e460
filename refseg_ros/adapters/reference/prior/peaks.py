"""Candidate positions on a similarity grid: the k highest separated local maxima.

A position is a candidate when it is the maximum of its (2 d + 1) x (2 d + 1)
neighbourhood (d = min_distance, in grid cells) and its value is finite and at least
`min_score`; candidates are taken best first, each at least d cells (Chebyshev distance)
from those already taken, so a plateau gives one peak, not several. Values are used as
they are (raw), never normalised: a flat low map has low peaks, which the acquisition
then refuses on their score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Peak:
    """A local maximum: its raw value and its grid cell (row, col)."""

    score: float
    row: int
    col: int


def find_peaks(sim: torch.Tensor, k: int, min_distance: int = 1,
               min_score: float = float("-inf")) -> list[Peak]:
    """Up to k separated local maxima of sim (h, w) float, best first (ties: row-major).

    min_distance: d >= 1 grid cells, the non-maximum-suppression radius; min_score:
    peaks below it are dropped (-inf: none). Non-finite values (-inf marks excluded
    cells) never peak. Raises ValueError for k < 1, d < 1 or a map that is not 2-D.
    """
    if sim.ndim != 2:
        raise ValueError(f"a similarity map must be (h, w), got {tuple(sim.shape)}")
    if k < 1 or min_distance < 1:
        raise ValueError(f"need k >= 1 and min_distance >= 1, got k={k}, min_distance={min_distance}")
    values = sim.detach().float().cpu()
    finite = torch.isfinite(values)
    padded = torch.where(finite, values, torch.full_like(values, float("-inf")))
    pooled = F.max_pool2d(padded[None, None], 2 * min_distance + 1, stride=1, padding=min_distance)[0, 0]
    local = finite & (values >= pooled) & (values >= min_score)
    rows, cols = torch.nonzero(local, as_tuple=True)
    scores = values[rows, cols]
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), int(rows[i]), int(cols[i])))
    peaks: list[Peak] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if all(max(abs(r - p.row), abs(c - p.col)) >= min_distance for p in peaks):
            peaks.append(Peak(float(scores[i]), r, c))
            if len(peaks) == k:
                break
    return peaks


def grid_to_frame(peaks: list[Peak], grid_hw: tuple[int, int], frame_hw: tuple[int, int]) -> np.ndarray:
    """Cell centres of `peaks` in frame pixels: (k, 2) float32, x then y.

    The grid spans the whole frame (a square resize), so cell (r, c) of an h x w grid
    has its centre at x = (c + 0.5) W / w, y = (r + 0.5) H / h on an H x W frame.
    """
    h, w = grid_hw
    height, width = frame_hw
    points = np.zeros((len(peaks), 2), dtype=np.float32)
    for i, p in enumerate(peaks):
        points[i] = ((p.col + 0.5) * width / w, (p.row + 0.5) * height / h)
    return points
