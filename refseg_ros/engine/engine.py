"""The streaming engine: frames in one at a time, every target's mask out.

One model serves several streams (cameras). Each frame is encoded once and shared by all
targets of its stream; targets whose memory layouts match are tracked as one batch.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Hashable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import heads
from .config import EngineConfig
from .errors import DuplicateTargetError, InvalidPromptError, UnknownStreamError, UnknownTargetError
from .features import FrameFeatures, encode_image
from .frames import FramePreprocessor, check_frame
from .memory import MemoryEntry, MemorySelection, TargetMemory
from .model import build_model, resolve_device
from .prompts import check_prompt, to_model_inputs
from .seams import Absent, FeatureVariant, PlainFrame, Proposer, Seed, TargetTracker, Tracked
from .types import Prompt, StepResult, TargetResult, TargetState
from .weights import cached_checkpoint


@dataclass
class Target:
    """A tracked object: its memory and per-target hooks for the adapters."""

    target_id: int
    label: str
    memory: TargetMemory
    pending: Optional[Prompt] = None  # a prompt waiting for the stream's next frame
    state: TargetState = TargetState.ACQUIRING
    absent_frames: int = 0
    extra_tokens: Optional[torch.Tensor] = None  # appended to the decoder's sparse prompt
    memory_reweight: Optional[heads.MemoryWeighting] = None
    tracker: Optional[TargetTracker] = None  # an adapter's own features and tracking (seams.py)
    proposer: Optional[Proposer] = None  # looks for the target while it is not tracked (seams.py)
    seeds: list[int] = field(default_factory=list)  # frames of the pinned seeds, oldest first
    extra_pins: list[int] = field(default_factory=list)  # indices of a Seed's pinned memories
    last_box: Optional[tuple[int, int, int, int]] = None


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
        self.model = model
        self.config = config
        self.random_weights = random_weights
        self.checkpoint: Optional[str] = None
        self.device = next(model.parameters()).device
        self.image_size = int(model.image_size)
        self.preprocess = FramePreprocessor(self.image_size, self.device, config.preprocessing)
        self._streams: dict[str, Stream] = {}
        self._next_target_id = 1
        self._lock = threading.RLock()
        self._autocast_dtype = _autocast_dtype(config.precision, self.device)
        if config.compile:
            _compile_modules(model)

    @classmethod
    def from_config(cls, config: EngineConfig) -> "SegmentationEngine":
        device = resolve_device(config.device)
        checkpoint = config.checkpoint
        if checkpoint == "auto":
            found = cached_checkpoint(config.model)
            checkpoint = str(found) if found else None
        model = build_model(config.model, checkpoint, config.image_size, device, config.seed)
        model.max_obj_ptrs_in_encoder = config.max_obj_ptrs
        engine = cls(model, config, random_weights=checkpoint is None)
        engine.checkpoint = checkpoint
        return engine

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
            features = encode_image(self.model, self.preprocess(image))
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
        """Segment every target of `stream_id` on `frame` (H x W x 3 uint8 RGB)."""
        with self._lock:
            stream = self._stream(stream_id)
            check_frame(frame)
            start = time.perf_counter()
            index = stream.next_index
            height, width = frame.shape[:2]
            events: list[str] = []
            with self._compute(), stream.changing():
                low_res: dict[int, torch.Tensor] = {}
                scores: dict[int, torch.Tensor] = {}
                frame_logits: dict[int, torch.Tensor] = {}
                adapted = [t for t in stream.targets.values() if t.tracker is not None]
                plain_needed = any(t.tracker is None or t.tracker.variant_key is None
                                   for t in stream.targets.values())
                features = encode_image(self.model, self.preprocess(frame)) if plain_needed else None
                stream.stamps[index] = stamp
                stream.stamps.pop(index - 256, None)
                late: list = []
                pending: set[int] = set()
                gated, deferred = self._propose(stream, features, frame, index, events)
                self._track_adapted(stream, [t for t in adapted if t.target_id not in gated], frame, features,
                                    index, low_res, scores, frame_logits, late, pending)
                for target, memories in deferred:  # after the tracker pinned what it pins on its first frame
                    self._pin_memories(target, memories)
                late_results = self._late_results(stream, late, events)
                for target in list(stream.targets.values()):
                    if target.pending is None:
                        continue
                    prompt, target.pending = target.pending, None
                    seeded = bool(target.seeds) and target.seeds[-1] == index
                    try:
                        decoded = self._apply_prompt(target, features, prompt, (height, width), index)
                    except InvalidPromptError as exc:  # the frame turned out not to fit the prompt
                        if seeded:  # a proposer's mistake: drop the seed, keep the target
                            target.seeds.pop()
                            events.append(f"{_name(target)} seed refused: {exc}")
                            if target.state in (TargetState.ACQUIRING, TargetState.LOST):
                                gated.add(target.target_id)
                            continue
                        del stream.targets[target.target_id]
                        events.append(f"target {target.target_id} rejected: {exc}")
                        continue
                    if seeded:
                        self._forget_old_seeds(target)
                    low_res[target.target_id] = decoded.low_res_masks
                    scores[target.target_id] = decoded.object_score_logits
                tracked = [t for t in stream.targets.values() if t.tracker is None and t.target_id not in low_res
                           and t.target_id not in gated and t.memory.conditioning]
                for group, selections in self._layout_groups(tracked, index):
                    decoded = self._track_group(group, selections, features, index)
                    for i, target in enumerate(group):
                        low_res[target.target_id] = decoded.low_res_masks[i:i + 1]
                        scores[target.target_id] = decoded.object_score_logits[i:i + 1]
                results = self._results(stream, low_res, scores, (height, width), events, frame_logits, gated,
                                        pending)
            stream.last_size = (height, width)
            stream.next_index += 1
            return StepResult(stream_id, index, stamp, results, time.perf_counter() - start, events,
                              late_results)

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
        decoded = heads.decode_prompt(self.model, features, inputs, target.extra_tokens)
        # SAM2 encodes a prompt frame's memory from its low-resolution output.
        high = F.interpolate(decoded.low_res_masks, size=(self.image_size,) * 2,
                             mode="bilinear", align_corners=False)
        feats, pos = heads.encode_memory(self.model, features, high, decoded.object_score_logits,
                                         from_prompt=True, reweight=target.memory_reweight)
        target.memory.pin(MemoryEntry(index, decoded.obj_ptr, feats, pos))
        return decoded

    def _propose(self, stream: Stream, features: Optional[FrameFeatures], frame: np.ndarray, index: int,
                 events: list[str]) -> tuple[set[int], list[tuple[Target, list[MemoryEntry]]]]:
        """Ask each proposer target's proposer for a seed; a seed becomes the target's
        prompt on this frame (a tracker target's tracker runs instead, see
        `set_proposer`). Returns the ids whose output is withheld (and, for tracker
        targets, whose tracker does not run) on this frame, and the tracker targets'
        seed memories, to pin once their trackers ran."""
        gated: set[int] = set()
        deferred: list[tuple[Target, list[MemoryEntry]]] = []
        for target in stream.targets.values():
            proposer = target.proposer
            if proposer is None or target.pending is not None or features is None:
                continue
            seed: Optional[Seed | Absent] = proposer.propose(self.model, features, frame, index, target.state,
                                                             target.last_box)
            if isinstance(seed, Absent):
                if target.state not in (TargetState.ACQUIRING, TargetState.LOST):
                    target.state = TargetState.LOST
                    target.memory.forget_recent()  # frames tracked while it was gone: on something else
                    events.append(f"{_name(target)} lost" + (f": {seed.reason}" if seed.reason else ""))
                gated.add(target.target_id)
            elif seed is not None:
                if seed.memories and target.tracker is not None:
                    deferred.append((target, seed.memories))
                elif seed.memories:
                    self._pin_memories(target, seed.memories)
                if seed.prompt is not None and target.tracker is None:
                    target.pending = seed.prompt
                    target.seeds.append(index)
                if seed.reason:
                    events.append(f"{_name(target)} seeded: {seed.reason}")
            elif proposer.gates_output and target.state in (TargetState.ACQUIRING, TargetState.LOST):
                gated.add(target.target_id)
        return gated, deferred

    @staticmethod
    def _pin_memories(target: Target, memories: list[MemoryEntry]) -> None:
        """Pin a seed's memories just before the target's earliest conditioning entry
        (the previous set goes first), keeping their order."""
        for index in target.extra_pins:
            target.memory.unpin(index)
        earliest = min(target.memory.conditioning, default=0)
        target.extra_pins = []
        for k, entry in enumerate(memories):
            index = earliest - len(memories) + k
            target.memory.pin(MemoryEntry(index, entry.obj_ptr, entry.maskmem_features, entry.maskmem_pos_enc))
            target.extra_pins.append(index)

    def _forget_old_seeds(self, target: Target) -> None:
        """Keep the newest `max_seeds` seeds pinned; older ones leave the memory."""
        while len(target.seeds) > max(self.config.max_seeds, 1):
            target.memory.unpin(target.seeds.pop(0))

    def _track_adapted(self, stream: Stream, targets: list[Target], frame: np.ndarray,
                       features: Optional[FrameFeatures], index: int,
                       low_res: dict, scores: dict, frame_logits: dict, late: list, pending: set) -> None:
        """Targets with their own tracker: one variant pass per key, then each tracker.
        Trackers with no result yet go to `pending`; results of earlier frames to `late`
        as (target, frame index, Tracked)."""
        encoded: dict = {}
        for target in targets:
            key = target.tracker.variant_key
            if key is None:
                encoded[key] = PlainFrame(features, frame)
            if key not in encoded:
                variant = stream.variants.get(key)
                if variant is None:
                    variant = stream.variants[key] = target.tracker.new_variant()
                encoded[key] = variant.encode(frame, index)
            out: Optional[Tracked] = target.tracker.track(self.model, encoded[key], target.memory, index,
                                                          frame.shape[:2])
            if out is None:
                pending.add(target.target_id)
                continue
            late += [(target, i, t) for i, t in out.late]
            low_res[target.target_id] = out.low_res_masks
            scores[target.target_id] = out.object_score_logits
            if out.frame_logits is not None:
                frame_logits[target.target_id] = out.frame_logits

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
            key: tuple = (selection.layout(), id(target.memory_reweight),
                          None if target.extra_tokens is None else tuple(target.extra_tokens.shape))
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
        extra = None
        if group[0].extra_tokens is not None:
            extra = torch.cat([t.extra_tokens for t in group], dim=0)
        multimask = model.multimask_output_in_sam and model.multimask_output_for_tracking and (
            model.multimask_min_pt_num <= 0 <= model.multimask_max_pt_num)
        decoded = heads.decode(model, pix_feat, features.high_res(batch), multimask=multimask,
                               extra_tokens=extra)
        feats, pos = heads.encode_memory(model, features, decoded.high_res_masks,
                                         decoded.object_score_logits, from_prompt=False,
                                         reweight=group[0].memory_reweight)
        logits = decoded.object_score_logits.flatten().float().tolist()  # one host sync per group
        for i, (target, logit) in enumerate(zip(group, logits)):
            if logit <= 0 and self.config.keep_memory_when_absent:
                continue
            target.memory.push(MemoryEntry(index, decoded.obj_ptr[i:i + 1], feats[i:i + 1], pos[i:i + 1]))
        return decoded

    def _results(self, stream: Stream, low_res: dict[int, torch.Tensor], scores: dict[int, torch.Tensor],
                 size: tuple[int, int], events: list[str],
                 frame_logits: Optional[dict[int, torch.Tensor]] = None,
                 gated: frozenset[int] | set[int] = frozenset(),
                 pending: frozenset[int] | set[int] = frozenset()) -> list[TargetResult]:
        results = []
        ids = [tid for tid in stream.targets if tid in low_res]
        masks = np.zeros((0,) + size, dtype=bool)
        low_res_host = torch.zeros((0, 1, 1, 1))
        if ids:  # three device-to-host copies per frame, whatever the number of targets
            stacked = torch.cat([low_res[tid] for tid in ids], dim=0).float()
            full = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)
            for i, tid in enumerate(ids):  # trackers that map their output to the frame themselves
                if frame_logits and tid in frame_logits:
                    full[i] = frame_logits[tid][0].float()
            masks = (full[:, 0] > 0).cpu().numpy()
            low_res_host = stacked.cpu()
        logits = torch.cat([scores[tid].flatten() for tid in ids]).float().cpu() if ids else torch.zeros(0)
        probabilities = torch.sigmoid(logits).tolist()
        for i, tid in enumerate(ids):
            target = stream.targets[tid]
            self._update_state(target, bool(logits[i] > 0), events)
            target.last_box = _box(masks[i])
            results.append(TargetResult(
                target_id=tid, label=target.label, mask=masks[i], score=probabilities[i],
                box=target.last_box, state=target.state, low_res_logits=low_res_host[i:i + 1],
            ))
        for tid, target in stream.targets.items():
            if tid in gated:  # looked for and not found: absent on this frame
                self._update_state(target, False, events)
                target.last_box = None
            if tid in pending:  # its result comes later (StepResult.late)
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


def _compile_modules(model: torch.nn.Module) -> None:
    """Compile the heavy modules; memory attention sees a varying number of memories."""
    # encode_image runs the trunk and the neck apart (features.py), so those are compiled
    model.image_encoder.trunk.forward = torch.compile(model.image_encoder.trunk.forward, dynamic=False)
    model.image_encoder.neck.forward = torch.compile(model.image_encoder.neck.forward, dynamic=False)
    model.memory_encoder.forward = torch.compile(model.memory_encoder.forward, dynamic=False)
    model.memory_attention.forward = torch.compile(model.memory_attention.forward, dynamic=True)
    model.sam_mask_decoder.forward = torch.compile(model.sam_mask_decoder.forward, dynamic=False)
