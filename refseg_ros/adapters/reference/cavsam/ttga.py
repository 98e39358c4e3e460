"""Test-time geometric alignment (TTGA) of a reference target's image features.

CAV-SAM ("Correspondence as Video", Wang et al., ICCV 2025, arXiv 2508.07759) treats a
reference image and the image searched as two frames of a pseudo video for SAM2, and
its Test-Time Geometric Alignment module tunes SAM2 per reference with an augmentative
cyclic-consistency loss. Here, per reference target:

- a copy of SAM2's FPN neck (`model.image_encoder.neck`) is tuned; the Hiera trunk and
  every other module stay frozen and shared with the engine (the trunk runs under
  no_grad, and gradients are taken for the copy's parameters only, so nothing of the
  shared model is written, not even a `.grad`);
- one training step takes an example (reference image + mask) and an augmented view of
  it (`augment.augment_views`) and runs two pseudo videos through SAM2's tracking:
  forward, the reference is the conditioning frame (its mask as the prompt, decoded and
  memory-encoded as the engine pins a mask prompt) and the view is the next frame,
  whose predicted mask is scored against the view's mask; backward (the cycle), the
  view with its *predicted* mask (soft, as SAM2 writes a tracked frame's memory, so the
  gradient runs through the forward prediction too) is the conditioning frame and the
  reference is the next frame, scored against the reference mask;
- loss per prediction: binary cross-entropy + Dice on the S x S mask logits, plus a
  binary cross-entropy pushing the object-score logit to "present" (every view shows
  the object). The paper's exact loss terms are not reproduced here; these are this
  package's choice, in the spirit of SAM2's own training loss (mask + presence terms);
- Adam, lr 1e-3, weight decay 5e-4 (L2 in the gradient, as torch.optim.Adam applies
  it), cosine annealing of the learning rate to 0 over `steps` (100 by default).

`TtgaTuner.run` is synchronous; `TtgaJob` runs it on a background thread, so frames keep
flowing while a target is tuned; `TtgaTracker` is the engine-side target
(`seams.TargetTracker` with `variant_key` None): it receives the shared plain pass with
the trunk's stage maps (`FrameFeatures.trunk`), runs its own neck on them and tracks as
SAM2 does; when its job finishes it swaps the tuned neck in between frames. The tuned
neck serves that target only.

The DBST half of CAV-SAM (a diffusion model's semantic transition sequence) lives in
`dbst_proposer`; a TTGA target's transition frames are encoded through its own neck
(`TtgaTracker.current_encoder`), so both halves meet in one target.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from refseg_ros.engine import heads
from refseg_ros.engine.features import FrameFeatures, neck_features
from refseg_ros.engine.frames import PIXEL_MEAN, PIXEL_STD, FramePreprocessor, check_frame
from refseg_ros.engine.memory import MemoryEntry, TargetMemory
from refseg_ros.engine.prompts import PromptInputs, check_prompt, to_model_inputs
from refseg_ros.engine.seams import PlainFrame, Tracked
from refseg_ros.engine.types import MaskPrompt, Prompt

from .augment import AffineRange, PhotometricRange, augment_views

# One teaching example: an H x W x 3 uint8 RGB image and the target on it, as a prompt or
# as an H x W mask (nonzero = object).
Example = tuple[np.ndarray, Union[Prompt, np.ndarray]]

STEPS = 100
LR = 1e-3
WEIGHT_DECAY = 5e-4
VIEWS = 8


class TtgaCancelled(RuntimeError):
    """The tuning job was cancelled before it finished."""


@dataclass
class TtgaResult:
    """A finished tuning run.

    neck: the tuned copy of SAM2's FPN neck (eval mode, parameters without grad, on the
    model's device); losses: the training loss of each step (float, before that step's
    update; the sum of the forward and cycle losses); seconds: wall time of the run,
    setup (views and their trunk passes) included; setup_seconds: that setup alone.
    """

    neck: torch.nn.Module
    losses: list[float]
    seconds: float = 0.0
    setup_seconds: float = 0.0


def _as_prompt(target: Union[Prompt, np.ndarray]) -> Prompt:
    if isinstance(target, np.ndarray):
        return MaskPrompt(target.astype(bool))
    return target


def _check_examples(examples: Sequence[Example], image_size: int) -> list[tuple[np.ndarray, Prompt]]:
    if not examples:
        raise ValueError("TTGA needs at least one example (image, prompt or mask)")
    checked = []
    for image, target in examples:
        prompt = _as_prompt(target)
        check_frame(image)
        check_prompt(prompt, image.shape[0], image.shape[1], image_size)
        checked.append((image, prompt))
    return checked


def prompt_entry(model: torch.nn.Module, features: FrameFeatures, inputs: PromptInputs,
                 index: int) -> tuple[MemoryEntry, heads.Decoded]:
    """The conditioning memory a prompt leaves on a frame, exactly as the engine pins a
    reference (`SegmentationEngine._apply_prompt`): decoded without memory, memory encoded
    from the low-resolution output upsampled to S x S, binarised (SAM2's rule for
    prompted frames). Differentiable in `features` where SAM2 is.

    features: the frame's FrameFeatures; inputs: the prompt at model size; index: the
    frame number the entry takes. Returns (entry, decoded).
    """
    decoded = heads.decode_prompt(model, features, inputs)
    size = int(model.image_size)
    high = F.interpolate(decoded.low_res_masks, size=(size, size), mode="bilinear", align_corners=False)
    feats, pos = heads.encode_memory(model, features, high, decoded.object_score_logits, from_prompt=True)
    return MemoryEntry(index, decoded.obj_ptr, feats, pos), decoded


def _tracking_multimask(model: torch.nn.Module) -> bool:
    """SAM2's multimask rule on a tracked (unprompted) frame, as the engine applies it."""
    return bool(model.multimask_output_in_sam and model.multimask_output_for_tracking and (
        model.multimask_min_pt_num <= 0 <= model.multimask_max_pt_num))


