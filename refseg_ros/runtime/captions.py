"""Captions as engine targets, through whichever text path is configured; ROS-free, so
the node and the evaluation share it.

Two paths (docs/NODE.md, "Text targets"):
- `samwise`: an official SAMWISE checkpoint (its `sam.*` weights become the engine's
  SAM2) and RoBERTa's tokenizer from a folder; the caption's targets are decoded by the
  adapter in the causal streaming mode (`adapters.text.streaming`);
- `grounding`: a zero-shot detector from a folder (Grounding DINO, MM-Grounding-DINO,
  OWLv2) proposes a box for the caption, which SAM2 then tracks with memory; re-grounded
  when lost and, optionally, every `regrounding_interval` seconds.
`auto` takes SAMWISE when its checkpoint is given, else grounding when its model is
given; with neither, what the caches hold (`with_cached_models`): SAMWISE when the
engine's model is SAMWISE's SAM2 and its checkpoint and tokenizer are cached, else the
first detector of `models.AUTO_DETECTORS` in the Hugging Face cache; else none: captions
are then kept and listed as waiting, with the reason and the command that fetches a model
(`refseg-weights --for captions`). Model parameters take a folder or a hub id
(`models.local_model`); `samwise_checkpoint: auto` is the weights cache's file.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Optional, Protocol

from .. import models
from ..engine import SegmentationEngine
from .parameters import check_values, parameter


@dataclass
class TextSettings:
    """The text path's settings: the node parameters of the same names, with their
    defaults, ranges and meaning (runtime.parameters.PARAMETERS).

    text_window: SAMWISE's causal window T in frames; grounding_threshold: the detector
    score a box needs; regrounding_interval / grounding_retry: seconds (0: only when lost
    / on every frame while looking).
    """

    text_path: str = parameter("text_path")
    samwise_checkpoint: str = parameter("samwise_checkpoint")
    samwise_tokenizer: str = parameter("samwise_tokenizer")
    text_window: int = parameter("text_window")
    text_mode: str = parameter("text_mode")
    text_cme: bool = parameter("text_cme")
    grounding_model: str = parameter("grounding_model")
    grounding_threshold: float = parameter("grounding_threshold")
    regrounding_interval: float = parameter("regrounding_interval")
    grounding_retry: float = parameter("grounding_retry")

    def check(self) -> None:
        """Each value against its parameter's range or choices.

        Raises:
            ValueError: naming the parameter.
        """
        check_values(self)

    def chosen(self) -> str:
        """The path `auto` resolves to: samwise, grounding or none."""
        if self.text_path != "auto":
            return self.text_path
        if self.samwise_checkpoint:
            return "samwise"
        return "grounding" if self.grounding_model else "none"


def with_cached_models(settings: TextSettings, model_name: str) -> TextSettings:
    """`settings` with the models the caches hold filled in where none is set.

    - `text_path` auto with neither samwise_checkpoint nor grounding_model: SAMWISE
      (samwise_checkpoint auto) when `model_name` is SAMWISE's SAM2 and its checkpoint and
      RoBERTa's tokenizer are cached, else the first cached of `models.AUTO_DETECTORS`;
    - `text_path` grounding without grounding_model: the first cached detector;
    - a samwise_checkpoint without samwise_tokenizer: RoBERTa's tokenizer by its hub id.
    Reads the caches only; never downloads.
    """
    from ..adapters.text.checkpoint import SAM_MODEL

    settings = replace(settings)
    unset = not settings.samwise_checkpoint and not settings.grounding_model
    if settings.text_path == "auto" and unset and model_name == SAM_MODEL:
        if models.is_cached(models.MODELS["samwise"]) and models.cached_hub_model(models.ROBERTA):
            settings.samwise_checkpoint = "auto"
    if (settings.text_path == "grounding" or (settings.text_path == "auto" and unset and
                                              not settings.samwise_checkpoint)) and not settings.grounding_model:
        cached = [models.MODELS[n].source for n in models.AUTO_DETECTORS
                  if models.cached_hub_model(models.MODELS[n].source)]
        settings.grounding_model = cached[0] if cached else ""
    if settings.samwise_checkpoint and not settings.samwise_tokenizer:
        settings.samwise_tokenizer = models.ROBERTA
    return settings


def samwise_checkpoint_file(value: str) -> str:
    """The SAMWISE checkpoint a `samwise_checkpoint` value names: `auto` is the weights
    cache's file (ModelNotCached naming `refseg-weights samwise` when it is not there)."""
    if value != "auto":
        return value
    found = models.cached_file(models.MODELS["samwise"])
    if found is None:
        raise models.ModelNotCached(
            f"parameter samwise_checkpoint: auto, but the weights cache "
            f"{models.weights.cache_dir()} has no SAMWISE checkpoint; fetch it with `refseg-weights samwise` "
            "(or refseg-weights --for samwise) on a machine that is online")
    return str(found)


class CaptionPath(Protocol):
    """Adds caption targets to the engine; `path` is "samwise" or "grounding"."""

    path: str

    def add(self, engine: SegmentationEngine, stream_id: str, caption: str, *, label: str, target_id: int,
            replace: bool = False) -> None:
        """Track `caption` as target `target_id` on `stream_id`. Raises ValueError
        (e.g. CaptionError) for a caption the path cannot take."""

    def close(self) -> None:
        """Stop background work."""

    def update(self, settings: TextSettings) -> None:
        """Use the live parameters of `settings` (runtime.parameters) from every caption
        target's next decision on, the targets added before and after. Raises ValueError
        for a value the path cannot take."""


