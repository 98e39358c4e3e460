"""Per-image LoRA on the UNet's attention for the diffusion-based semantic transition.

CAV-SAM's DBST module (Diffusion-Based Semantic Transition) follows DiffMorpher's "LoRA
interpolation": one low-rank adapter is fitted to each of the two images (the reference
and the current frame) on the standard denoising loss, and each intermediate frame is
sampled with the alpha-weighted blend of the two adapters' parameters.

The adapters are ``peft`` LoRA layers (rank r, ``lora_alpha = r`` so the update is
``B @ A`` unscaled) on every attention projection of the UNet (``to_q``, ``to_k``, ``to_v``,
``to_out.0``, self- and cross-attention), added once through diffusers'
``UNet2DConditionModel.add_adapter``. Both fits start from the same initial parameters
(drawn from the seed: A Kaiming-uniform, B zero), as DiffMorpher's fits do, so that the
parameter-space blend of two adapters that moved little from one start stays close to the
blend of their weight updates.

A LoRA state is a ``dict[str, torch.Tensor]``: parameter name in the UNet -> a float32 CPU
tensor, ``lora_A`` weights ``(r, in_features)`` and ``lora_B`` weights ``(out_features, r)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["ADAPTER_NAME", "LORA_TARGETS", "add_lora", "blend_lora", "fit_lora", "init_lora_state",
           "load_lora_state", "lora_delta", "lora_state"]

ADAPTER_NAME = "dbst"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

LoraState = dict[str, torch.Tensor]


def _lora_parameters(unet, adapter_name: str) -> dict[str, torch.nn.Parameter]:
    marks = (f".lora_A.{adapter_name}.", f".lora_B.{adapter_name}.")
    params = {name: p for name, p in unet.named_parameters() if any(m in name for m in marks)}
    return dict(sorted(params.items()))


def add_lora(unet, rank: int, adapter_name: str = ADAPTER_NAME) -> list[str]:
    """Give `unet` a LoRA adapter of `rank` on its attention projections; return its parameter names.

    Adds it once: a second call with the same rank reuses the adapter (and activates it), a
    different rank raises ValueError. The adapter's parameters are kept in float32 whatever
    the UNet's dtype (LoRA fitting in float16 is unstable). Raises ImportError without
    ``peft``, ValueError when the UNet has no attention projection to adapt.
    """
    from peft import LoraConfig

    rank = int(rank)
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    existing = getattr(unet, "peft_config", None) or {}
    if adapter_name in existing:
        if int(existing[adapter_name].r) != rank:
            raise ValueError(f"the UNet already carries a LoRA adapter {adapter_name!r} of rank "
                             f"{existing[adapter_name].r}, not {rank}")
    else:
        config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, init_lora_weights=True,
                            target_modules=list(LORA_TARGETS))
        unet.add_adapter(config, adapter_name=adapter_name)
    unet.set_adapter(adapter_name)
    params = _lora_parameters(unet, adapter_name)
    if not params:
        raise ValueError("the UNet has no attention projection (to_q/to_k/to_v/to_out.0) to carry a LoRA")
    for p in params.values():
        if p.dtype != torch.float32:
            p.data = p.data.float()
    return list(params)


def lora_state(unet, adapter_name: str = ADAPTER_NAME) -> LoraState:
    """The adapter's current parameters: name -> detached float32 CPU copy."""
    params = _lora_parameters(unet, adapter_name)
    return {name: p.detach().to("cpu", torch.float32).clone() for name, p in params.items()}


def load_lora_state(unet, state: LoraState, adapter_name: str = ADAPTER_NAME) -> None:
    """Copy `state` into the adapter's parameters. KeyError when the names differ from the adapter's,
    ValueError when a shape differs."""
    params = _lora_parameters(unet, adapter_name)
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise KeyError(f"LoRA state does not match adapter {adapter_name!r}: missing {missing[:3]}, "
                       f"unexpected {extra[:3]}")
    with torch.no_grad():
        for name, p in params.items():
            value = state[name]
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"LoRA parameter {name}: shape {tuple(value.shape)} != {tuple(p.shape)}")
            p.copy_(value.to(p.device, p.dtype))


def init_lora_state(unet, seed: int, adapter_name: str = ADAPTER_NAME) -> LoraState:
    """The adapter's initial parameters drawn from `seed` on the CPU (device-independent):
    ``lora_A`` Kaiming-uniform (a = sqrt(5), as ``nn.Linear``), ``lora_B`` zero, so the
    initial update ``B @ A`` is zero."""
    generator = torch.Generator().manual_seed(int(seed))
    state: LoraState = {}
    for name, p in _lora_parameters(unet, adapter_name).items():
        value = torch.empty(tuple(p.shape), dtype=torch.float32)
        if ".lora_A." in name:
            torch.nn.init.kaiming_uniform_(value, a=math.sqrt(5), generator=generator)
        else:
            value.zero_()
        state[name] = value
    return state


