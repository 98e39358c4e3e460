"""Find a zero-shot detector's family in a local model folder and load it.

A folder is what `save_pretrained` writes for a model and its processor. Its
config.json `model_type` picks the family:

| model_type | model class (transformers) | processor |
|---|---|---|
| `grounding-dino` | `GroundingDinoForObjectDetection` | `GroundingDinoProcessor` |
| `mm-grounding-dino` | `MMGroundingDinoForObjectDetection` | `GroundingDinoProcessor` |
| `owlv2` | `Owlv2ForObjectDetection` | `Owlv2Processor` |

- Grounding DINO: Liu et al. 2023, "Grounding DINO: Marrying DINO with Grounded
  Pre-Training for Open-Set Object Detection";
- MM-Grounding-DINO: Zhao et al. 2024, "An Open and Comprehensive Pipeline for Unified
  Object Grounding and Detection"; LLMDet checkpoints (Fu et al. 2025, "LLMDet: Learning
  Strong Open-Vocabulary Object Detectors under the Supervision of Large Language
  Models") are Grounding DINO models too and load by whichever of these two
  model_types their config.json names;
- OWLv2: Minderer et al. 2023, "Scaling Open-Vocabulary Object Detection".

Everything is read with `local_files_only=True`: nothing is fetched from a network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

PathLike = Union[str, os.PathLike]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


class GroundingModelError(ValueError):
    """A detector folder that cannot be used: missing, without a file it needs, with an
    unreadable config.json, an unknown `model_type`, or weights transformers refuses.
    The message names the path."""


@dataclass(frozen=True)
class Family:
    """How one detector family is loaded and read.

    - `name`: the config.json `model_type`;
    - `model_class`, `processor_class`: class names in `transformers`;
    - `grounded`: True for the Grounding DINO kind (one caption string, boxes matched to
      its words, `post_process_grounded_object_detection`); False for the OWL kind (a
      list of queries per image, the processor's `post_process_object_detection`);
    - `tokenizer_files`: alternatives, each a tuple of files that together make a
      tokenizer (`tokenizer.json` alone, or the slow tokenizer's files).
    """

    name: str
    model_class: str
    processor_class: str
    grounded: bool
    tokenizer_files: tuple[tuple[str, ...], ...]


_BERT_TOKENIZER = (("tokenizer.json",), ("vocab.txt",))
_CLIP_TOKENIZER = (("tokenizer.json",), ("vocab.json", "merges.txt"))

FAMILIES: dict[str, Family] = {
    "grounding-dino": Family("grounding-dino", "GroundingDinoForObjectDetection",
                             "GroundingDinoProcessor", True, _BERT_TOKENIZER),
    "mm-grounding-dino": Family("mm-grounding-dino", "MMGroundingDinoForObjectDetection",
                                "GroundingDinoProcessor", True, _BERT_TOKENIZER),
    "owlv2": Family("owlv2", "Owlv2ForObjectDetection", "Owlv2Processor", False, _CLIP_TOKENIZER),
}


def read_family(folder: PathLike) -> Family:
    """The family of the model saved in `folder`, from its config.json `model_type`.

    Checks that the folder holds config.json, weights (one of WEIGHT_FILES), a processor
    config (one of PROCESSOR_FILES) and the family's tokenizer files. Raises
    GroundingModelError naming the folder or the file otherwise, and for a `model_type`
    not in FAMILIES (listing the known ones).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise GroundingModelError(f"grounding model folder {folder} {what}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise GroundingModelError(f"grounding model folder {folder} has no config.json ({config_path} is missing)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GroundingModelError(f"{config_path} could not be read as JSON: {exc}") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        known = ", ".join(sorted(FAMILIES))
        raise GroundingModelError(
            f"{config_path} has model_type {model_type!r}, which is not a zero-shot detector this "
            f"package loads (known: {known})")
    _require_any(folder, (tuple((name,) for name in WEIGHT_FILES)), "model weights")
    _require_any(folder, tuple((name,) for name in PROCESSOR_FILES), "processor config")
    _require_any(folder, family.tokenizer_files, "tokenizer")
    return family


def _require_any(folder: Path, alternatives: tuple[tuple[str, ...], ...], what: str) -> None:
    for files in alternatives:
        if all((folder / name).is_file() for name in files):
            return
    wanted = " or ".join(" + ".join(files) for files in alternatives)
    raise GroundingModelError(f"grounding model folder {folder} has no {what}: expected {wanted} in {folder}")


def load_model(folder: PathLike, device: Union[str, torch.device] = "cpu",
               dtype: Optional[torch.dtype] = None) -> tuple[Family, Any, Any]:
    """(family, model, processor) from a local folder; the model in eval mode on `device`.

    `dtype` (e.g. torch.float16 on a GPU) is the model's parameter dtype; None keeps the
    saved one. Raises GroundingModelError (see read_family), also when transformers
    lacks the family's classes or refuses the files (with its message and the folder),
    and when the weights lack any of the model's parameters (transformers would
    initialise those at random).
    """
    family = read_family(folder)
    import transformers  # deferred: importing transformers takes seconds

    missing = [name for name in (family.model_class, family.processor_class) if not hasattr(transformers, name)]
    if missing:
        raise GroundingModelError(
            f"{folder}: model_type {family.name!r} needs {' and '.join(missing)}, which transformers "
            f"{transformers.__version__} does not have")
    model_cls = getattr(transformers, family.model_class)
    processor_cls = getattr(transformers, family.processor_class)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model, info = model_cls.from_pretrained(os.fspath(folder), output_loading_info=True, **kwargs)
        processor = processor_cls.from_pretrained(os.fspath(folder), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
        raise GroundingModelError(
            f"{family.model_class} could not be loaded from {folder}: {type(exc).__name__}: {exc}") from exc
    missing = sorted(info.get("missing_keys") or ())
    if missing:  # transformers would fill them with random values and carry on
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise GroundingModelError(f"the weights in {folder} lack {len(missing)} of {family.model_class}'s "
                                  f"parameters: {shown}")
    model.eval().to(device)
    return family, model, processor
