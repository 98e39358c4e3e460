"""Deterministic DDIM inversion and sampling for the diffusion-based semantic transition.

Part of CAV-SAM's DBST module (Diffusion-Based Semantic Transition, the paper's method
section), which follows DiffMorpher's recipe: each input image's latent is inverted with
DDIM (eta = 0) into a noise latent, the two noise latents are interpolated, and each
interpolated latent is sampled back with the same DDIM schedule.

Both directions here use one and the same schedule and update, so that they are exact
inverses of each other whenever the model's noise estimate does not depend on the latent
(the update is x_next = sqrt(a_next) * x0 + sqrt(1 - a_next) * eps with
x0 = (x - sqrt(1 - a) * eps) / sqrt(a)). With a real UNet the inversion is the usual
approximation that evaluates the model at the latent of the previous, less noisy level.

Latents are ``(B, C, h, w)`` tensors on the UNet's device (``C = 4`` for Stable
Diffusion, ``h = w = 64`` at 512 pixels); ``alphas_cumprod`` values are the scheduler's
cumulative products of (1 - beta), unitless in (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
import torch

__all__ = ["DdimSchedule", "ddim_invert", "ddim_sample", "model_eps_x0", "predict_output"]

_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class DdimSchedule:
    """The DDIM sampling schedule: the timesteps, most noisy first, and their noise levels.

    ``timesteps``: the UNet timesteps (ints in [0, num_train_timesteps)), in sampling order
    (decreasing). ``levels``: ``len(timesteps) + 1`` cumulative alphas (floats in (0, 1]):
    ``levels[i]`` belongs to ``timesteps[i]`` and ``levels[-1]`` is the level of the clean
    latent (the scheduler's ``final_alpha_cumprod``). ``prediction_type``: what the UNet
    predicts, "epsilon", "v_prediction" or "sample".
    """

    timesteps: tuple[int, ...]
    levels: tuple[float, ...]
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.timesteps) + 1:
            raise ValueError(f"DdimSchedule needs len(timesteps) + 1 levels, got {len(self.timesteps)} timesteps "
                             f"and {len(self.levels)} levels")
        if self.prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {_PREDICTION_TYPES}, got {self.prediction_type!r}")
        if any(not 0.0 < a <= 1.0 for a in self.levels):
            raise ValueError("every level (cumulative alpha) must lie in (0, 1]")

    @classmethod
    def from_scheduler_config(cls, config, steps: int) -> "DdimSchedule":
        """The DDIM schedule of `steps` steps for a diffusers scheduler config.

        Any Stable Diffusion scheduler config works (DDIM, PNDM, ...): its betas, timestep
        spacing, steps_offset, set_alpha_to_one and prediction_type are read through a
        ``DDIMScheduler`` built from it. Raises ValueError for `steps` < 1.
        """
        from diffusers import DDIMScheduler

        if int(steps) < 1:
            raise ValueError(f"DDIM needs at least one step, got {steps}")
        scheduler = DDIMScheduler.from_config(config)
        scheduler.set_timesteps(int(steps))
        cumprod = scheduler.alphas_cumprod.double()
        timesteps = tuple(int(t) for t in scheduler.timesteps)
        levels = tuple(float(cumprod[t]) for t in timesteps) + (float(scheduler.final_alpha_cumprod),)
        return cls(timesteps, levels, str(scheduler.config.prediction_type))


def model_eps_x0(output: torch.Tensor, latent: torch.Tensor, level: float,
                 prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from the UNet's `output` for `latent` at noise level `level` (cumulative alpha).

    Shapes: all ``(B, C, h, w)``. Handles "epsilon", "v_prediction" and "sample" models.
    """
    a = torch.as_tensor(level, dtype=torch.float64)
    root_a, root_b = a.sqrt().item(), (1.0 - a).sqrt().item()
    if prediction_type == "epsilon":
        eps = output
        x0 = (latent - root_b * eps) / root_a
    elif prediction_type == "v_prediction":
        x0 = root_a * latent - root_b * output
        eps = root_a * output + root_b * latent
    elif prediction_type == "sample":
        x0 = output
        eps = (latent - root_a * x0) / max(root_b, 1e-12)
    else:
        raise ValueError(f"prediction_type must be one of {_PREDICTION_TYPES}, got {prediction_type!r}")
    return eps, x0


def predict_output(unet, latent: torch.Tensor, timestep: int, embeddings: torch.Tensor,
                   uncond_embeddings: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """The UNet's prediction for `latent` at `timestep`, with classifier-free guidance.

    `embeddings`: ``(1, L, D)`` text embeddings (expanded to the batch). With
    `guidance_scale` > 1 and `uncond_embeddings` given, the output is
    ``u + guidance_scale * (c - u)``; otherwise one conditional pass. `unet` is any callable
    ``unet(latent, t, encoder_hidden_states=...)`` returning an object with ``.sample``
    (a diffusers ``UNet2DConditionModel``). Returns ``(B, C, h, w)`` in the latent's dtype.
    """
    batch = latent.shape[0]
    t = torch.tensor(int(timestep), device=latent.device)
    cond = embeddings.expand(batch, -1, -1)
    if guidance_scale > 1.0 and uncond_embeddings is not None:
        both = torch.cat([uncond_embeddings.expand(batch, -1, -1), cond])
        out = unet(torch.cat([latent, latent]), t, encoder_hidden_states=both).sample
        uncond, cond_out = out.chunk(2)
        return uncond + guidance_scale * (cond_out - uncond)
    return unet(latent, t, encoder_hidden_states=cond).sample


def _step(latent: torch.Tensor, output: torch.Tensor, level_from: float, level_to: float,
          prediction_type: str) -> torch.Tensor:
    eps, x0 = model_eps_x0(output.to(latent.dtype), latent, level_from, prediction_type)
    a_to = torch.as_tensor(level_to, dtype=torch.float64)
    return a_to.sqrt().item() * x0 + (1.0 - a_to).sqrt().item() * eps


@torch.no_grad()
def ddim_invert(unet, latent: torch.Tensor, embeddings: torch.Tensor, schedule: DdimSchedule,
                uncond_embeddings: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """DDIM inversion (eta = 0) of a clean latent into the noise latent at ``schedule.timesteps[0]``.

    `latent`: ``(B, C, h, w)``, the VAE latent already multiplied by the VAE's scaling factor.
    Walks the schedule backwards: from level ``levels[i + 1]`` to ``levels[i]`` using the
    model's prediction at ``timesteps[i]`` on the current latent (DiffMorpher's convention).
    Returns the inverted latent, same shape and dtype. Deterministic.
    """
    x = latent
    steps = len(schedule.timesteps)
    for i in range(steps - 1, -1, -1):
        out = predict_output(unet, x, schedule.timesteps[i], embeddings, uncond_embeddings, guidance_scale)
        x = _step(x, out, schedule.levels[i + 1], schedule.levels[i], schedule.prediction_type)
    return x


@torch.no_grad()
def ddim_sample(unet, latent: torch.Tensor, embeddings: torch.Tensor, schedule: DdimSchedule,
                uncond_embeddings: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """DDIM sampling (eta = 0) from a noise latent at ``schedule.timesteps[0]`` to a clean latent.

    The exact reverse of `ddim_invert`'s update: from ``levels[i]`` to ``levels[i + 1]`` with
    the model's prediction at ``timesteps[i]``. `latent`: ``(B, C, h, w)``. Returns the clean
    latent (still scaled by the VAE's scaling factor), same shape and dtype. Deterministic.
    """
    x = latent
    for i, t in enumerate(schedule.timesteps):
        out = predict_output(unet, x, t, embeddings, uncond_embeddings, guidance_scale)
        x = _step(x, out, schedule.levels[i], schedule.levels[i + 1], schedule.prediction_type)
    return x

