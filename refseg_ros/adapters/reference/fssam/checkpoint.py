"""FSSAM checkpoints: `{'epoch', 'state_dict', 'optimizer'}` saved from a DDP-wrapped model.

`state_dict` keys are `module.sam2.<SAM2 name>` (SAM 2.0 Hiera-S at 512, the names of
sam2's SAM2Base) and `module.dino.<torch-hub DINOv2 name>`. FSSAM's test.py also accepts
the keys without 'module.'; so do we. Any missing, unexpected or mis-shaped key is refused
by name before a single tensor is copied: the models are untouched on refusal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from refseg_ros.engine.errors import CheckpointError

from ..dino import hf_to_hub_shapes, hub_to_hf

DDP_PREFIX = "module."


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}]{more}"


def read_fssam_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the file (torch.load, weights_only=True) -> (state_dict with 'module.' removed,
    the other top-level entries except the optimizer)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"FSSAM checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"FSSAM checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(payload, Mapping) or not isinstance(payload.get("state_dict"), Mapping):
        raise CheckpointError(
            f"FSSAM checkpoint {path} is not in FSSAM's format "
            "(a dict with 'state_dict', beside 'epoch' and 'optimizer')")
    state = payload["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"FSSAM checkpoint {path}: entries that are not tensors: "
                              f"{_preview([str(k) for k in bad])}")
    if all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    info = {k: v for k, v in payload.items() if k not in ("state_dict", "optimizer")}
    return dict(state), info


def load_fssam_checkpoint(path: str | os.PathLike, sam2: torch.nn.Module, dino: torch.nn.Module) -> dict:
    """Load an FSSAM checkpoint into `sam2` (engine-built SAM2Base) and `dino` (Dinov2Model).

    Refuses (CheckpointError naming the checkpoint keys) any missing, unexpected or
    mis-shaped key, or a non-floating tensor where the model holds a floating one; nothing
    is loaded then. Returns the checkpoint's other entries (e.g. {'epoch': ...}).
    """
    state, info = read_fssam_state(path)
    load_fssam_state(state, sam2, dino, source=f"FSSAM checkpoint {path}")
    return info


def load_fssam_state(state: Mapping[str, torch.Tensor], sam2: torch.nn.Module, dino: torch.nn.Module,
                     source: str = "FSSAM state dict") -> None:
    """Load an FSSAM state dict (keys 'sam2.*' and 'dino.*', 'module.' already removed).

    All checks come first; on any problem CheckpointError names the keys (as 'module.*')
    and neither model is touched.
    """
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    sam2_state = {k[len("sam2."):]: v for k, v in state.items() if k.startswith("sam2.")}
    hub_state = {k[len("dino."):]: v for k, v in state.items() if k.startswith("dino.")}
    outside = sorted(DDP_PREFIX + k for k in state if not k.startswith(("sam2.", "dino.")))

    problems: list[str] = []
    if outside:
        problems.append(f"unexpected keys {_preview(outside)}")
    problems += _compare("module.sam2.", sam2_state, {k: tuple(v.shape) for k, v in sam2.state_dict().items()},
                         sam2.state_dict())
    dino_expected = dino.state_dict()
    problems += _compare("module.dino.", hub_state, hf_to_hub_shapes(dino_expected), None)
    renamed, unknown = hub_to_hf(hub_state, dino_expected.keys())
    if unknown and not problems:
        problems.append(f"unexpected keys {_preview(sorted('module.dino.' + k for k in unknown))}")
    if not problems:
        bad_dtype = sorted("module.dino." + k for k, v in renamed.items()
                           if k in dino_expected and dino_expected[k].is_floating_point() and not v.is_floating_point())
        if bad_dtype:
            problems.append(f"non-floating tensors {_preview(bad_dtype)}")
    if problems:
        raise CheckpointError(f"{source} does not match SAM 2.0 Hiera-S at 512 + DINOv2 ViT-B/14: "
                              + "; ".join(problems))
    sam2.load_state_dict(sam2_state, strict=True)
    dino.load_state_dict(renamed, strict=True)


def _compare(prefix: str, given: Mapping[str, torch.Tensor], expected: Mapping[str, tuple],
             model_state: Mapping[str, torch.Tensor] | None) -> list[str]:
    problems = []
    missing = sorted(prefix + k for k in set(expected) - set(given))
    unexpected = sorted(prefix + k for k in set(given) - set(expected))
    shapes = sorted(f"{prefix}{k} {tuple(given[k].shape)} != {tuple(expected[k])}"
                    for k in set(given) & set(expected) if tuple(given[k].shape) != tuple(expected[k]))
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_preview(shapes)}")
    if model_state is not None and not problems:
        dtypes = sorted(prefix + k for k, v in given.items()
                        if model_state[k].is_floating_point() and not v.is_floating_point())
        if dtypes:
            problems.append(f"non-floating tensors {_preview(dtypes)}")
    return problems