def blend_lora(first: LoraState, second: LoraState, alpha: float) -> LoraState:
    """The alpha-weighted blend of two LoRA states: ``(1 - alpha) * first + alpha * second``,
    parameter by parameter (DiffMorpher's LoRA interpolation).

    ``alpha`` = 0 gives `first` and 1 gives `second`, exactly. Tensors: float32, same names
    and shapes in both; KeyError / ValueError otherwise.
    """
    if set(first) != set(second):
        raise KeyError("the two LoRA states have different parameter names")
    alpha = float(alpha)
    out: LoraState = {}
    for name, a in first.items():
        b = second[name]
        if a.shape != b.shape:
            raise ValueError(f"LoRA parameter {name}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        out[name] = (1.0 - alpha) * a + alpha * b
    return out


def lora_delta(state: LoraState) -> dict[str, torch.Tensor]:
    """The weight update ``B @ A`` of each adapted layer: layer name -> ``(out_features, in_features)``."""
    deltas = {}
    for name, a in state.items():
        if ".lora_A." not in name:
            continue
        b = state[name.replace(".lora_A.", ".lora_B.")]
        deltas[name.split(".lora_A.")[0]] = b @ a
    return deltas


def fit_lora(unet, latent_mean: torch.Tensor, embeddings: torch.Tensor, alphas_cumprod: torch.Tensor,
             prediction_type: str, steps: int, lr: float, generator: torch.Generator,
             latent_std: torch.Tensor | None = None, adapter_name: str = ADAPTER_NAME) -> list[float]:
    """Fit the active adapter to one image for `steps` steps of the standard denoising loss.

    Each step draws (from `generator`, a CPU generator, so the result does not depend on
    the device) a timestep t uniform in [0, T), a noise n and, when `latent_std` is given, a
    sample ``x = latent_mean + latent_std * z`` of the VAE's latent distribution; the loss is
    the mean squared error between the UNet's prediction on
    ``sqrt(a_t) x + sqrt(1 - a_t) n`` and its target (n for "epsilon",
    ``sqrt(a_t) n - sqrt(1 - a_t) x`` for "v_prediction", x for "sample"). AdamW
    (lr, betas 0.9/0.999, weight decay 1e-2), constant rate, as DiffMorpher.

    `latent_mean`, `latent_std`: ``(1, C, h, w)`` scaled VAE latents on the UNet's device.
    `embeddings`: ``(1, L, D)``. `alphas_cumprod`: ``(T,)`` training noise levels.
    Only the adapter's parameters change; the other parameters' ``requires_grad`` flags are
    restored afterwards. Returns the loss of every step (floats).
    """
    params = _lora_parameters(unet, adapter_name)
    if not params:
        raise ValueError(f"the UNet has no LoRA adapter {adapter_name!r}; call add_lora first")
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    steps = int(steps)
    if steps <= 0:
        return []
    flags = {name: p.requires_grad for name, p in unet.named_parameters()}
    lora_ids = {id(p) for p in params.values()}
    for p in unet.parameters():
        p.requires_grad_(id(p) in lora_ids)
    optimizer = torch.optim.AdamW(list(params.values()), lr=float(lr), betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    device, dtype = latent_mean.device, latent_mean.dtype
    levels = alphas_cumprod.to("cpu", torch.float64)
    shape = tuple(latent_mean.shape)
    losses: list[float] = []
    try:
        with torch.enable_grad():
            for _ in range(steps):
                t = torch.randint(0, levels.shape[0], (shape[0],), generator=generator)
                noise = torch.randn(shape, generator=generator)
                z = torch.randn(shape, generator=generator)
                a = levels[t].view(-1, 1, 1, 1)
                root_a = a.sqrt().to(device, dtype)
                root_b = (1.0 - a).sqrt().to(device, dtype)
                noise = noise.to(device, dtype)
                x = latent_mean if latent_std is None else latent_mean + latent_std * z.to(device, dtype)
                noisy = root_a * x + root_b * noise
                if prediction_type == "epsilon":
                    target = noise
                elif prediction_type == "v_prediction":
                    target = root_a * noise - root_b * x
                else:
                    target = x
                pred = unet(noisy, t.to(device), encoder_hidden_states=embeddings.expand(shape[0], -1, -1)).sample
                loss = F.mse_loss(pred.float(), target.float())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    finally:
        optimizer.zero_grad(set_to_none=True)
        for name, p in unet.named_parameters():
            p.requires_grad_(flags.get(name, False))
    return losses
