"""The parity gate every backend build passes before it is used: its features against the
torch encoder's on a fixed input.

A runtime that loads a model is not thereby right: OpenVINO on a CPU with bf16 units runs
an fp32 model in bf16 unless told otherwise (max |diff| ~0.03 on hiera_t at 256, see
docs/ENGINE.md), and other converters have produced plausible-looking wrong features. So
a build is compared with `TorchEncoder` on `parity_input` (two images, which also checks
the batch axis), every tensor of the FrameFeatures (each level's tokens and positional
encodings, each trunk stage map): the largest |difference| must be at most
`TOLERANCES[precision]` times the largest |value| of the torch tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..features import FrameFeatures

# Largest |ours - torch| allowed, relative to the torch tensor's largest |value|. fp32:
# the CPU runtimes measured about 1e-6 here (docs/ENGINE.md); bf16 (OpenVINO on this CPU)
# measured about 1e-2 on hiera_t with random weights; fp16 keeps 3 more mantissa bits
# than bf16. tf32: TensorRT's fp32 engines, whose matrix products TensorRT runs in TF32
# on GPUs that have it (10 mantissa bits, as fp16), unless the ONNX Runtime build says otherwise.
TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 3e-2, "bf16": 3e-2}
PARITY_BATCH = 2  # images of the parity input: the batch axis is checked too
PARITY_SEED = 20240917


def parity_input(image_size: int, device: torch.device | str = "cpu", batch: int = PARITY_BATCH) -> torch.Tensor:
    """The fixed parity input: (batch, 3, S, S) float32 standard normal values (seeded),
    about the spread of normalised images."""
    generator = torch.Generator().manual_seed(PARITY_SEED)
    return torch.randn(batch, 3, image_size, image_size, generator=generator).to(device)


@dataclass
class Parity:
    """The comparison of one build with torch.

    worst: per tensor name ("level0", "pos0", "trunk0", ...), (max |diff|, max |torch|);
    tolerance: the relative bound used; ok: every tensor within it.
    """

    precision: str
    tolerance: float
    worst: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """The largest max|diff| / max|torch| over the tensors."""
        return max((d / max(r, 1e-12) for d, r in self.worst.values()), default=0.0)

    @property
    def ok(self) -> bool:
        return self.ratio <= self.tolerance

    def summary(self) -> str:
        """One line: the worst tensor, its difference and the bound."""
        if not self.worst:
            return "nothing compared"
        name = max(self.worst, key=lambda k: self.worst[k][0] / max(self.worst[k][1], 1e-12))
        diff, ref = self.worst[name]
        return (f"max |diff| {diff:.3g} on {name} (largest |value| {ref:.3g}): {self.ratio:.3g} of it, "
                f"bound {self.tolerance:g} for {self.precision}")

    def as_dict(self) -> dict[str, Any]:
        """JSON values for the cache manifest."""
        return {"precision": self.precision, "tolerance": self.tolerance, "ratio": self.ratio,
                "max_abs_diff": {k: d for k, (d, _) in self.worst.items()}}


def compare(reference: list[FrameFeatures], candidate: list[FrameFeatures], precision: str) -> Parity:
    """Compare a backend's features of the parity input with torch's.

    Raises ValueError when the two disagree in number of images, levels or shapes (a
    build that lost the batch axis, say).
    """
    parity = Parity(precision, TOLERANCES[precision])
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} images encoded for {len(reference)}")
    for ref, ours in zip(reference, candidate):
        pairs = [(f"level{i}", a, b) for i, (a, b) in enumerate(zip(ref.vision_feats, ours.vision_feats))]
        pairs += [(f"pos{i}", a, b) for i, (a, b) in enumerate(zip(ref.vision_pos, ours.vision_pos))]
        pairs += [(f"trunk{i}", a, b) for i, (a, b) in enumerate(zip(ref.trunk or [], ours.trunk or []))]
        if len(ref.vision_feats) != len(ours.vision_feats) or len(ref.trunk or []) != len(ours.trunk or []):
            raise ValueError("the backend's features have another number of levels or trunk maps")
        for name, a, b in pairs:
            if a.shape != b.shape:
                raise ValueError(f"{name}: shape {tuple(b.shape)}, torch's {tuple(a.shape)}")
            a, b = a.float(), b.float().to(a.device)
            diff = float((a - b).abs().max())
            if diff != diff:  # NaN
                diff = float("inf")
            old = parity.worst.get(name, (0.0, 0.0))
            parity.worst[name] = (max(old[0], diff), max(old[1], float(a.abs().max())))
    return parity
