"""Load an official SAMWISE checkpoint: SAM2 for the engine, the rest for the adapter.

The official file is `torch.save({'model': state_dict, 'optimizer', 'lr_scheduler',
'epoch', 'args': argparse.Namespace})`. It is read with `torch.load(weights_only=True)`
and argparse.Namespace on the allow-list (never `weights_only=False`). Keys:

- `sam.*` -> a SAM **2.0** hiera_b+ model at 1024 built by the engine's model builder,
  except `sam.sam_prompt_encoder.project_text.*`, which is the adapter's text prompt MLP;
- `text_encoder.*` (fairseq names) -> RoBERTa (`roberta.py` maps them);
- `cmt_adapters.{k}.*` -> the CMT adapters; `conditional_memory_encoder.*` -> the CME.

Every key is checked (name and shape) before anything is loaded: a missing, unexpected
or mis-shaped key raises CheckpointError naming it, and nothing is loaded.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from refseg_ros.engine.errors import CheckpointError
from refseg_ros.engine.model import build_model

from . import cme as cme_names
from . import cmt as cmt_names
from .adapter import SamwiseAdapter

SAM_MODEL = "sam2_hiera_b+"  # SAM 2.0 hiera_b+ (the official `--sam2_version base`), 1024 px
PROJECT_TEXT = "sam.sam_prompt_encoder.project_text."


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The `model` state dict of an official file; CheckpointError naming the file else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SAMWISE checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / corrupt files raise several types
        raise CheckpointError(f"SAMWISE checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"SAMWISE checkpoint {path} is not in SAMWISE's format "
                              "(a dict with a 'model' state dict)")
    return payload["model"]


def split_state(state: dict[str, torch.Tensor]):
    """Official keys -> (sam keys, adapter keys in our names, fairseq keys, unknown keys,
    our adapter name -> official name). Unknown names are collected, not raised, so that
    every problem is reported at once."""
    sam, ours, fairseq, unknown, official_of = {}, {}, {}, [], {}
    for key, tensor in state.items():
        try:
            if key.startswith(PROJECT_TEXT):
                name = "text_prompt." + key[len(PROJECT_TEXT):]
            elif key.startswith("sam."):
                sam[key[len("sam."):]] = tensor
                continue
            elif key.startswith("text_encoder."):
                fairseq[key[len("text_encoder."):]] = tensor
                continue
            elif key.startswith("cmt_adapters."):
                index, rest = key[len("cmt_adapters."):].split(".", 1)
                name = f"cmt.{int(index)}.{rename_prefix(rest, cmt_names.OFFICIAL_NAMES)}"
            elif key.startswith("conditional_memory_encoder."):
                name = "cme." + rename_prefix(key[len("conditional_memory_encoder."):], cme_names.OFFICIAL_NAMES)
            else:
                unknown.append(key)
                continue
        except (KeyError, ValueError):
            unknown.append(key)
            continue
        ours[name] = tensor
        official_of[name] = key
    return sam, ours, fairseq, unknown, official_of


def _check(label: str, expected: dict, given: dict, names: dict) -> list[str]:
    """Problems of one part, worded with the official key names (`names` maps ours->official)."""
    problems = []
    for k in sorted(set(expected) - set(given)):
        problems.append(f"missing key {names.get(k, k)}")
    for k in sorted(set(given) - set(expected)):
        problems.append(f"unexpected key {names.get(k, k)}")
    for k in sorted(set(expected) & set(given)):
        if tuple(given[k].shape) != tuple(expected[k]):
            problems.append(f"key {names.get(k, k)} has shape {tuple(given[k].shape)}, "
                            f"{label} expects {tuple(expected[k])}")
    return problems


def load_samwise(
    path: str | os.PathLike,
    model: str = SAM_MODEL,
    device: str | torch.device = "cpu",
    sam: Optional[torch.nn.Module] = None,
    verbose: bool = True,
):
    """(sam2 model, SamwiseAdapter) from an official checkpoint, both in eval mode.

    `sam` may be an already built model of the right config (the engine's shared one);
    it is only modified when the whole file is valid.
    """
    state = read_checkpoint(path)
    sam = sam if sam is not None else build_model(model)
    stage_channels = [sam.image_encoder.trunk.blocks[i].dim_out for i in sam.image_encoder.trunk.stage_ends[1:]]
    adapter = SamwiseAdapter(stage_channels=tuple(stage_channels))
    sam_part, ours, fairseq, unknown, official_of = split_state(state)
    problems = [f"unexpected key {k}" for k in unknown]
    problems += _check("SAM2 " + model, {k: v.shape for k, v in sam.state_dict().items()},
                       sam_part, {k: "sam." + k for k in sam.state_dict()} | {k: "sam." + k for k in sam_part})
    adapter_expected = {k: v.shape for k, v in adapter.state_dict().items() if not k.startswith("text_encoder.")}
    problems += _check("the adapter", adapter_expected, ours, _official_adapter_names(adapter_expected) | official_of)
    problems += _check("RoBERTa-base", adapter.text_encoder.fairseq_layout(), fairseq,
                       {k: "text_encoder." + k for k in list(fairseq) + list(adapter.text_encoder.fairseq_layout())})
    if problems:
        shown = "; ".join(problems[:8]) + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else "")
        raise CheckpointError(f"SAMWISE checkpoint {path} does not match SAMWISE on {model}: {shown}")

    sam.load_state_dict(sam_part, strict=True)
    adapter.load_state_dict(ours, strict=False)  # every non-RoBERTa key checked above
    adapter.text_encoder.load_fairseq(fairseq)
    counts = adapter.trainable_counts()
    if verbose:
        print(f"SAMWISE adapter: CMT adapters {counts['cmt_adapters']:,} + text prompt "
              f"{counts['project_text']:,} = {counts['adapters_plus_project_text']:,} parameters; "
              f"CME {counts['conditional_memory_encoder']:,}")
    return sam.to(device).eval(), adapter.to(device).eval()


@dataclass(frozen=True)
class SamwiseWeights:
    """An official SAMWISE checkpoint as the engine's weights source
    (`engine.model.WeightsSource`): its `sam.*` weights are SAM2's (`model`, a short
    model name), `load` returns the rest as the `SamwiseAdapter`."""

    path: str
    model: str = SAM_MODEL
    verbose: bool = False
    kind: str = "SAMWISE checkpoint"

    def load(self, sam: torch.nn.Module) -> SamwiseAdapter:
        """Check every key, then load `sam` (the engine's model) and a new adapter on its
        device. Raises CheckpointError (nothing loaded)."""
        device = next(sam.parameters()).device
        return load_samwise(Path(self.path).expanduser(), model=self.model, device=device, sam=sam,
                            verbose=self.verbose)[1]


def rename_prefix(name: str, table: dict[str, str]) -> str:
    """`name` with the first matching prefix of `table` (prefix -> replacement) replaced.

    Raises:
        KeyError: no prefix of `table` starts `name`.
    """
    for prefix, replacement in table.items():
        if name.startswith(prefix):
            return replacement + name[len(prefix):]
    raise KeyError(name)


def _official_adapter_names(ours: dict) -> dict[str, str]:
    """Our adapter key -> its official name (for messages)."""
    out = {}
    inv_cmt = {v: k for k, v in cmt_names.OFFICIAL_NAMES.items()}
    inv_cme = {v: k for k, v in cme_names.OFFICIAL_NAMES.items()}
    for key in ours:
        try:
            if key.startswith("cmt."):
                _, index, rest = key.split(".", 2)
                out[key] = f"cmt_adapters.{index}.{rename_prefix(rest, inv_cmt)}"
            elif key.startswith("cme."):
                out[key] = "conditional_memory_encoder." + rename_prefix(key[len("cme."):], inv_cme)
            elif key.startswith("text_prompt."):
                out[key] = PROJECT_TEXT + key[len("text_prompt."):]
        except KeyError:  # a key of ours without an official name: messages use ours
            pass
    return out
