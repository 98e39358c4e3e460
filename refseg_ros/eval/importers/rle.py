"""COCO run-length masks (``{"size": [h, w], "counts": str | list}``), as MeViS's
``mask_dict.json`` stores them, without pycocotools.

Runs alternate background/foreground starting with background, over the pixels in
column-major order; a string ``counts`` is the COCO compressed form (6-bit characters
offset by 48, 5 data bits, continuation bit 0x20, sign bit 0x10, each count from the
third on stored as its difference to the count two before).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _counts_from_string(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        while True:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            p += 1
            k += 1
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << (5 * k)
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _counts_to_string(counts: list[int]) -> str:
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
            if not more:
                break
    return "".join(out)


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """H x W bool mask; ValueError when the runs do not cover exactly h * w pixels."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = _counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if sum(runs) != h * w or any(r < 0 for r in runs):
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, the mask has {h}x{w}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(w, h).T.copy()


def encode(mask: np.ndarray) -> dict[str, Any]:
    """The compressed RLE of a 2-D mask (the inverse of :func:`decode`)."""
    m = np.asarray(mask, bool)
    flat = m.T.reshape(-1)
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": _counts_to_string(runs)}
