"""The streaming engine: frames in one at a time, every target's mask out.

One model serves several streams (cameras). Each frame is encoded once and shared by all
targets of its stream; targets whose memory layouts match are tracked as one batch; the
frames of several streams stepped together (`step_many`) share one batched encoder call.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Hashable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import heads
from .config import EngineConfig
from .encoders import ImageEncoder, TorchEncoder, build_encoder
from .errors import (CheckpointError, DuplicateTargetError, EncoderBackendError, InvalidFrameError, InvalidPromptError,
                     StepsFailed, UnknownStreamError, UnknownTargetError)
from .features import FrameFeatures
from .frames import FramePreprocessor, check_frame
from .memory import MemoryEntry, MemorySelection, TargetMemory
from .model import Sam2Checkpoint, WeightsSource, build_model, resolve_device
from .prompts import check_prompt, to_model_inputs
from .seams import Absent, FeatureVariant, PlainFrame, Proposer, Seed, TargetTracker, Tracked
from .types import Prompt, StepResult, TargetResult, TargetState
from .weights import cached_checkpoint


def config_checkpoint(config: EngineConfig) -> Optional[str]:
    """The SAM2 checkpoint file `config.checkpoint` names: "auto" is the weights cache's
    file for `config.model` (None when the cache has none); None: random weights."""
    if config.checkpoint == "auto":
        found = cached_checkpoint(config.model)
        return str(found) if found else None
    return config.checkpoint


@dataclass
class Seeds:
    """What a target's proposer pinned: the frames of its seeds (conditioning memories
    made from prompts on stream frames, oldest first) and the indices of the latest
    `Seed.memories` (entries made from images that are not stream frames)."""

    frames: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)

    def seeded_on(self, index: int) -> bool:
        """Whether the newest seed came on frame `index`."""
        return bool(self.frames) and self.frames[-1] == index

    def pin_memories(self, memory: TargetMemory, entries: list[MemoryEntry]) -> None:
        """Pin `entries` just before the earliest conditioning entry of `memory` (the
        previous set goes first), keeping their order."""
        for index in self.extra:
            memory.unpin(index)
        earliest = min(memory.conditioning, default=0)
        self.extra = []
        for k, entry in enumerate(entries):
            index = earliest - len(entries) + k
            memory.pin(MemoryEntry(index, entry.obj_ptr, entry.maskmem_features, entry.maskmem_pos_enc))
            self.extra.append(index)

    def forget_old(self, memory: TargetMemory, keep: int) -> None:
        """Keep the newest `keep` (at least 1) seeds pinned; older ones leave `memory`."""
        while len(self.frames) > max(keep, 1):
            memory.unpin(self.frames.pop(0))


@dataclass
class Target:
    """A tracked object: its memory, its state, and the adapters' hooks (seams.py).

    Without a `tracker`, SAM2's own tracking decodes it (batched with the stream's other
    plain targets); with one, the tracker does. A `proposer` looks for it while it is not
    tracked.
    """

    target_id: int
    label: str
    memory: TargetMemory
    tracker: Optional[TargetTracker] = None  # an adapter's own features and tracking (seams.py)
    proposer: Optional[Proposer] = None  # looks for the target while it is not tracked (seams.py)
    pending: Optional[Prompt] = None  # a prompt waiting for the stream's next frame
    state: TargetState = TargetState.ACQUIRING
    absent_frames: int = 0
    last_box: Optional[tuple[int, int, int, int]] = None
    seeds: Seeds = field(default_factory=Seeds)


@dataclass
class FrameOutputs:
    """What one `step` collects for its stream's targets, stage after stage.

    low_res / scores: target id -> (1, 1, S/4, S/4) mask logits and (1, 1) object score
    logits of the targets decoded on this frame; frame_logits: those a tracker mapped to
    the frame itself, (1, 1, H, W); withheld: targets looked for and not found (absent on
    this frame, no mask); pending: targets whose tracker gives this frame's result later;
    late: results of earlier frames completed now, as (target, frame index, Tracked);
    seed_memories: a proposer's memories for tracker targets, pinned once the trackers
    ran; events: human-readable state changes, in order.
    """

    index: int
    size: tuple[int, int]  # (H, W) of the frame
    low_res: dict[int, torch.Tensor] = field(default_factory=dict)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    frame_logits: dict[int, torch.Tensor] = field(default_factory=dict)
    withheld: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)
    late: list[tuple[Target, int, Tracked]] = field(default_factory=list)
    seed_memories: list[tuple[Target, list[MemoryEntry]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def decoded(self, target_id: int, low_res: torch.Tensor, scores: torch.Tensor,
                frame_logits: Optional[torch.Tensor] = None) -> None:
        """Record a target's output on this frame."""
        self.low_res[target_id] = low_res
        self.scores[target_id] = scores
        if frame_logits is not None:
            self.frame_logits[target_id] = frame_logits

    def has_output(self, target_id: int) -> bool:
        """Whether the target was decoded on this frame."""
        return target_id in self.low_res


