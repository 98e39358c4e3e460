"""The DINOv2 prototype prior of a reference target: where in a frame its examples'
features recur, used to find the target when it is not tracked and to notice when a
tracked one is gone.

| module | one idea |
|---|---|
| `dino_encoder.py` | `DinoEncoder`: DINOv2 patch features of whole frames; `load_dinov2` from a folder |
| `reference_prior.py` | the examples' foreground / background prototypes and a frame's prior maps |
| `peaks.py` | candidate clicks: the k highest separated maxima of a prior map |
| `candidates.py` | the candidates' masks in one batched SAM2 decode, and their scores |
| `gate.py` | M-of-K acceptance of a candidate, M-of-K absence of a tracked target |
| `acquisition.py` | `Acquirer`: the slow phase (prior + peaks) and the fast one (decode, score, gate) |
| `acquisition_proposer.py` | `AcquisitionService` / `ReferenceAcquisition`: the engine's `Proposer` |
"""

from .acquisition import Acquirer, AcquirerConfig
from .acquisition_proposer import AcquisitionService, ReferenceAcquisition
from .dino_encoder import DinoEncoder, load_dinov2

__all__ = ["Acquirer", "AcquirerConfig", "AcquisitionService", "DinoEncoder", "ReferenceAcquisition",
           "load_dinov2"]
