"""Acquisition for reference targets, configured once per node; ROS-free.

With a DINOv2 folder (`dino_model`), every reference target gets a proposer
(`adapters.reference.prior.acquisition_proposer`): while it is not tracked, its prior looks
for it beside tracking and seeds the tracker when found; no mask is published for it
until then. Without one, reference targets are tracked from their pinned examples
alone (the plain correspondence-as-video baseline), and the node says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .parameters import check_values, parameter


@dataclass
class AcquisitionSettings:
    """dino_model: a transformers Dinov2Model folder or hub id (e.g. facebook/dinov2-base,
    from the hub cache: `refseg-weights --for reference`); threshold: the raw candidate score
    a frame needs; m of k: looked-at frames above it before a seed; interval: seconds
    between two proposals for one target; candidates: peaks decoded per proposal;
    input_size: DINOv2's input side in pixels (a multiple of its patch; 224 keeps a
    ViT-B/14 proposal at about 0.4 of a hiera_t step at 512, 518 costs 2.4 steps:
    docs/BENCHMARKS.md, "Acquisition"); 0: the model's own size; watch: the prior also
    looks at a tracked target's frames (at the same interval) and declares it lost when
    M of the last K looks find nothing like it. The node parameters of the same names,
    with their defaults and ranges (runtime.parameters.PARAMETERS)."""

    dino_model: str = parameter("dino_model")
    acquisition_threshold: float = parameter("acquisition_threshold")
    acquisition_m: int = parameter("acquisition_m")
    acquisition_k: int = parameter("acquisition_k")
    acquisition_interval: float = parameter("acquisition_interval")
    acquisition_candidates: int = parameter("acquisition_candidates")
    acquisition_input_size: int = parameter("acquisition_input_size")
    acquisition_watch: bool = parameter("acquisition_watch")

    def check(self) -> None:
        """Each value against its parameter's range, then m <= k.

        Raises:
            ValueError: naming the parameter.
        """
        check_values(self)
        if not 1 <= self.acquisition_m <= self.acquisition_k:
            raise ValueError("parameters acquisition_m and acquisition_k must satisfy 1 <= m <= k, got "
                             f"{self.acquisition_m} and {self.acquisition_k}")


def open_acquisition(settings: AcquisitionSettings, device: torch.device, synchronous: bool = False,
                     dino: Optional[torch.nn.Module] = None) -> tuple[Optional[object], str]:
    """An `AcquisitionService`, or None and why reference targets go without one.
    Loading errors are returned as the reason, never raised. `synchronous`: wait for each
    proposal (offline evaluation). `dino`: a `Dinov2Model` already loaded (FSSAM's own),
    used when `dino_model` is empty, so that FSSAM targets get the gate by default."""
    if not settings.dino_model and dino is None:
        return None, ("reference targets without acquisition (set dino_model to a DINOv2 folder or hub id, "
                      "e.g. facebook/dinov2-base after `refseg-weights --for reference`, to look for them "
                      "while they are not tracked)")
    try:
        from ..adapters.reference.prior.acquisition import AcquirerConfig
        from ..adapters.reference.prior.acquisition_proposer import AcquisitionService
        from ..adapters.reference.prior.dino_encoder import DinoEncoder

        config = AcquirerConfig(candidates=settings.acquisition_candidates,
                                threshold=settings.acquisition_threshold, m=settings.acquisition_m,
                                window=settings.acquisition_k)
        from ..models import local_model

        source = local_model(settings.dino_model, "dino_model") if settings.dino_model else dino
        encoder = DinoEncoder(source, input_size=settings.acquisition_input_size or None, device=device)
        service = AcquisitionService(encoder, config,
                                     settings.acquisition_interval, synchronous=synchronous,
                                     watch=settings.acquisition_watch)
    except Exception as exc:  # a missing folder, weights of another model
        return None, (f"acquisition could not be loaded from dino_model {settings.dino_model or 'FSSAM'} "
                      f"({type(exc).__name__}: {exc}); reference targets go without it")
    watched = " and watched while tracked" if settings.acquisition_watch else ""
    origin = f"from {settings.dino_model}" if settings.dino_model else "(FSSAM's own)"
    return service, f"reference targets looked for by DINOv2 {origin} while not tracked{watched}"


def update_acquisition(service: Any, settings: AcquisitionSettings) -> None:
    """Give a running `AcquisitionService` (from `open_acquisition`) the live parameters
    of `settings`: acquisition_threshold, acquisition_m, acquisition_k and
    acquisition_interval (seconds), used from every reference target's next decision on.
    Raises ValueError for values the gate refuses (`AcquisitionSettings.check`)."""
    service.update(threshold=settings.acquisition_threshold, m=settings.acquisition_m,
                   window=settings.acquisition_k, min_interval_s=settings.acquisition_interval)
