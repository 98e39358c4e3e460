"""Captions to SAMWISE trackers: the tokenizer, the loaded adapter and the streaming
settings, behind one object the node asks for a tracker per caption.

The tokenizer is RoBERTa's byte-level BPE read from a local folder (`vocab.json` +
`merges.txt`, or `tokenizer.json`), through `transformers.RobertaTokenizer`; it gives
the ids fairseq's `roberta.encode` gives (<s> caption </s>), which SAMWISE feeds its
text encoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .adapter import SamwiseAdapter
from .checkpoint import SamwiseWeights
from .streaming import SamwiseTracker

MAX_TOKENS = 512  # RoBERTa's 514 positions less the two offsets fairseq reserves


class CaptionError(ValueError):
    """A caption that cannot be tracked (empty after tokenization, too long)."""


class TextModelError(ValueError):
    """A text model folder or file that is missing or unusable; names the path and the
    parameter that gave it."""


def load_tokenizer(folder: str | os.PathLike, parameter: str = "samwise_tokenizer"):
    """RoBERTa's tokenizer from `folder`.

    Raises TextModelError naming the folder, the missing files and `parameter`.
    """
    path = Path(folder).expanduser()
    if not str(folder):
        raise TextModelError(f"no tokenizer folder given: set the parameter {parameter} to a folder with "
                             "vocab.json and merges.txt (or tokenizer.json) of roberta-base")
    if not path.is_dir():
        raise TextModelError(f"tokenizer folder {path} (parameter {parameter}) does not exist")
    has_pair = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not has_pair and not (path / "tokenizer.json").is_file():
        raise TextModelError(f"tokenizer folder {path} (parameter {parameter}) has neither vocab.json + "
                             "merges.txt nor tokenizer.json")
    from transformers import RobertaTokenizer

    try:
        return RobertaTokenizer.from_pretrained(str(path))
    except Exception as exc:  # a corrupt json, a merges file of another format
        raise TextModelError(f"cannot read the tokenizer in {path} (parameter {parameter}): {exc}") from exc


class SamwiseCaptions:
    """The SAMWISE path: `tracker(caption)` gives a `SamwiseTracker` for the engine.

    `window` is T in frames: the causal window, or the clip length in `mode` clip (the
    official computation, results T-1 frames late); `cme` turns the conditional memory
    encoder on (as the official model runs).
    """

    path = "samwise"

    def __init__(self, sam: torch.nn.Module, adapter: SamwiseAdapter, tokenizer, window: int = 8,
                 cme: bool = True, cme_window: int = 4, mode: str = "causal"):
        if window < 1:
            raise ValueError(f"text window must be at least 1 frame, got {window}")
        self.sam, self.adapter, self.tokenizer = sam, adapter, tokenizer
        self.window, self.cme, self.cme_window, self.mode = window, cme, cme_window, mode

    @classmethod
    def from_files(cls, engine, model_name: str, checkpoint: str, tokenizer_folder: str,
                   window: int = 8, cme: bool = True, verbose: bool = False,
                   mode: str = "causal") -> "SamwiseCaptions":
        """Load an official SAMWISE checkpoint as `engine`'s weights (a
        `SegmentationEngine`; its `load_weights` writes the `sam.*` weights into the
        engine's SAM2, nothing changes unless the whole file is valid) and the tokenizer.

        Raises TextModelError for a missing file or folder; CheckpointError (from
        `load_samwise`, or the engine's when its weights come from another adapter's
        file) naming the first mismatching keys.
        """
        if not checkpoint:
            raise TextModelError("no SAMWISE checkpoint given: set the parameter samwise_checkpoint")
        if not Path(checkpoint).expanduser().is_file():
            raise TextModelError(f"SAMWISE checkpoint {checkpoint} (parameter samwise_checkpoint) does not exist")
        tokenizer = load_tokenizer(tokenizer_folder)
        adapter = engine.load_weights(SamwiseWeights(checkpoint, model_name, verbose))
        return cls(engine.model, adapter, tokenizer, window=window, cme=cme, mode=mode)

    def encode(self, caption: str) -> torch.Tensor:
        """The caption's token ids, (L,) int64 with <s> and </s>. Raises CaptionError."""
        ids = self.tokenizer(caption.strip(), add_special_tokens=True)["input_ids"]
        if len(ids) <= 2:
            raise CaptionError(f"caption {caption!r} has no tokens")
        if len(ids) > MAX_TOKENS:
            raise CaptionError(f"caption is {len(ids)} tokens long; the text encoder takes at most {MAX_TOKENS}")
        return torch.tensor(ids, dtype=torch.int64)

    def tracker(self, caption: str, input_ids: Optional[torch.Tensor] = None) -> SamwiseTracker:
        """A tracker for `caption` (or for given token ids)."""
        ids = self.encode(caption) if input_ids is None else input_ids
        return SamwiseTracker(self.sam, self.adapter, ids, window=self.window, cme_window=self.cme_window,
                              cme_enabled=self.cme, mode=self.mode)