def track_frame(model: torch.nn.Module, features: FrameFeatures, memory: TargetMemory, index: int,
                gate_by_object_score: bool = True) -> heads.Decoded:
    """One tracked frame of one target: memory attention over `memory.select(index)`,
    then the mask decoder (SAM2's tracking step, as `SegmentationEngine._track_group` runs
    it for a batch of one). Writes nothing to `memory`. Returns the decoder output
    (low-res (1, 1, S/4, S/4) and S x S logits, object pointer (1, C), score (1, 1))."""
    pix_feat = heads.attend_memory(model, features, [memory.select(index)])
    return heads.decode(model, pix_feat, features.high_res(1), multimask=_tracking_multimask(model),
                        gate_by_object_score=gate_by_object_score)


def mask_loss(logits: torch.Tensor, target: torch.Tensor, object_score_logits: torch.Tensor) -> torch.Tensor:
    """BCE + Dice on mask logits plus presence BCE (see the module docstring).

    logits: (1, 1, S, S) mask logits; target: (1, 1, S, S) float {0, 1};
    object_score_logits: (1, 1). Returns a float32 scalar, >= 0; it approaches 0 for a
    confident, exact prediction.
    """
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = 1.0 - (2.0 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)
    presence = F.binary_cross_entropy_with_logits(object_score_logits.float(),
                                                  torch.ones_like(object_score_logits, dtype=torch.float32))
    return bce + dice + presence


@dataclass
class _Pair:
    """One example at model size: the reference's trunk maps, prompt inputs and mask, and
    the trunk maps and masks of its augmented views."""

    trunk: list[torch.Tensor]
    inputs: PromptInputs
    mask: torch.Tensor  # (1, 1, S, S) float {0, 1}
    views: list[tuple[list[torch.Tensor], torch.Tensor]] = field(default_factory=list)


