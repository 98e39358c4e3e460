"""Build SAM2 / SAM2.1 models from the sam2 package's own configs and load checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import torch

from .errors import CheckpointError

# Short names -> hydra config inside the sam2 package.
MODEL_CONFIGS: dict[str, str] = {
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

# The settings SAM2's video predictor adds on top of the configs; the engine tracks with
# exactly these so that its outputs match the predictor's.
VIDEO_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
]


def config_path(model: str) -> str:
    """The sam2 config for a short model name (or a config path given as is)."""
    if model in MODEL_CONFIGS:
        return MODEL_CONFIGS[model]
    if model.endswith(".yaml"):
        return model
    known = ", ".join(MODEL_CONFIGS)
    raise ValueError(f"unknown model {model!r}; known models: {known}")


def hydra_overrides(image_size: Optional[int], extra: Optional[list[str]] = None) -> list[str]:
    """Overrides for an image size other than the config's, on top of the video ones."""
    overrides = list(VIDEO_OVERRIDES)
    if image_size is not None:
        if image_size % 64 != 0 or image_size <= 0:
            raise ValueError(f"image_size must be a positive multiple of 64, got {image_size}")
        # RoPE tables in memory attention follow the feature size on first use.
        overrides.append(f"++model.image_size={image_size}")
    return overrides + list(extra or [])


def build_model(
    model: str = "sam2.1_hiera_t",
    checkpoint: Optional[str] = None,
    image_size: Optional[int] = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    target: Optional[str] = None,
    extra_overrides: Optional[list[str]] = None,
) -> torch.nn.Module:
    """Instantiate the real sam2 architecture, then load `checkpoint` strictly if given.

    `target` replaces the model class (e.g. sam2's SAM2VideoPredictor, for parity checks).
    """
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra import initialize_config_module
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    overrides = hydra_overrides(image_size, extra_overrides)
    if target is not None:
        overrides.append(f"++model._target_={target}")
    cfg = compose(config_name=config_path(model), overrides=overrides)
    OmegaConf.resolve(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint)
    return net.to(device).eval()


def load_checkpoint(net: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load an official `{"model": state_dict}` file; any mismatch is an error, never partial."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(
            f"checkpoint {path} is not in SAM2's format (a dict with a 'model' state dict)"
        )
    state = payload["model"]
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        if mismatched:
            shapes = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in mismatched]
            parts.append(f"shape mismatches {_preview(shapes)}")
        raise CheckpointError(
            f"checkpoint {path} does not match the model config: " + "; ".join(parts)
        )
    net.load_state_dict(state, strict=True)


class WeightsSource(Protocol):
    """A file that holds the weights of the engine's SAM2, perhaps beside an adapter's
    (`SegmentationEngine.load_weights` loads it).

    `path`: the file; `kind`: what it is, for messages ("SAM2 checkpoint", ...).
    """

    path: str
    kind: str

    def load(self, model: torch.nn.Module) -> object:
        """Load the file's SAM2 weights into `model` (built from the matching config),
        all or nothing, and return what the file holds besides (an adapter's modules),
        or None. Raises CheckpointError (and others for a missing tokenizer, ...) with
        `model` untouched."""


@dataclass(frozen=True)
class Sam2Checkpoint:
    """An official SAM2 checkpoint (`{"model": state_dict}`), loaded strictly."""

    path: str
    kind: str = "SAM2 checkpoint"

    def load(self, model: torch.nn.Module) -> None:
        """Load the file into `model`; CheckpointError on any mismatch, nothing loaded."""
        load_checkpoint(model, self.path)


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}]{more}"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