@dataclass
class Stream:
    """One camera: its frame counter, its frame size and its targets."""

    stream_id: str
    next_index: int = 0
    last_size: Optional[tuple[int, int]] = None  # (H, W)
    targets: dict[int, Target] = field(default_factory=dict)
    variants: dict[Hashable, FeatureVariant] = field(default_factory=dict)  # by key (seams.py)
    stamps: dict[int, float] = field(default_factory=dict)  # recent frames' stamps, for late results
    # (id, label, state) of every target, replaced whole after each change, so readers
    # need not wait for the lock a step holds for a whole frame.
    summary: tuple[tuple[int, str, TargetState], ...] = ()

    def summarise(self) -> None:
        self.summary = tuple((t.target_id, t.label, t.state) for t in self.targets.values())

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Summarise once the block ends, whether it finished or raised."""
        try:
            yield
        finally:
            self.summarise()


class SegmentationEngine:
    """Streaming SAM2 with bounded per-target memory. Thread-safe; no ROS inside."""

    def __init__(self, model: torch.nn.Module, config: EngineConfig, random_weights: bool):
        """`model`: a built SAM2 (`model.build_model`) on its device; `random_weights`:
        whether its weights are random (the warning the node gives). Weights loaded
        later go through `load_weights`."""
        self.model = model
        self.config = config
        self._random_weights = random_weights
        self._weights: Optional[WeightsSource] = None
        self.device = next(model.parameters()).device
        self.image_size = int(model.image_size)
        self.preprocess = FramePreprocessor(self.image_size, self.device, config.preprocessing)
        self._streams: dict[str, Stream] = {}
        self._next_target_id = 1
        self._lock = threading.RLock()
        self._autocast_dtype = _autocast_dtype(config.precision, self.device)
        # The plain pass's backend; torch until `install_encoder` builds the configured one.
        self.encoder: ImageEncoder = TorchEncoder(model)
        self.encoder_note: Optional[str] = None  # why the pass runs on torch after all (fallback)
        if config.compile:
            _compile_modules(model, encoder=config.encoder_backend == "torch")

    @classmethod
    def from_config(cls, config: EngineConfig) -> "SegmentationEngine":
        """Build the model of `config` and load its SAM2 checkpoint (`config_checkpoint`);
        random weights when there is none. Raises CheckpointError, ValueError."""
        device = resolve_device(config.device)
        model = build_model(config.model, None, config.image_size, device, config.seed)
        model.max_obj_ptrs_in_encoder = config.max_obj_ptrs
        engine = cls(model, config, random_weights=True)
        checkpoint = config_checkpoint(config)
        if checkpoint is not None:
            engine.load_weights(Sam2Checkpoint(checkpoint))
        else:
            engine.install_encoder()
        return engine

    def install_encoder(self) -> None:
        """Build the plain pass's backend (`config.encoder_backend`) for the model's
        current weights (engine.encoders.build_encoder: from the cache, or exported and
        checked for parity, with progress on stderr). With `encoder_backend_fallback`, a
        backend that cannot serve leaves the pass on torch and `encoder_note` says why.

        Raises EncoderBackendError (without the fallback), ValueError (unknown backend
        or precision).
        """
        backend = self.config.encoder_backend
        with self._lock:
            try:
                self.encoder = build_encoder(self.model, self.config.model, backend, self.config.encoder_precision)
                self.encoder_note = None
            except EncoderBackendError as exc:
                if not self.config.encoder_backend_fallback:
                    raise
                self.encoder = TorchEncoder(self.model)
                self.encoder_note = (f"encoder_backend {backend} refused: {exc}; the image encoder runs on torch "
                                     "(encoder_backend_fallback)")

    # ------------------------------------------------------------------------- weights
    @property
    def random_weights(self) -> bool:
        """Whether the model's weights are random (no weights were loaded)."""
        return self._random_weights

    @property
    def checkpoint(self) -> Optional[str]:
        """The file the model's SAM2 weights came from; None for random weights (or a
        model whose weights were loaded before the engine got it)."""
        return self._weights.path if self._weights is not None else None

    def load_weights(self, source: WeightsSource) -> object:
        """Load the SAM2 weights of `source` into the engine's model: the one place the
        model's weights are written once it is built, and what `random_weights` and
        `checkpoint` report. Returns what `source` holds besides (an adapter's modules).

        A file that carries SAM2 for an adapter (SAMWISE's, FSSAM's) replaces a plain
        SAM2 checkpoint's weights; weights from one adapter's file are never replaced by
        another file (CheckpointError naming both, nothing loaded); the same source again
        loads again (a second reference mode opened on the same engine). The plain pass's
        backend is built again for the new weights (`install_encoder`). Raises what
        `source.load` raises (CheckpointError naming the mismatching keys), the model
        untouched; what `install_encoder` raises, the weights loaded.
        """
        with self._lock:
            current = self._weights
            if current is not None and not isinstance(current, Sam2Checkpoint) and current != source:
                raise CheckpointError(f"the model's weights come from the {current.kind} {current.path}; "
                                      f"the {source.kind} {source.path} would replace them")
            extra = source.load(self.model)
            self._weights, self._random_weights = source, False
            self.install_encoder()  # an exported pass holds the old weights: rebuild (or find) it
            return extra

    # ----------------------------------------------------------------- streams & targets
    def add_stream(self, stream_id: str) -> None:
        with self._lock:
            self._streams.setdefault(stream_id, Stream(stream_id))

    def remove_stream(self, stream_id: str) -> None:
        with self._lock:
            for target in self._stream(stream_id).targets.values():
                _close_hooks(target)
            del self._streams[stream_id]

    def streams(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def targets(self, stream_id: str) -> list[tuple[int, str, TargetState]]:
        """(id, label, state) of the stream's targets as of the last change; never waits for a step."""
        return list(self._stream(stream_id).summary)

    def add_target(
        self,
        stream_id: str,
        prompt: Prompt,
        *,
        label: str = "",
        target_id: Optional[int] = None,
        image: Optional[np.ndarray] = None,
    ) -> int:
        """Start tracking an object given by `prompt`.

        With `image`, the prompt lies on that image (teach by example) and becomes the
        target's conditioning memory now. Without it, the prompt lies on the stream's
        next frame, where it is applied before tracking. Returns the target id.
        """
        with self._lock:
            stream = self._stream(stream_id)
            if target_id is not None and target_id in stream.targets:
                raise DuplicateTargetError(f"target {target_id} already exists on stream {stream_id!r}")
            if image is not None:
                check_frame(image)
                check_prompt(prompt, image.shape[0], image.shape[1], self.image_size)
            else:
                check_prompt(prompt, *(stream.last_size or (None, None)), self.image_size)
            tid = target_id if target_id is not None else self._next_target_id
            self._next_target_id = max(self._next_target_id, tid + 1)
            target = Target(tid, label, self._new_memory())
            if image is None:
                target.pending = prompt
            else:
                self._pin_reference(target, prompt, image, stream.next_index - 1)
            stream.targets[tid] = target
            stream.summarise()
            return tid

    def add_tracked_target(self, stream_id: str, tracker: TargetTracker, *, label: str = "",
                           target_id: Optional[int] = None, replace: bool = False) -> int:
        """Start tracking a target whose frames an adapter decodes (`seams.TargetTracker`),
        e.g. a caption. It starts `acquiring` with an empty memory on the stream's next frame.

        With `replace`, an existing `target_id` gets the new tracker and a fresh memory (a
        caption replaced at run time keeps its id). Returns the target id.

        Raises UnknownStreamError, DuplicateTargetError (existing id without `replace`).
        """
        return self._add_adapter_target(stream_id, label, target_id, replace, tracker=tracker)

    def set_proposer(self, stream_id: str, target_id: int, proposer: Optional[Proposer]) -> None:
        """Give a target a proposer, or take it away (None); the previous one is closed.

        A target with a tracker (`seams.TargetTracker`) takes one only when its tracker
        uses the plain pass (`variant_key` None: TTGA, FSSAM), whose features the proposer
        is given. Proposers are asked before trackers run; a seed's memories are pinned
        after the tracker's pass (they count from the next frame on); a seed's prompt is
        not applied (the tracker decodes the target, not the engine's prompt path) but
        says the target was found
        on this frame, so the tracker runs on it; with `gates_output`, the tracker does
        not run, and nothing is published, while the target is acquiring or lost and no
        seed came; `Absent` declares it lost.

        Raises UnknownStreamError, UnknownTargetError, ValueError for a tracker target
        with a variant of its own.
        """
        with self._lock:
            stream = self._stream(stream_id)
            target = stream.targets.get(target_id)
            if target is None:
                raise UnknownTargetError(f"no target {target_id} on stream {stream_id!r}")
            if target.tracker is not None and proposer is not None and target.tracker.variant_key is not None:
                raise ValueError(f"target {target_id} is decoded by an adapter with features of its own; "
                                 "it takes no proposer")
            old, target.proposer = target.proposer, proposer
            if old is not None:
                old.close()  # after the new one is attached: a failing close leaves no gap

    def add_proposed_target(self, stream_id: str, proposer: Proposer, *, label: str = "",
                            target_id: Optional[int] = None, replace: bool = False) -> int:
        """Start a target that only a proposer can find (a caption through a grounding
        model): no memory until the first seed, state `acquiring`, no mask until then.

        With `replace`, an existing `target_id` is forgotten and started afresh. Returns
        the target id. Raises UnknownStreamError, DuplicateTargetError.
        """
        return self._add_adapter_target(stream_id, label, target_id, replace, proposer=proposer)

    def _add_adapter_target(self, stream_id: str, label: str, target_id: Optional[int], replace: bool,
                            **hooks) -> int:
        """A target with an empty memory and an adapter's hooks (`Target` fields)."""
        with self._lock:
            stream = self._stream(stream_id)
            if target_id is not None and target_id in stream.targets:
                if not replace:
                    raise DuplicateTargetError(f"target {target_id} already exists on stream {stream_id!r}")
                _close_hooks(stream.targets[target_id])
            tid = target_id if target_id is not None else self._next_target_id
            self._next_target_id = max(self._next_target_id, tid + 1)
            stream.targets[tid] = Target(tid, label, self._new_memory(), **hooks)
            _drop_unused_variants(stream)
            stream.summarise()
            return tid

    def add_reference(self, stream_id: str, target_id: int, prompt: Prompt, image: np.ndarray) -> None:
        """Teach a target one more example (k-shot): another pinned conditioning memory.

        Each reference takes its own slot just before the stream's current position, so
        SAM2's memory selection sees all of them as conditioning frames.
        """
        with self._lock:
            stream = self._stream(stream_id)
            target = stream.targets.get(target_id)
            if target is None:
                raise UnknownTargetError(f"no target {target_id} on stream {stream_id!r}")
            check_frame(image)
            check_prompt(prompt, image.shape[0], image.shape[1], self.image_size)
            index = min(stream.next_index, *target.memory.conditioning) - 1 \
                if target.memory.conditioning else stream.next_index - 1
            self._pin_reference(target, prompt, image, index)

    def _pin_reference(self, target: Target, prompt: Prompt, image: np.ndarray, index: int) -> None:
        with self._compute():
            features = self.encoder.encode(self.preprocess(image))[0]
            self._apply_prompt(target, features, prompt, image.shape[:2], index)

    def remove_target(self, stream_id: str, target_id: int) -> None:
        with self._lock:
            stream = self._stream(stream_id)
            if target_id not in stream.targets:
                raise UnknownTargetError(f"no target {target_id} on stream {stream_id!r}")
            _close_hooks(stream.targets.pop(target_id))
            _drop_unused_variants(stream)
            stream.summarise()

    def reset(self, stream_id: Optional[str] = None) -> None:
        """Forget the targets of one stream (or of all); streams stay."""
        with self._lock:
            streams = [self._stream(stream_id)] if stream_id is not None else self._streams.values()
            for stream in streams:
                for target in stream.targets.values():
                    _close_hooks(target)
                stream.targets.clear()
                stream.variants.clear()
                stream.summarise()

    # --------------------------------------------------------------------------- step
    def step(self, stream_id: str, frame: np.ndarray, stamp: float = 0.0) -> StepResult:
        """Segment every target of `stream_id` on `frame` (H x W x 3 uint8 RGB); `stamp`
        is carried to the result (seconds, the frame's header time).

        Stages: the plain image-encoder pass (when a target needs it); proposers look for
        their targets; feature variants encode the frame and trackers decode their
        targets; prompts waiting for this frame (taught, or a proposer's seeds) are
        decoded; the other targets are decoded in groups of the same memory layout; the
        outputs become results and states. `step_many` of one frame.

        Raises UnknownStreamError, InvalidFrameError (nothing changed), or what a stage
        raised (an adapter's error; the stream's frame counter does not move).
        """
        (result, error), = self._step_streams([(stream_id, frame, stamp)])
        if error is not None:
            raise error
        return result

    def step_many(self, frames: Sequence[tuple[str, np.ndarray, float]]) -> list[StepResult]:
        """Step several streams on one frame each, `frames` = [(stream_id, frame, stamp)]:
        one tick of several cameras. Returns their StepResults in the same order.

        The plain image-encoder passes of all the frames that need one (a stream with no
        target, or only targets of an adapter with features of its own, needs none) run
        as ONE batched encoder call (`features.encode_images`, (T, 3, S, S); frames of
        any sizes, each preprocessed to S x S), unless `config.batch_cameras` is off (then
        one call per frame); then each stream's other stages run as in `step`, stream
        after stream. The results equal `step` called per stream up to the batched
        kernels' rounding (test/test_engine_batch.py). A result's `step_seconds` is its
        share of the batched encoder call (the call's time over the frames in it) plus
        its own stages, so the results' sum is about the call's time.

        Raises (nothing changed when raised before any work):
            ValueError: a stream named twice (a stream's frames are stepped in order,
                one call each).
            UnknownStreamError, InvalidFrameError: for the first bad entry, naming it; a
                caller wanting the other frames stepped steps them without it.
            StepsFailed: a stage of some streams raised (an adapter's error); the other
                streams were stepped, their results in `results`.
        """
        seen: set[str] = set()
        for stream_id, _, _ in frames:
            if stream_id in seen:
                raise ValueError(f"stream {stream_id!r} given twice in one step_many call")
            seen.add(stream_id)
        outcomes = self._step_streams(list(frames))
        failures = {item[0]: error for item, (_, error) in zip(frames, outcomes) if error is not None}
        results = [result for result, error in outcomes if error is None]
        if failures:
            raise StepsFailed(results, failures)
        return results

    def _step_streams(self, frames: list[tuple[str, np.ndarray, float]]
                      ) -> list[tuple[Optional[StepResult], Optional[BaseException]]]:
        """`step_many`'s work: check every entry (raising for the first bad one before any
        work), encode the frames that need the plain pass together, then run each stream's
        stages. Returns (result, None) or (None, what its stages raised) per entry."""
        with self._lock:
            streams = [self._stream(stream_id) for stream_id, _, _ in frames]
            for stream_id, frame, _ in frames:
                try:
                    check_frame(frame)
                except InvalidFrameError as exc:
                    if len(frames) == 1:
                        raise
                    raise type(exc)(f"stream {stream_id!r}: {exc}") from None
            start = time.perf_counter()
            outcomes: list[tuple[Optional[StepResult], Optional[BaseException]]] = []
            with self._compute():
                features = self._encode_plain([(s, f) for s, (_, f, _) in zip(streams, frames)])
                encoded = sum(f is not None for f in features)
                share = (time.perf_counter() - start) / max(encoded, 1)
                for stream, (_, frame, stamp), feats in zip(streams, frames, features):
                    began = time.perf_counter()
                    try:
                        result = self._stages(stream, frame, stamp, feats)
                    except Exception as exc:  # noqa: BLE001 - the other streams still step
                        outcomes.append((None, exc))
                        continue
                    result.step_seconds = time.perf_counter() - began + (share if feats is not None else 0.0)
                    outcomes.append((result, None))
            return outcomes

    def _stages(self, stream: Stream, frame: np.ndarray, stamp: float,
                features: Optional[FrameFeatures]) -> StepResult:
        """One stream's stages on one frame after the plain pass (`features`; None when
        no target needs it): see `step`. Moves the stream to its next frame."""
        out = FrameOutputs(stream.next_index, frame.shape[:2])
        with stream.changing():
            stream.stamps[out.index] = stamp
            stream.stamps.pop(out.index - 256, None)
            self._propose(stream, features, frame, out)
            self._track_adapted(stream, frame, features, out)
            late = self._late_results(stream, out.late, out.events)
            self._apply_prompts(stream, features, out)
            self._track_plain(stream, features, out)
            results = self._results(stream, out)
        stream.last_size = out.size
        stream.next_index += 1
        return StepResult(stream.stream_id, out.index, stamp, results, 0.0, out.events, late)

    # ------------------------------------------------------------------------ internals
    def _stream(self, stream_id: str) -> Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            known = ", ".join(map(repr, self._streams)) or "none"
            raise UnknownStreamError(f"unknown stream {stream_id!r} (known: {known})") from None

    def _new_memory(self) -> TargetMemory:
        return TargetMemory(self.model.num_maskmem, self.config.max_obj_ptrs, self.config.max_cond_frames)

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        with torch.inference_mode():
            if self._autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self._autocast_dtype):
                    yield

    def _apply_prompt(self, target: Target, features: FrameFeatures, prompt: Prompt,
                      size: tuple[int, int], index: int) -> heads.Decoded:
        """Decode a prompt without memory and pin the result as conditioning memory."""
        inputs = to_model_inputs(prompt, size[0], size[1], self.image_size, self.device)
        decoded = heads.decode_prompt(self.model, features, inputs)
        # SAM2 encodes a prompt frame's memory from its low-resolution output.
        high = F.interpolate(decoded.low_res_masks, size=(self.image_size,) * 2,
                             mode="bilinear", align_corners=False)
        feats, pos = heads.encode_memory(self.model, features, high, decoded.object_score_logits,
                                         from_prompt=True)
        target.memory.pin(MemoryEntry(index, decoded.obj_ptr, feats, pos))
        return decoded

    def _encode_plain(self, frames: list[tuple[Stream, np.ndarray]]) -> list[Optional[FrameFeatures]]:
        """The plain image-encoder pass of each (stream, frame), shared by the stream's
        plain targets, proposers and trackers without a variant of their own; None for a
        stream none of whose targets needs it. The frames that need it go through one
        call of the engine's encoder backend (`self.encoder`, engine/encoders; one per
        frame with `config.batch_cameras` off)."""
        needed = [i for i, (stream, _) in enumerate(frames) if _needs_plain(stream)]
        features: list[Optional[FrameFeatures]] = [None] * len(frames)
        if not needed:
            return features
        images = [self.preprocess(frames[i][1]) for i in needed]
        if self.config.batch_cameras:
            encoded = self.encoder.encode(torch.cat(images, dim=0))
        else:
            encoded = [self.encoder.encode(image)[0] for image in images]
        for i, f in zip(needed, encoded):
            features[i] = f
        return features

    def _propose(self, stream: Stream, features: Optional[FrameFeatures], frame: np.ndarray,
                 out: FrameOutputs) -> None:
        """Ask each proposer target's proposer for a seed; a seed becomes the target's
        prompt on this frame (a tracker target's tracker runs instead, see
        `set_proposer`). Targets whose output is withheld (and, for tracker targets, whose
        tracker does not run) on this frame go to `out.withheld`; the tracker targets'
        seed memories to `out.seed_memories`, to pin once their trackers ran."""
        for target in stream.targets.values():
            proposer = target.proposer
            if proposer is None or target.pending is not None or features is None:
                continue
            seed: Optional[Seed | Absent] = proposer.propose(self.model, features, frame, out.index, target.state,
                                                             target.last_box)
            if isinstance(seed, Absent):
                if target.state not in (TargetState.ACQUIRING, TargetState.LOST):
                    target.state = TargetState.LOST
                    target.memory.forget_recent()  # frames tracked while it was gone: on something else
                    out.events.append(f"{_name(target)} lost" + (f": {seed.reason}" if seed.reason else ""))
                out.withheld.add(target.target_id)
            elif seed is not None:
                if seed.memories and target.tracker is not None:
                    out.seed_memories.append((target, seed.memories))
                elif seed.memories:
                    target.seeds.pin_memories(target.memory, seed.memories)
                if seed.prompt is not None and target.tracker is None:
                    target.pending = seed.prompt
                    target.seeds.frames.append(out.index)
                if seed.reason:
                    out.events.append(f"{_name(target)} seeded: {seed.reason}")
            elif proposer.gates_output and target.state in (TargetState.ACQUIRING, TargetState.LOST):
                out.withheld.add(target.target_id)

    def _encode_variants(self, stream: Stream, frame: np.ndarray, features: Optional[FrameFeatures],
                         targets: list[Target], index: int) -> dict[Hashable, object]:
        """One pass per variant key the `targets`' trackers name (the stream's variant for
        the key is made on first use); key None is the plain pass, as a `PlainFrame`."""
        encoded: dict[Hashable, object] = {}
        for key in dict.fromkeys(t.tracker.variant_key for t in targets):
            if key is None:
                encoded[key] = PlainFrame(features, frame)
                continue
            variant = stream.variants.get(key)
            if variant is None:
                variant = stream.variants[key] = next(t.tracker for t in targets
                                                      if t.tracker.variant_key == key).new_variant()
            encoded[key] = variant.encode(frame, index)
        return encoded

    def _track_adapted(self, stream: Stream, frame: np.ndarray, features: Optional[FrameFeatures],
                       out: FrameOutputs) -> None:
        """Targets with their own tracker and not withheld: encode the variants they name,
        then each tracker decodes its target. Trackers with no result yet go to
        `out.pending`; results of earlier frames to `out.late`. A proposer's memories for
        these targets are pinned last (after what a tracker pins on its first frame)."""
        targets = [t for t in stream.targets.values()
                   if t.tracker is not None and t.target_id not in out.withheld]
        encoded = self._encode_variants(stream, frame, features, targets, out.index)
        for target in targets:
            tracked: Optional[Tracked] = target.tracker.track(self.model, encoded[target.tracker.variant_key],
                                                              target.memory, out.index, out.size)
            if tracked is None:
                out.pending.add(target.target_id)
                continue
            out.late += [(target, i, t) for i, t in tracked.late]
            out.decoded(target.target_id, tracked.low_res_masks, tracked.object_score_logits, tracked.frame_logits)
        for target, memories in out.seed_memories:
            target.seeds.pin_memories(target.memory, memories)

    def _apply_prompts(self, stream: Stream, features: Optional[FrameFeatures], out: FrameOutputs) -> None:
        """Decode the prompts waiting for this frame (taught on it, or a proposer's seed)
        and pin each as conditioning memory. A prompt the frame turns out not to fit
        rejects a taught target (removed), or drops a seed (the target stays)."""
        for target in list(stream.targets.values()):
            if target.pending is None:
                continue
            prompt, target.pending = target.pending, None
            seeded = target.seeds.seeded_on(out.index)
            try:
                decoded = self._apply_prompt(target, features, prompt, out.size, out.index)
            except InvalidPromptError as exc:  # the frame turned out not to fit the prompt
                if seeded:  # a proposer's mistake: drop the seed, keep the target
                    target.seeds.frames.pop()
                    out.events.append(f"{_name(target)} seed refused: {exc}")
                    if target.state in (TargetState.ACQUIRING, TargetState.LOST):
                        out.withheld.add(target.target_id)
                    continue
                del stream.targets[target.target_id]
                out.events.append(f"target {target.target_id} rejected: {exc}")
                continue
            if seeded:
                target.seeds.forget_old(target.memory, self.config.max_seeds)
            out.decoded(target.target_id, decoded.low_res_masks, decoded.object_score_logits)

    def _track_plain(self, stream: Stream, features: Optional[FrameFeatures], out: FrameOutputs) -> None:
        """SAM2's tracking of the plain targets not decoded yet, withheld or empty, one
        batched pass per group of the same memory layout."""
        targets = [t for t in stream.targets.values() if t.tracker is None and not out.has_output(t.target_id)
                   and t.target_id not in out.withheld and t.memory.conditioning]
        for group, selections in self._layout_groups(targets, out.index):
            decoded = self._track_group(group, selections, features, out.index)
            for i, target in enumerate(group):
                out.decoded(target.target_id, decoded.low_res_masks[i:i + 1], decoded.object_score_logits[i:i + 1])

    def flush(self, stream_id: str) -> list[tuple[int, float, TargetResult]]:
        """The stream has ended: trackers decode what their variants still buffer (a
        clip-mode caption's last, shorter clip). Returns those frames' results as
        (frame index, stamp, result), oldest first; empty when nothing was buffered."""
        with self._lock:
            stream = self._stream(stream_id)
            late: list = []
            with self._compute(), stream.changing():
                for target in [t for t in stream.targets.values() if t.tracker is not None]:
                    variant = stream.variants.get(target.tracker.variant_key)
                    encoded = variant.flush() if hasattr(variant, "flush") else None
                    if encoded is None:
                        continue
                    out = target.tracker.track(self.model, encoded, target.memory, stream.next_index - 1,
                                               stream.last_size or (0, 0))
                    late += [(target, i, t) for i, t in out.late] + [(target, encoded[-1].index, out)]
                events: list[str] = []
                return self._late_results(stream, late, events)

    def _late_results(self, stream: Stream, late: list, events: list[str]) -> list[tuple[int, float, TargetResult]]:
        """Results of earlier frames, in frame order, moving each target's state."""
        out = []
        for target, index, tracked in sorted(late, key=lambda item: item[1]):
            logits = tracked.frame_logits.float()
            mask = (logits[0, 0] > 0).cpu().numpy()
            score_logit = float(tracked.object_score_logits.flatten()[0])
            self._update_state(target, score_logit > 0, events)
            out.append((index, stream.stamps.get(index, 0.0), TargetResult(
                target.target_id, target.label, mask, float(torch.sigmoid(torch.tensor(score_logit))),
                _box(mask), target.state, tracked.low_res_masks.float().cpu())))
        return out

    def _layout_groups(self, targets: list[Target], index: int):
        """Targets whose memories line up, so one batched pass serves them all."""
        groups: dict[tuple, tuple[list[Target], list[MemorySelection]]] = {}
        for target in targets:
            selection = target.memory.select(index)
            key: tuple = (selection.layout(),)
            if not self.config.batch_targets:
                key = (target.target_id,)
            members, selections = groups.setdefault(key, ([], []))
            members.append(target)
            selections.append(selection)
        return groups.values()

    def _track_group(self, group: list[Target], selections: list[MemorySelection],
                     features: FrameFeatures, index: int) -> heads.Decoded:
        model = self.model
        batch = len(group)
        pix_feat = heads.attend_memory(model, features, selections)
        multimask = model.multimask_output_in_sam and model.multimask_output_for_tracking and (
            model.multimask_min_pt_num <= 0 <= model.multimask_max_pt_num)
        decoded = heads.decode(model, pix_feat, features.high_res(batch), multimask=multimask)
        feats, pos = heads.encode_memory(model, features, decoded.high_res_masks,
                                         decoded.object_score_logits, from_prompt=False)
        logits = decoded.object_score_logits.flatten().float().tolist()  # one host sync per group
        for i, (target, logit) in enumerate(zip(group, logits)):
            if logit <= 0 and self.config.keep_memory_when_absent:
                continue
            target.memory.push(MemoryEntry(index, decoded.obj_ptr[i:i + 1], feats[i:i + 1], pos[i:i + 1]))
        return decoded

    def _results(self, stream: Stream, out: FrameOutputs) -> list[TargetResult]:
        """Every target's result on this frame, in the stream's order, moving its state:
        the decoded ones' masks at the frame's size, an empty mask for the others (taught
        but not applied yet, or withheld); none for the pending ones."""
        low_res, scores, frame_logits, size = out.low_res, out.scores, out.frame_logits, out.size
        results = []
        ids = [tid for tid in stream.targets if tid in low_res]
        masks = np.zeros((0,) + size, dtype=bool)
        low_res_host = torch.zeros((0, 1, 1, 1))
        if ids:  # three device-to-host copies per frame, whatever the number of targets
            stacked = torch.cat([low_res[tid] for tid in ids], dim=0).float()
            full = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)
            for i, tid in enumerate(ids):  # trackers that map their output to the frame themselves
                if tid in frame_logits:
                    full[i] = frame_logits[tid][0].float()
            masks = (full[:, 0] > 0).cpu().numpy()
            low_res_host = stacked.cpu()
        logits = torch.cat([scores[tid].flatten() for tid in ids]).float().cpu() if ids else torch.zeros(0)
        probabilities = torch.sigmoid(logits).tolist()
        for i, tid in enumerate(ids):
            target = stream.targets[tid]
            self._update_state(target, bool(logits[i] > 0), out.events)
            target.last_box = _box(masks[i])
            results.append(TargetResult(
                target_id=tid, label=target.label, mask=masks[i], score=probabilities[i],
                box=target.last_box, state=target.state, low_res_logits=low_res_host[i:i + 1],
            ))
        for tid, target in stream.targets.items():
            if tid in out.withheld:  # looked for and not found: absent on this frame
                self._update_state(target, False, out.events)
                target.last_box = None
            if tid in out.pending:  # its result comes later (StepResult.late)
                continue
            if tid not in low_res:  # taught but not applied yet, or withheld
                results.append(TargetResult(tid, target.label, np.zeros(size, dtype=bool), 0.0, None,
                                            target.state))
        return results

    def _update_state(self, target: Target, present: bool, events: list[str]) -> None:
        """Move `target` to its state on this frame; append one event per change a user
        wants to hear of.

        `present` is the object head's verdict on this frame. `absent_frames` counts the
        frames since the target was last present (since it was taught, while it has never
        been). P is `config.occlusion_patience` (frames). Every transition:

        | state now | this frame                     | next state | event ("target N (label) ...")  |
        |-----------|--------------------------------|------------|---------------------------------|
        | acquiring | present                        | tracked    | "tracked"                       |
        | acquiring | absent, first frame looked for | acquiring  | "not in view yet: acquiring     |
        |           |                                |            | until it first appears"         |
        | acquiring | absent, later frames           | acquiring  | none                            |
        | tracked   | present                        | tracked    | none                            |
        | tracked   | absent, P >= 1                 | occluded   | "occluded"                      |
        | tracked   | absent, P = 0                  | lost       | "lost"                          |
        | occluded  | present                        | tracked    | "re-acquired"                   |
        | occluded  | absent, absent_frames <= P     | occluded   | none                            |
        | occluded  | absent, absent_frames > P      | lost       | "lost"                          |
        | lost      | present                        | tracked    | "re-acquired"                   |
        | lost      | absent                         | lost       | none                            |

        A proposer's `Absent` (seams.py) moves a tracked or occluded target to `lost`
        before this runs, with the event "lost: <its reason>".

        A target never seen on this stream (a reference target out of view, a prompt the
        decoder finds nothing at) stays `acquiring`, however long: it was never there to
        be occluded or lost. It says once, on the first frame it is looked for, that it
        is not in view, so a target taught by example and absent is not silent.
        """
        before = target.state
        name = _name(target)
        if present:
            target.absent_frames = 0
            target.state = TargetState.TRACKED
        else:
            target.absent_frames += 1
            if before == TargetState.LOST:
                return
            if before == TargetState.ACQUIRING:
                if target.absent_frames == 1:
                    events.append(f"{name} not in view yet: acquiring until it first appears")
                return
            patient = target.absent_frames <= self.config.occlusion_patience
            target.state = TargetState.OCCLUDED if patient else TargetState.LOST
        if target.state == before:
            return
        if target.state == TargetState.TRACKED:
            events.append(f"{name} tracked" if before == TargetState.ACQUIRING else f"{name} re-acquired")
        elif target.state == TargetState.OCCLUDED:
            events.append(f"{name} occluded")
        else:
            events.append(f"{name} lost")

    # ---------------------------------------------------------------------- inspection
    def retained_bytes(self) -> int:
        """Bytes of tensors the engine keeps between frames: the targets' memories and what
        feature variants keep of earlier frames."""
        with self._lock:
            memories = sum(t.memory.nbytes() for s in self._streams.values() for t in s.targets.values())
            return memories + sum(v.nbytes() for s in self._streams.values() for v in s.variants.values())

    @staticmethod
    def release_device_memory() -> None:
        """Return the allocator's unused blocks to the device (an idle node's courtesy).

        Nothing between frames is held but the targets' memories, so nothing is forgotten.
        """
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _name(target: Target) -> str:
    return f"target {target.target_id}" + (f" ({target.label})" if target.label else "")