class TtgaTuner:
    """Tunes a copy of SAM2's FPN neck for one target (see the module docstring).

    model: the engine's SAM2 (shared; only read); examples: (H x W x 3 uint8 RGB image,
    Prompt or H x W mask) pairs of the target; a box or points prompt's mask target is the
    untuned model's decoded mask (logits > 0) on that image. steps: optimiser steps
    (100); lr, weight_decay: Adam's (1e-3, 5e-4); views: augmented views drawn per example
    before training (their trunk maps are kept for the run: 45 MiB each for hiera_t
    at 1024 in fp32, 68 MiB for hiera_l; half under bf16 autocast); each step takes example
    `step % k` and its view `(step // k) % views`. seed: seeds the augmentation draws.
    preprocess: the engine's `FramePreprocessor` (a device-rule one for the model's
    size and device when None). autocast: the dtype of the forward passes (None: fp32;
    the default takes bf16 on CUDA and fp32 elsewhere, as the engine's "auto" precision).
    neck: the neck to start from (a copy of the model's when None); it is copied, never
    changed in place.

    Raises ValueError (no examples, bad sizes) and InvalidPromptError (a prompt that does
    not fit its image) at construction; heavy work happens in `run()` only.
    """

    def __init__(self, model: torch.nn.Module, examples: Sequence[Example], steps: int = STEPS,
                 lr: float = LR, weight_decay: float = WEIGHT_DECAY, views: int = VIEWS, seed: int = 0,
                 preprocess: Optional[FramePreprocessor] = None,
                 autocast: Union[torch.dtype, None, str] = "auto",
                 neck: Optional[torch.nn.Module] = None,
                 photometric: PhotometricRange = PhotometricRange(), affine: AffineRange = AffineRange()):
        if steps < 1 or views < 1:
            raise ValueError(f"steps and views must be >= 1, got {steps} and {views}")
        self.model = model
        self.image_size = int(model.image_size)
        self.examples = _check_examples(examples, self.image_size)
        self.device = next(model.parameters()).device
        self.steps, self.lr, self.weight_decay = steps, lr, weight_decay
        self.views, self.seed = views, seed
        self.preprocess = preprocess or FramePreprocessor(self.image_size, self.device)
        if autocast == "auto":
            autocast = torch.bfloat16 if self.device.type == "cuda" else None
        self.autocast = autocast
        self.start_neck = neck
        self.photometric, self.affine = photometric, affine
        self._view: Optional[_TuningView] = None

    def _tuning_model(self) -> "_TuningView":
        """The model with the tuner's own memory attention (made on first use)."""
        if self._view is None:
            with torch.inference_mode(False):
                self._view = _TuningView(self.model)
        return self._view

    # ------------------------------------------------------------------ helpers
    def _forward_context(self):
        if self.autocast is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _trunk(self, image: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad(), self._forward_context():
            return [t.detach() for t in self.model.image_encoder.trunk(image)]

    def _prepare(self, neck: torch.nn.Module) -> list[_Pair]:
        """Preprocess the examples, draw their views and run the frozen trunk on all."""
        model, size = self._tuning_model(), self.image_size
        mean = torch.tensor(PIXEL_MEAN, device=self.device).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=self.device).view(3, 1, 1)
        generator = torch.Generator().manual_seed(self.seed)
        pairs = []
        for image, prompt in self.examples:
            x = self.preprocess(image)  # (1, 3, S, S) normalised
            inputs = to_model_inputs(prompt, image.shape[0], image.shape[1], size, self.device)
            trunk = self._trunk(x)
            if inputs.mask is not None:
                mask = inputs.mask.float()
            else:  # the untuned model's answer to a box / clicks is the target to keep
                with torch.no_grad(), self._forward_context():
                    features = neck_features(model, trunk, neck)[0]
                    mask = (heads.decode_prompt(model, features, inputs).high_res_masks > 0).float()
                if not bool(mask.any()):
                    raise ValueError("the prompt decodes to an empty mask on its example; TTGA has no target")
            pair = _Pair(trunk, inputs, mask)
            plain = (x[0] * std + mean).clamp(0.0, 1.0)
            for view, view_mask in augment_views(plain, mask[0, 0] > 0.5, self.views, generator,
                                                 self.photometric, self.affine):
                pair.views.append((self._trunk(((view - mean) / std)[None]), view_mask[None, None].float()))
            pairs.append(pair)
        return pairs

    def step_loss(self, neck: torch.nn.Module, pair: _Pair, view: int) -> torch.Tensor:
        """The augmentative cyclic-consistency loss of one (example, view) pair; a float32
        scalar with a graph to `neck`'s parameters (forward + cycle, see the module
        docstring)."""
        model = self._tuning_model()
        view_trunk, view_mask = pair.views[view]
        with self._forward_context():
            ref = neck_features(model, pair.trunk, neck)[0]
            aug = neck_features(model, view_trunk, neck)[0]
            # forward: the reference (frame 0, prompted) conditions the view (frame 1)
            memory = TargetMemory(model.num_maskmem, model.max_obj_ptrs_in_encoder)
            entry, _ = prompt_entry(model, ref, pair.inputs, 0)
            memory.pin(entry)
            forward = track_frame(model, aug, memory, 1, gate_by_object_score=False)
            # cycle: the view with its predicted mask (frame 0) conditions the reference (frame 1)
            feats, pos = heads.encode_memory(model, aug, forward.high_res_masks,
                                             forward.object_score_logits, from_prompt=False)
            back = TargetMemory(model.num_maskmem, model.max_obj_ptrs_in_encoder)
            back.pin(MemoryEntry(0, forward.obj_ptr, feats, pos))
            cycle = track_frame(model, ref, back, 1, gate_by_object_score=False)
        return (mask_loss(forward.high_res_masks, view_mask, forward.object_score_logits)
                + mask_loss(cycle.high_res_masks, pair.mask, cycle.object_score_logits))

    # ---------------------------------------------------------------------- run
    def run(self, cancel: Optional[threading.Event] = None,
            progress: Optional[Callable[[int, float], None]] = None) -> TtgaResult:
        """Tune and return the result (synchronous; call it from any thread).

        cancel: set it to stop between steps (raises TtgaCancelled); progress(step,
        loss) is called after each step (step counts from 1). Gradients are enabled
        here whatever the caller's grad mode (the trunk alone runs under no_grad), and
        only the neck copy's parameters receive them.
        """
        start = time.perf_counter()
        source = self.start_neck if self.start_neck is not None else self.model.image_encoder.neck
        with torch.inference_mode(False), torch.enable_grad():
            neck = copy_neck(source)
            neck.train(False)
            for param in neck.parameters():
                param.requires_grad_(True)
            params = [p for p in neck.parameters()]
            stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
            with (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
                pairs = self._prepare(neck)
                setup = time.perf_counter() - start
                optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
                schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.steps)
                losses: list[float] = []
                for step in range(self.steps):
                    if cancel is not None and cancel.is_set():
                        raise TtgaCancelled(f"cancelled after {step} of {self.steps} steps")
                    pair = pairs[step % len(pairs)]
                    loss = self.step_loss(neck, pair, (step // len(pairs)) % self.views)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                    for param, grad in zip(params, grads):
                        param.grad = None if grad is None else grad.detach()
                    optimizer.step()
                    schedule.step()
                    losses.append(float(loss.detach()))
                    if progress is not None:
                        progress(step + 1, losses[-1])
                if stream is not None:
                    stream.synchronize()  # the tuned weights are complete before another stream reads them
            for param in params:
                param.grad = None
            if stream is not None:  # weights allocated on the default stream, where the engine reads them
                neck = copy_module(neck)
            neck.requires_grad_(False)
        return TtgaResult(neck, losses, time.perf_counter() - start, setup)


def copy_module(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of a SAM2 module with parameters of its own, safe to make while another
    thread runs the original: position-encoding caches (dicts the original fills as it
    runs) start empty, tensors the original made under inference mode (RoPE frequencies)
    come out as normal tensors, and an instance-level `forward` (the engine's
    torch.compile wrapper, bound to the original) is dropped."""
    memo: dict = {}
    for sub in module.modules():
        cache = getattr(sub, "cache", None)
        if isinstance(cache, dict):
            memo[id(cache)] = {}
    with torch.inference_mode(False):
        copied = copy.deepcopy(module, memo)
    for sub in copied.modules():
        sub.__dict__.pop("forward", None)
    return copied


def copy_neck(neck: torch.nn.Module) -> torch.nn.Module:
    """A target's own copy of SAM2's FPN neck (`copy_module`)."""
    return copy_module(neck)


class _TuningView:
    """The shared model as the tuner sees it: every attribute is the model's, except the
    memory attention, a private copy (its RoPE frequencies are recomputed lazily, and
    those the engine's thread computes under inference mode cannot enter a graph)."""

    def __init__(self, model: torch.nn.Module):
        self._model = model
        self.memory_attention = copy_module(model.memory_attention)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class TtgaJob:
    """A `TtgaTuner` run on a daemon thread.

    `start()` returns at once; `done` says whether the run ended (finished, failed or
    cancelled); `steps_done` and `losses` follow it; `result(timeout)` waits and returns
    the `TtgaResult`, or raises the run's exception (TtgaCancelled after `cancel()`),
    or TimeoutError when `timeout` seconds pass first. `on_done(job)`, if given, is
    called on the job's thread when the run ends.
    """

    def __init__(self, tuner: TtgaTuner, on_done: Optional[Callable[["TtgaJob"], None]] = None):
        self.tuner = tuner
        self.on_done = on_done
        self.losses: list[float] = []
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._result: Optional[TtgaResult] = None
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "TtgaJob":
        if self._thread is not None:
            raise RuntimeError("the job has been started already")
        self._thread = threading.Thread(target=self._run, name="ttga", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self.tuner.run(self._cancel, lambda step, loss: self.losses.append(loss))
        except BaseException as exc:  # handed to result()
            self._error = exc
        finally:
            self._finished.set()
            if self.on_done is not None:
                self.on_done(self)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def failed(self) -> bool:
        """Ended without a result (an error or a cancellation)."""
        return self.done and self._result is None

    def cancel(self) -> None:
        """Ask the run to stop before its next step; it ends with TtgaCancelled."""
        self._cancel.set()

    def result(self, timeout: Optional[float] = None) -> TtgaResult:
        if self._thread is None:
            raise RuntimeError("the job has not been started")
        if not self._finished.wait(timeout):
            raise TimeoutError(f"TTGA still running after {timeout} s ({self.steps_done} steps done)")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class TtgaTracker:
    """An engine target tracked through its own (tuned) FPN neck (`seams.TargetTracker`).

    `variant_key` is None: the engine hands `track` a `PlainFrame` whose features carry
    the shared trunk pass (`FrameFeatures.trunk`); the tracker runs its neck on those maps
    and tracks exactly as the engine tracks a plain reference target: memory attention
    over the target's memory, the mask decoder, memory encoding of the S x S output and a
    push unless judged absent with `keep_memory_when_absent`.

    model: the engine's SAM2; examples: the target's teaching examples (as for
    `TtgaTuner`); on the first tracked frame `index` they are pinned as conditioning
    memories at frames index-1, index-2, ... (where the engine pins `add_target(...,
    image=)` and `add_reference` examples), built inside the engine's compute context so
    that precision and autocast are the engine's. One tracker may serve the target on
    several streams: each stream's memory gets its references on its own first frame
    (and again with each swapped-in neck). neck: the neck to start with (an
    untuned copy of the model's when None). job: a `TtgaJob` whose tuned neck replaces
    the current one between frames once it finishes (`swap_neck`); a job that fails or
    is cancelled leaves the neck as it is (`job_error` says why). The job is cancelled
    when the tracker is garbage-collected (its target forgotten).
    preprocess: the engine's `FramePreprocessor`, so the examples are seen as the engine
    sees images (a device-rule one when None); keep_memory_when_absent: the engine's
    `EngineConfig.keep_memory_when_absent`.
    """

    variant_key = None

    def __init__(self, model: torch.nn.Module, examples: Sequence[Example], *,
                 neck: Optional[torch.nn.Module] = None, job: Optional[TtgaJob] = None,
                 preprocess: Optional[FramePreprocessor] = None, keep_memory_when_absent: bool = True):
        self.model = model
        self.image_size = int(model.image_size)
        self.examples = _check_examples(examples, self.image_size)
        device = next(model.parameters()).device
        self.preprocess = preprocess or FramePreprocessor(self.image_size, device)
        self.neck = copy_neck(neck if neck is not None else model.image_encoder.neck)
        self.neck.requires_grad_(False)
        self.neck.train(False)
        self.keep_memory_when_absent = keep_memory_when_absent
        self.job = job
        self.job_error: Optional[BaseException] = None
        self.swaps = 0  # necks swapped in so far
        self._pending: Optional[torch.nn.Module] = None
        # per target memory (one per stream the target is on): the frames its references
        # are pinned at and the neck (swap count) they were built with
        self._pinned: "weakref.WeakKeyDictionary[TargetMemory, tuple[list[int], int]]" = \
            weakref.WeakKeyDictionary()
        self._inputs = [(self.preprocess(image), to_model_inputs(prompt, image.shape[0], image.shape[1],
                                                                 self.image_size, device))
                        for image, prompt in self.examples]
        if job is not None:
            weakref.finalize(self, job.cancel)

    def new_variant(self):
        raise RuntimeError("a TTGA target uses the plain pass (variant_key None); it has no variant")

    def close(self) -> None:
        """Cancel the tuning job, if one runs (the target is forgotten or rebuilt)."""
        if self.job is not None:
            self.job.cancel()

    def swap_neck(self, neck: torch.nn.Module) -> None:
        """Use `neck` from the next frame on (thread-safe; it takes effect between frames).
        The pinned references are rebuilt with it; the recent frames' memories, written
        with the old neck, age out of the window as SAM2's do."""
        self._pending = neck

    @property
    def tuned(self) -> bool:
        return self.swaps > 0

    def current_encoder(self) -> tuple[int, Callable[[torch.Tensor], FrameFeatures]]:
        """(version, encode): this target's image encoder as it is now, for images that are
        not stream frames (its DBST transition frames, `dbst_proposer.TransitionEncoder`).

        version: the number of necks swapped in so far (`swaps`, counting one swapped in
        or tuned and not yet in use; it changes with the neck). encode(image): a
        preprocessed (1, 3, S, S) float image (the engine's `FramePreprocessor` output) to
        its FrameFeatures, through the shared trunk and the neck this target's next
        tracked frame is decoded with: the one in use, or the one swapped in
        (`swap_neck`) or finished tuning, to be used from that frame on (kept, whatever is
        swapped in later). Thread-safe (it only reads).
        """
        pending, job = self._pending, self.job
        if pending is None and job is not None and job.done and not job.failed:
            pending = job.result(0).neck  # finished: the tracker swaps it in on its next frame
        if pending is not None:
            version, neck = self.swaps + 1, pending
        else:
            version, neck = self.swaps, self.neck  # the version first: never newer than the neck
        model = self.model

        def encode(image: torch.Tensor) -> FrameFeatures:
            return neck_features(model, model.image_encoder.trunk(image), neck)[0]

        return version, encode

    def _collect(self) -> None:
        job = self.job
        if job is not None and job.done:
            self.job = None
            try:
                self.swap_neck(job.result(0).neck)
            except BaseException as exc:  # a failed or cancelled run keeps the current neck
                self.job_error = exc
        pending, self._pending = self._pending, None
        if pending is not None:
            self.neck = pending
            self.swaps += 1

    def _pin_references(self, model: torch.nn.Module, memory: TargetMemory, index: int) -> None:
        """Pin (or re-pin, after a swap) the references into this stream's memory."""
        pinned = self._pinned.get(memory)
        if pinned is not None and pinned[1] == self.swaps:
            return
        below = min([index, *memory.conditioning])  # below anything a proposer pinned already
        at = pinned[0] if pinned is not None else [below - 1 - k for k in range(len(self._inputs))]
        for (image, inputs), frame in zip(self._inputs, at):
            trunk = model.image_encoder.trunk(image)
            features = neck_features(model, trunk, self.neck)[0]
            entry, _ = prompt_entry(model, features, inputs, frame)
            memory.pin(entry)
        self._pinned[memory] = (at, self.swaps)

    def track(self, model: torch.nn.Module, encoded: PlainFrame, memory: TargetMemory, index: int,
              frame_hw: tuple[int, int]) -> Tracked:
        """Track frame `index`; `encoded.features.trunk` must hold the plain trunk maps
        (`engine.features.encode_image` keeps them). Returns low-res (1, 1, S/4, S/4)
        logits and the (1, 1) object score; the engine resizes them to `frame_hw`.

        Raises ValueError when the features carry no trunk maps.
        """
        trunk = encoded.features.trunk
        if trunk is None:
            raise ValueError("TTGA tracking needs the plain pass's trunk maps (FrameFeatures.trunk is None)")
        self._collect()
        self._pin_references(model, memory, index)
        features = neck_features(model, trunk, self.neck)[0]
        decoded = track_frame(model, features, memory, index)
        feats, pos = heads.encode_memory(model, features, decoded.high_res_masks, decoded.object_score_logits,
                                         from_prompt=False)
        absent = float(decoded.object_score_logits.flatten()[0]) <= 0
        if not (absent and self.keep_memory_when_absent):
            memory.push(MemoryEntry(index, decoded.obj_ptr, feats, pos))
        return Tracked(decoded.low_res_masks, decoded.object_score_logits)


def start_ttga(model: torch.nn.Module, examples: Sequence[Example], *, steps: int = STEPS, lr: float = LR,
               weight_decay: float = WEIGHT_DECAY, views: int = VIEWS, seed: int = 0,
               preprocess: Optional[FramePreprocessor] = None,
               keep_memory_when_absent: bool = True) -> TtgaTracker:
    """A `TtgaTracker` for `examples` with its tuning job already running: the target is
    tracked with the untuned neck (as a plain reference target) until the job finishes,
    then with the tuned one. Pass it to `SegmentationEngine.add_tracked_target`."""
    tuner = TtgaTuner(model, examples, steps=steps, lr=lr, weight_decay=weight_decay, views=views,
                      seed=seed, preprocess=preprocess)
    job = TtgaJob(tuner).start()
    return TtgaTracker(model, examples, job=job, preprocess=preprocess,
                       keep_memory_when_absent=keep_memory_when_absent)


__all__ = [
    "Example", "TtgaCancelled", "TtgaJob", "TtgaResult", "TtgaTracker", "TtgaTuner", "augment_views",
    "copy_module", "copy_neck", "mask_loss", "prompt_entry", "start_ttga", "track_frame",
]
