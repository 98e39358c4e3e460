"""Diffusion-based semantic transition (DBST): a pseudo video from the reference image to the
current frame.

CAV-SAM ("Correspondence as Video: Test-Time Adaption on SAM2 for Reference Segmentation in
the Wild", Wang et al., ICCV 2025, arXiv 2508.07759; its DBST module) turns a
reference/target pair into a short video so that SAM2's video memory can carry the
reference mask to the target through intermediate frames. The transition follows
DiffMorpher's recipe (Zhang et al., CVPR 2024) with a Stable Diffusion pipeline (2.1 base:
512 pixels, epsilon prediction):

1. one LoRA (rank 16, on the UNet's attention projections) fitted per image, reference
   and current frame, for a few steps of the denoising loss (`dbst_lora.fit_lora`);
2. DDIM inversion (20 steps, eta 0) of each image's VAE latent under its own LoRA
   (`dbst_inversion.ddim_invert`);
3. for each of N alphas evenly spaced in [alpha_min, alpha_max] (default 9 in [0.2, 0.8]):
   the noise latent ``adain(slerp(z_ref, z_cur, alpha), z_ref, z_cur, alpha)``, the LoRA
   ``blend_lora(lora_ref, lora_cur, alpha)`` and DDIM sampling back to an image.

CAV-SAM conditions both images on the class name; here the prompt is
`TransitionConfig.prompt`, empty by default (a live target need not have a class name).
Chosen here where the papers leave it open (see `TransitionConfig`): no classifier-free
guidance (guidance_scale 1, DiffMorpher's default), the VAE posterior mean as each image's
latent for inversion, both LoRA fits starting from the same seed-drawn parameters, and no
attention injection nor alpha rescheduling (DiffMorpher's optional smoothness stages, which
CAV-SAM leaves out). The LoRA blend mixes the A and B factors separately, as DiffMorpher
does, not their product. Inputs are resized (bilinear, antialiased, aspect ratio not kept)
to the pipeline's square resolution and the frames back to the current frame's size.

Everything is deterministic under the seed: the LoRA initialisation and the fits' random
draws come from CPU generators seeded from ``config.seed``, and inversion and sampling have
no randomness. On CPU two runs are bitwise equal; on CUDA, bitwise equality also needs
``torch.use_deterministic_algorithms(True)`` (attention backward uses atomics otherwise).

Cost, in UNet evaluations per transition set: ``2 * lora_steps`` forward+backward passes,
``2 * inversion_steps`` for the inversions and ``frames * inversion_steps`` for sampling,
plus ``frames`` VAE decodes. The reference's fit and inversion are cached (one entry), so
a new current frame with the same reference pays ``lora_steps`` training passes and
``(1 + frames) * inversion_steps`` evaluations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .dbst_inversion import DdimSchedule, ddim_invert, ddim_sample
from .dbst_lora import (ADAPTER_NAME, add_lora, blend_lora, fit_lora, init_lora_state, load_lora_state,
                        lora_state)

__all__ = ["FittedImage", "TransitionConfig", "TransitionGenerator", "adain", "blend_lora", "ddim_invert",
           "ddim_sample", "interpolate_latents", "load_pipeline", "pipeline_resolution", "slerp",
           "transition_alphas"]

REFERENCE, CURRENT = 0, 1  # the two roles; each draws its own LoRA-fit randomness
_INIT = 2  # the stream of the shared LoRA initialisation


@dataclass(frozen=True)
class TransitionConfig:
    """Parameters of one transition set.

    frames: N, the number of intermediate frames (>= 1).
    alpha_min, alpha_max: the interpolation weights of the first and last intermediate frame
        (0 = the reference, 1 = the current frame); the N alphas are evenly spaced between
        them (one frame: their mean). 0 <= alpha_min <= alpha_max <= 1.
    inversion_steps: DDIM steps of the inversion and of the sampling (>= 1).
    lora_rank: rank of each per-image LoRA (>= 1).
    lora_steps: denoising-loss steps of each LoRA fit (>= 0; 0 keeps the LoRA at its
        initial, zero update). DiffMorpher's 200.
    lora_lr: AdamW learning rate of the fits. DiffMorpher's 2e-4.
    guidance_scale: classifier-free guidance in inversion and sampling (>= 1; 1 = one
        conditional pass, no guidance).
    seed: seeds the LoRA initialisation and the fits' draws of timesteps and noise.
    prompt: the text condition of both images; CAV-SAM uses the class name, the default
        is empty (unconditional).
    """

    frames: int = 9
    alpha_min: float = 0.2
    alpha_max: float = 0.8
    inversion_steps: int = 20
    lora_rank: int = 16
    lora_steps: int = 200
    lora_lr: float = 2e-4
    guidance_scale: float = 1.0
    seed: int = 0
    prompt: str = ""

    def __post_init__(self) -> None:
        if int(self.frames) < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if not 0.0 <= self.alpha_min <= self.alpha_max <= 1.0:
            raise ValueError(f"need 0 <= alpha_min <= alpha_max <= 1, got {self.alpha_min}, {self.alpha_max}")
        if int(self.inversion_steps) < 1:
            raise ValueError(f"inversion_steps must be >= 1, got {self.inversion_steps}")
        if int(self.lora_rank) < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if int(self.lora_steps) < 0:
            raise ValueError(f"lora_steps must be >= 0, got {self.lora_steps}")
        if not self.lora_lr > 0:
            raise ValueError(f"lora_lr must be > 0, got {self.lora_lr}")
        if not self.guidance_scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1, got {self.guidance_scale}")


def transition_alphas(config: TransitionConfig) -> list[float]:
    """The N interpolation weights of `config`, evenly spaced from alpha_min to alpha_max."""
    if config.frames == 1:
        return [0.5 * (config.alpha_min + config.alpha_max)]
    return [float(a) for a in np.linspace(config.alpha_min, config.alpha_max, config.frames)]


def slerp(first: torch.Tensor, second: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical linear interpolation of two latents, each batch item as one flattened vector.

    ``sin((1 - alpha) theta) / sin(theta) * first + sin(alpha theta) / sin(theta) * second``
    with theta the angle between the two; linear interpolation where theta is ~0 (identical
    or parallel latents, or a zero one). `first`, `second`: ``(B, ...)`` tensors of one shape;
    computed in float64, returned in `first`'s dtype. alpha = 0 / 1 return `first` / `second`
    exactly (up to the dtype cast). Antipodal latents (theta = pi) have no unique path; the
    linear fallback is not used for them and the result is the great circle through a
    numerically chosen plane.
    """
    if first.shape != second.shape:
        raise ValueError(f"slerp needs two latents of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    alpha = float(alpha)
    batch = first.shape[0] if first.dim() > 0 else 1
    a = first.detach().double().reshape(batch, -1)
    b = second.detach().double().reshape(batch, -1).to(a.device)
    norms = a.norm(dim=1) * b.norm(dim=1)
    dot = torch.where(norms > 0, (a * b).sum(dim=1) / norms.clamp_min(1e-300), torch.ones_like(norms))
    theta = torch.arccos(dot.clamp(-1.0, 1.0))
    sin_theta = torch.sin(theta)
    parallel = sin_theta < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(parallel, torch.full_like(theta, 1.0 - alpha), torch.sin((1.0 - alpha) * theta) / safe)
    w1 = torch.where(parallel, torch.full_like(theta, alpha), torch.sin(alpha * theta) / safe)
    out = w0[:, None] * a + w1[:, None] * b
    return out.reshape(first.shape).to(first.dtype)


def _channel_stats(latent: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    flat = latent.double().reshape(latent.shape[0], latent.shape[1], -1)
    mean = flat.mean(dim=2)
    std = flat.var(dim=2, unbiased=False).sqrt().clamp_min(eps)
    return mean, std


def adain(latent: torch.Tensor, first: torch.Tensor, second: torch.Tensor, alpha: float,
          eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation of an interpolated latent (DiffMorpher's AdaIN).

    Each channel of `latent` is normalised to zero mean and unit standard deviation and then
    given the mean and standard deviation ``(1 - alpha) * s_first + alpha * s_second``
    interpolated from the same channel of `first` and `second`. Statistics per batch item and
    channel over the spatial positions (population standard deviation, floored at `eps` so that
    a constant channel does not divide by zero), in float64. All three
    tensors ``(B, C, h, w)``; returned in `latent`'s dtype. ``adain(first, first, second, 0)``
    is `first` up to rounding (and likewise `second` at 1).
    """
    if not (latent.shape == first.shape == second.shape) or latent.dim() < 3:
        raise ValueError("adain needs three latents of one (B, C, ...) shape")
    alpha = float(alpha)
    mean, std = _channel_stats(latent, eps)
    mean0, std0 = _channel_stats(first, eps)
    mean1, std1 = _channel_stats(second, eps)
    target_mean = (1.0 - alpha) * mean0 + alpha * mean1
    target_std = (1.0 - alpha) * std0 + alpha * std1
    flat = latent.double().reshape(latent.shape[0], latent.shape[1], -1)
    out = (flat - mean[..., None]) / std[..., None] * target_std[..., None] + target_mean[..., None]
    return out.reshape(latent.shape).to(latent.dtype)


def interpolate_latents(first: torch.Tensor, second: torch.Tensor, alpha: float) -> torch.Tensor:
    """The noise latent of one intermediate frame: ``adain(slerp(first, second, alpha), first, second, alpha)``.

    `first`, `second`: the inverted latents of the reference and of the current frame,
    ``(1, C, h, w)``. alpha = 0 / 1 reproduce them within float32 rounding.
    """
    return adain(slerp(first, second, alpha), first, second, alpha)


def pipeline_resolution(pipeline) -> tuple[int, int]:
    """(height, width) in pixels of the pipeline's images: the UNet's sample size times the
    VAE's scale factor (512 x 512 for Stable Diffusion 2.1 base)."""
    size = pipeline.unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    factor = int(getattr(pipeline, "vae_scale_factor", 2 ** (len(pipeline.vae.config.block_out_channels) - 1)))
    return height * factor, width * factor


def load_pipeline(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """A Stable Diffusion pipeline (e.g. 2.1 base) from a local diffusers folder, on `device`.

    `folder`: what ``StableDiffusionPipeline.save_pretrained`` wrote (model_index.json,
    unet/, vae/, text_encoder/, tokenizer/, scheduler/). Nothing is downloaded
    (local_files_only); the safety checker is not loaded. `dtype`: the weights' dtype
    (default: as saved, float32 for most folders); float16 on CUDA halves memory, the LoRA
    parameters stay float32.

    Raises FileNotFoundError naming the folder when it does not exist or has no
    model_index.json, RuntimeError naming it when diffusers cannot load it.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"Stable Diffusion pipeline folder not found: {path}")
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    from diffusers import StableDiffusionPipeline

    kwargs = dict(local_files_only=True, safety_checker=None, requires_safety_checker=False)
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"could not load a Stable Diffusion pipeline from {path}: {exc}") from exc
    pipeline = pipeline.to(torch.device(device))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@dataclass
class FittedImage:
    """One input image's part of the transition.

    lora: its fitted LoRA state (name -> float32 CPU tensor, see `dbst_lora`).
    latent: its DDIM-inverted noise latent, ``(1, C, h, w)`` on the UNet's device and dtype.
    losses: the fit's per-step denoising losses.
    """

    lora: dict[str, torch.Tensor]
    latent: torch.Tensor
    losses: list[float] = field(default_factory=list)


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ValueError(f"{what} must be an HxWx3 uint8 RGB array, got {got}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} is empty: {image.shape}")
    return np.ascontiguousarray(image)


def _derive_seed(seed: int, role: int) -> int:
    return int(np.random.SeedSequence([int(seed) % (1 << 64), int(role)]).generate_state(1, np.uint64)[0] >> 1)


class TransitionGenerator:
    """N frames morphing the reference image into the current frame (CAV-SAM's DBST).

    `pipeline`: a diffusers ``StableDiffusionPipeline`` (see `load_pipeline`); the generator
    adds a LoRA adapter named "dbst" to its UNet (active only inside `fit` / `render` /
    `generate`, disabled between calls) and so owns the pipeline: do not share it with
    code that uses other adapters. `config`: a `TransitionConfig`.

    Not thread-safe: one call at a time.
    """

    def __init__(self, pipeline, config: TransitionConfig | None = None) -> None:
        from diffusers import DDIMScheduler

        self.pipeline = pipeline
        self.config = config or TransitionConfig()
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.resolution = pipeline_resolution(pipeline)
        self.schedule = DdimSchedule.from_scheduler_config(pipeline.scheduler.config, self.config.inversion_steps)
        self._train_levels = DDIMScheduler.from_config(pipeline.scheduler.config).alphas_cumprod.clone()
        add_lora(self.unet, self.config.lora_rank, ADAPTER_NAME)
        self._initial_lora = init_lora_state(self.unet, _derive_seed(self.config.seed, _INIT))
        self.unet.disable_adapters()
        self._embeddings: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._reference_cache: tuple[tuple, FittedImage] | None = None

    # -- pieces -----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @torch.no_grad()
    def _text(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._embeddings is None:
            guided = self.config.guidance_scale > 1.0
            cond, uncond = self.pipeline.encode_prompt(self.config.prompt, self.device, 1, guided, negative_prompt="")
            self._embeddings = (cond.to(self.dtype), None if uncond is None else uncond.to(self.dtype))
        return self._embeddings

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 -> (1, 3, R, R) in [-1, 1], resized on the CPU in float32."""
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(-1.0, 1.0).to(self.device, self.vae.dtype)

    @torch.no_grad()
    def _encode(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(self._pixels(image)).latent_dist
        scale = float(self.vae.config.scaling_factor)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((dist.mean - shift) * scale).to(self.dtype), (dist.std * scale).to(self.dtype)

    @torch.no_grad()
    def _decode(self, latent: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        scale = float(self.vae.config.scaling_factor)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        pixels = self.vae.decode((latent / scale + shift).to(self.vae.dtype)).sample
        x = ((pixels.float().cpu() + 1.0) * 0.5).clamp(0.0, 1.0)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)

    def fit(self, image: np.ndarray, role: int = CURRENT) -> FittedImage:
        """Fit one image's LoRA and DDIM-invert its latent under that LoRA.

        `image`: HxWx3 uint8 RGB. `role`: REFERENCE (0) or CURRENT (1); each role draws its
        own fit randomness from the seed, so a pair's result does not depend on the order of
        the fits. Raises ValueError for another array.
        """
        image = _check_image(image, "image")
        mean, std = self._encode(image)
        cond, uncond = self._text()
        generator = torch.Generator().manual_seed(_derive_seed(self.config.seed, role))
        self.unet.enable_adapters()
        self.unet.set_adapter(ADAPTER_NAME)
        try:
            load_lora_state(self.unet, self._initial_lora)
            losses = fit_lora(self.unet, mean, cond, self._train_levels, self.schedule.prediction_type,
                              self.config.lora_steps, self.config.lora_lr, generator, latent_std=std)
            state = lora_state(self.unet)
            latent = ddim_invert(self.unet, mean, cond, self.schedule, uncond, self.config.guidance_scale)
        finally:
            self.unet.disable_adapters()
        return FittedImage(state, latent, losses)

    def fit_reference(self, reference: np.ndarray) -> FittedImage:
        """`fit` for the reference, cached: the same reference array (by content) is fitted once."""
        reference = _check_image(reference, "reference")
        key = (reference.shape, hashlib.sha1(reference.tobytes()).hexdigest())
        if self._reference_cache is not None and self._reference_cache[0] == key:
            return self._reference_cache[1]
        fitted = self.fit(reference, REFERENCE)
        self._reference_cache = (key, fitted)
        return fitted

    def clear_cache(self) -> None:
        """Forget the cached reference fit."""
        self._reference_cache = None

    @torch.no_grad()
    def render(self, first: FittedImage, second: FittedImage, size: tuple[int, int],
               alphas: list[float] | None = None) -> list[np.ndarray]:
        """Sample the intermediate frames between two fitted images.

        For each alpha (default `transition_alphas(config)`): the LoRA
        ``blend_lora(first.lora, second.lora, alpha)``, the noise latent
        ``interpolate_latents(first.latent, second.latent, alpha)``, DDIM sampling and VAE
        decoding. `size`: (height, width) in pixels of the returned frames. Returns one
        HxWx3 uint8 RGB array per alpha, in alpha order.
        """
        cond, uncond = self._text()
        height, width = int(size[0]), int(size[1])
        frames = []
        self.unet.enable_adapters()
        self.unet.set_adapter(ADAPTER_NAME)
        try:
            for alpha in (transition_alphas(self.config) if alphas is None else alphas):
                load_lora_state(self.unet, blend_lora(first.lora, second.lora, alpha))
                noise = interpolate_latents(first.latent, second.latent, alpha)
                clean = ddim_sample(self.unet, noise, cond, self.schedule, uncond, self.config.guidance_scale)
                frames.append(self._decode(clean, (height, width)))
        finally:
            self.unet.disable_adapters()
        return frames

    def generate(self, reference: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
        """The N intermediate frames from `reference` to `target` (the current frame).

        `reference`, `target`: HxWx3 uint8 RGB arrays, any sizes. Returns ``config.frames``
        HxWx3 uint8 arrays of the target's height and width, ordered from the reference side
        (alpha_min) to the target side (alpha_max); the inputs themselves are not included.
        Raises ValueError for other arrays.
        """
        reference = _check_image(reference, "reference")
        target = _check_image(target, "target")
        first = self.fit_reference(reference)
        second = self.fit(target, CURRENT)
        return self.render(first, second, target.shape[:2])
