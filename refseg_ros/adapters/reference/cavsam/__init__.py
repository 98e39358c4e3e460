"""CAV-SAM on the engine's SAM2 (Wang et al., ICCV 2025, "Correspondence as Video"): a
reference and the frame searched read as two frames of a pseudo video.

| module | one idea |
|---|---|
| `augment.py` | augmented views of a reference example (photometric and affine) |
| `ttga.py` | test-time geometric alignment: a per-target tuned copy of SAM2's neck (`TtgaTracker`) |
| `dbst_inversion.py` | deterministic DDIM inversion and sampling |
| `dbst_lora.py` | per-image LoRA on the UNet's attention, and its blend |
| `dbst.py` | `TransitionGenerator`: diffusion transition frames from the reference to a frame |
| `dbst_proposer.py` | `TransitionService` / `DbstProposer`: transition frames as conditioning memories |
"""

from .dbst import TransitionConfig, TransitionGenerator, load_pipeline
from .dbst_proposer import DbstProposer, TransitionService
from .ttga import TtgaTracker, TtgaTuner, start_ttga

__all__ = ["DbstProposer", "TransitionConfig", "TransitionGenerator", "TransitionService", "TtgaTracker",
           "TtgaTuner", "load_pipeline", "start_ttga"]