def _close_hooks(target: Target) -> None:
    """Stop a forgotten target's background work: its proposer's, its tracker's (if any)."""
    if target.proposer is not None:
        target.proposer.close()
    close = getattr(target.tracker, "close", None)
    if close is not None:
        close()


def _needs_plain(stream: Stream) -> bool:
    """Whether a target of the stream uses the plain pass: a plain target, or a tracker
    without a variant of its own."""
    return any(t.tracker is None or t.tracker.variant_key is None for t in stream.targets.values())


def _drop_unused_variants(stream: Stream) -> None:
    """Forget variants no target of the stream names any more (and what they kept)."""
    keys = {t.tracker.variant_key for t in stream.targets.values()
            if t.tracker is not None and t.tracker.variant_key is not None}
    for key in [k for k in stream.variants if k not in keys]:
        del stream.variants[key]


def _box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision in ("bf16", "auto"):
        return torch.bfloat16
    raise ValueError(f"precision must be auto, fp32 or bf16; got {precision!r}")


def _compile_modules(model: torch.nn.Module, encoder: bool = True) -> None:
    """Compile the heavy modules; memory attention sees a varying number of memories.
    `encoder` False leaves the trunk and neck alone (another backend runs the plain pass
    and exports them as they are)."""
    if encoder:  # encode_images runs the trunk and the neck apart (features.py), so those are compiled
        model.image_encoder.trunk.forward = torch.compile(model.image_encoder.trunk.forward, dynamic=False)
        model.image_encoder.neck.forward = torch.compile(model.image_encoder.neck.forward, dynamic=False)
    model.memory_encoder.forward = torch.compile(model.memory_encoder.forward, dynamic=False)
    model.memory_attention.forward = torch.compile(model.memory_attention.forward, dynamic=True)
    model.sam_mask_decoder.forward = torch.compile(model.sam_mask_decoder.forward, dynamic=False)