class SamwisePath:
    """Caption targets decoded by the SAMWISE adapter."""

    path = "samwise"

    def __init__(self, captions):
        self.captions = captions  # adapters.text.captions.SamwiseCaptions

    def add(self, engine: SegmentationEngine, stream_id: str, caption: str, *, label: str, target_id: int,
            replace: bool = False) -> None:
        engine.add_tracked_target(stream_id, self.captions.tracker(caption), label=label, target_id=target_id,
                                  replace=replace)

    def close(self) -> None:
        pass

    def update(self, settings: TextSettings) -> None:
        """Nothing to update: SAMWISE's settings are read-only after configure."""


class GroundingPath:
    """Caption targets found by a zero-shot detector and tracked by SAM2."""

    path = "grounding"

    def __init__(self, detector, threshold: float, interval_s: float, retry_s: float,
                 synchronous: bool = False):
        from ..adapters.grounding import GroundingWorker, RegroundPolicy

        self.worker = GroundingWorker(detector)
        self.threshold, self.synchronous = threshold, synchronous
        self.policy = RegroundPolicy(interval_s=interval_s, retry_s=retry_s)
        self._proposers: weakref.WeakSet = weakref.WeakSet()  # the targets' GroundingProposers

    def add(self, engine: SegmentationEngine, stream_id: str, caption: str, *, label: str, target_id: int,
            replace: bool = False) -> None:
        from ..adapters.grounding.proposer import GroundingProposer

        if not caption.strip():
            raise ValueError("caption is empty")
        proposer = GroundingProposer(self.worker, caption, self.threshold, self.policy, wait=self.synchronous)
        engine.add_proposed_target(stream_id, proposer, label=label, target_id=target_id, replace=replace)
        self._proposers.add(proposer)

    def close(self) -> None:
        self.worker.close(timeout=5.0)

    def update(self, settings: TextSettings) -> None:
        """grounding_threshold (detector score), regrounding_interval and grounding_retry
        (seconds) of `settings`, used by every caption target's next grounding decision.
        Raises ValueError for a negative or non-finite time (RegroundPolicy)."""
        from ..adapters.grounding import RegroundPolicy

        policy = RegroundPolicy(interval_s=settings.regrounding_interval, retry_s=settings.grounding_retry)
        self.threshold, self.policy = settings.grounding_threshold, policy
        for proposer in list(self._proposers):
            proposer.threshold, proposer.policy = self.threshold, policy


def open_caption_path(settings: TextSettings, engine: SegmentationEngine, model_name: str,
                      synchronous: bool = False) -> tuple[Optional[CaptionPath], str]:
    """The configured path, or None and why captions wait. Loading errors (a missing
    folder, a checkpoint that does not fit the engine's model) are returned as the
    reason, never raised: the node keeps running without captions.

    `model_name` is the engine's model (a SAMWISE checkpoint must be for it);
    `synchronous` makes grounding wait for each detection on the frame it was asked on
    (offline evaluation: results independent of timing; never in the node).
    """
    settings = with_cached_models(settings, model_name)
    chosen = settings.chosen()
    if chosen == "none":
        return None, ("no text model configured or cached: fetch one with `refseg-weights --for captions` "
                      "(text_path auto then finds it), or set grounding_model or samwise_checkpoint "
                      "(docs/NODE.md, 'Text targets'); captions are kept, not tracked")
    try:
        if chosen == "samwise":
            from ..adapters.text.captions import SamwiseCaptions

            checkpoint = samwise_checkpoint_file(settings.samwise_checkpoint)
            tokenizer = models.local_model(settings.samwise_tokenizer, "samwise_tokenizer")
            # the checkpoint's sam.* weights become the engine's SAM2 (engine.load_weights)
            captions = SamwiseCaptions.from_files(engine, model_name, checkpoint,
                                                  tokenizer, window=settings.text_window,
                                                  cme=settings.text_cme, mode=settings.text_mode)
            what = (f"causal window {settings.text_window}" if settings.text_mode == "causal" else
                    f"clips of {settings.text_window}, results {settings.text_window - 1} frames late")
            return SamwisePath(captions), f"captions tracked by SAMWISE ({what})"
        from ..adapters.grounding import GroundingDetector

        if not settings.grounding_model:
            raise ValueError("no grounding model folder given or cached: set the parameter grounding_model, "
                             "or fetch one with `refseg-weights --for captions`")
        folder = models.local_model(settings.grounding_model, "grounding_model")
        detector = GroundingDetector.from_folder(folder, device=engine.device)
        path = GroundingPath(detector, settings.grounding_threshold, settings.regrounding_interval,
                             settings.grounding_retry, synchronous)
        return path, f"captions found by {detector.family.name} ({settings.grounding_model}) and tracked by SAM2"
    except Exception as exc:  # a missing folder, a corrupt file, a checkpoint for another model
        return None, (f"the {chosen} text path could not be loaded ({type(exc).__name__}: {exc}); "
                      "captions are kept, not tracked")
