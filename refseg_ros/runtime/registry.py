"""What the user taught, kept in step between the engine (tracking) and the store (disk).

Every change is validated first, applied to the engine, then written to the store; only
then does the caller get the text that acknowledges it. A change the engine refuses is
not stored; a change the store cannot write is taken back from the engine. What a target
becomes in the engine is not decided here: a caption goes to the caption path
(`runtime.captions`), a reference to its recipe (`runtime.recipes.ReferenceSetup`), a
mask, box or points target to the engine's prompt. Captions are stored and listed but
not tracked when no text path could be opened, and the registry says why.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..engine import (BoxPrompt, EngineError, MaskPrompt, PointsPrompt, Prompt, SegmentationEngine,
                      TargetState)
from ..store import CAPTION_TOPIC, StoreError, TargetStore, TaughtTarget
from .acquisition import AcquisitionSettings, update_acquisition
from .captions import CaptionPath, TextSettings
from .recipes import ReferenceSetup

CAPTION_WAITING = "waiting for a text model: stored, not tracked"
_STATE_RANK = {TargetState.TRACKED: 3, TargetState.OCCLUDED: 2, TargetState.ACQUIRING: 1,
               TargetState.LOST: 0}


class TeachError(ValueError):
    """A request to teach, remove or reset that was refused; the message says why."""


@dataclass
class TargetStatus:
    """A target as listed: what was taught and where it stands now."""

    target: TaughtTarget
    status: str  # acquiring | tracked | occluded | lost | waiting
    note: str = ""  # why it waits, when it does
    path: str = ""  # how it is found: samwise or grounding (captions); its recipe's name
    # (references: runtime.recipes.MODES); "" for none


def camera_key(topic: str) -> str:
    """The camera a topic belongs to: the image topic without its transport suffix."""
    topic = topic.strip()
    return topic[: -len("/compressed")] if topic.endswith("/compressed") else topic


def caption_key(caption: str) -> str:
    """What two captions are compared by: case-folded, surrounding whitespace dropped and
    every run of whitespace inside made one space ("The  red mug " == "the red mug")."""
    return " ".join(caption.split()).casefold()


def _name(target: TaughtTarget) -> str:
    return f"target {target.target_id}" + (f" '{target.label}'" if target.label else "")


def describe(target: TaughtTarget) -> str:
    """A target in one phrase, for acknowledgements: id, label, kind and camera(s)."""
    name = _name(target)
    where = f"camera {target.camera}" if target.camera else "every camera"
    return f"{name} ({target.kind}) on {where}"


class TargetRegistry:
    """Teach, forget and list targets; thread-safe.

    `reference`: how reference targets are made (their recipe and its services; default:
    the plain baseline); `captions`: the caption path, or None (captions wait, with
    `captions_note` as the reason).
    """

    def __init__(self, engine: SegmentationEngine, store: Optional[TargetStore],
                 cameras: Sequence[str], max_caption_length: int = 1000, max_label_length: int = 256,
                 max_targets: int = 1000, captions: Optional[CaptionPath] = None,
                 captions_note: str = CAPTION_WAITING, reference: Optional[ReferenceSetup] = None):
        self.engine = engine
        self.reference = reference or ReferenceSetup()
        self.captions = captions
        self.captions_note = captions_note
        self.store = store
        self.cameras = [camera_key(c) for c in cameras]
        self.max_caption_length = max_caption_length
        self.max_label_length = max_label_length
        self.max_targets = max_targets
        self._targets: dict[int, TaughtTarget] = {}
        self._notes: dict[int, str] = {}  # targets kept but not tracked, and why
        self._next_id = 1  # used only without a store
        self._lock = threading.RLock()
        # camera -> ids the engine tracks there; replaced (never mutated) after each change,
        # so the frame worker reads it without waiting for a teach in progress.
        self._tracked: dict[str, frozenset[int]] = {c: frozenset() for c in self.cameras}
        for camera in self.cameras:
            engine.add_stream(camera)

    def close(self) -> None:
        """Stop the text path's and acquisition's background work (the node is cleaning up)."""
        if self.captions is not None:
            self.captions.close()
        self.reference.services.close()

    def update_services(self, text: TextSettings, acquisition: AcquisitionSettings) -> list[str]:
        """Give the caption path and the acquisition (where there are) the live parameters
        of `text` and `acquisition`, used from their targets' next decision on; returns
        the services given them, in words ("caption path grounding", "acquisition").
        Raises ValueError for values they cannot take."""
        given = []
        if self.captions is not None:
            self.captions.update(text)
            given.append(f"caption path {self.captions.path}")
        if self.reference.services.acquisition is not None:
            update_acquisition(self.reference.services.acquisition, acquisition)
            given.append("acquisition")
        return given

    # ------------------------------------------------------------------------ restore
    def restore(self) -> list[str]:
        """Teach the engine every stored target again, with its id; returns what happened."""
        if self.store is None:
            return []
        lines = []
        with self._lock:
            for target in self.store.load_all():
                try:
                    self._apply(target)
                    lines.append(f"restored {describe(target)}")
                except TeachError as exc:
                    # Keep it: the user taught it, and a later configuration may fit it.
                    self._targets[target.target_id] = target
                    self._notes[target.target_id] = str(exc)
                    self._refresh_tracked()
                    lines.append(f"kept {describe(target)} without tracking it: {exc}")
            lines += [f"could not read a stored target: {s}" for s in self.store.skipped]
        return lines

    # -------------------------------------------------------------------------- teach
    def teach(self, target: TaughtTarget, replace: bool = False, must_exist: bool = False) -> str:
        """Validate, apply and store a target; returns the acknowledgement text.

        `target.target_id` 0 asks for a new id. A known id is refused unless `replace`;
        with `must_exist`, an unknown id is refused (a replacement of nothing). Raises
        TeachError saying why a target is refused.
        """
        self._check(target)
        with self._lock:
            return self._teach_checked(target, replace, must_exist)

    def teach_topic_caption(self, target: TaughtTarget, replace_previous: bool) -> str:
        """Teach a caption that came on the caption topic; returns the acknowledgement.

        The topic's captions are compared with each other by `caption_key` (case and
        runs of whitespace ignored): a caption the topic already gave is the same target,
        and nothing new is stored. With `replace_previous` (the node's
        `caption_topic_mode: replace`) the topic has one target at a time: a new caption
        replaces every earlier target taught on the topic, forgotten with its stored
        entry, under a new id. Targets taught otherwise (services, reference topic) are
        never touched. Raises TeachError (nothing changes) when the caption is refused.
        """
        target.source = CAPTION_TOPIC
        target.target_id = 0
        self._check(target)
        with self._lock:
            earlier = [t for _, t in sorted(self._targets.items()) if t.source == CAPTION_TOPIC]
            key = caption_key(target.caption)
            same = next((t for t in earlier if caption_key(t.caption) == key), None)
            doomed = [t for t in earlier if t is not same] if replace_previous else []
            if same is not None:
                how = "tracked as" if self._in_engine(same) else "taught (waiting) as"
                text = f"caption {_quote(target.caption)} already {how} target {same.target_id}: nothing new stored"
            else:
                text = self._teach_checked(target, room=len(doomed))
                if doomed:
                    names = ", ".join(_name(t) for t in doomed)
                    text = f"replaced {names} with {text.removeprefix('taught ')}"
            return text + self._forget_all(doomed)

    def _teach_checked(self, target: TaughtTarget, replace: bool = False, must_exist: bool = False,
                       room: int = 0) -> str:
        """`teach` for a target `_check` passed, under the lock; `room`: targets that will
        be forgotten right after, so not counted against max_targets."""
        old = self._targets.get(target.target_id) if target.target_id else None
        if old is not None and not replace:
            raise TeachError(f"target {target.target_id} exists; remove it first or replace it")
        if old is None and must_exist:
            known = ", ".join(str(t) for t in sorted(self._targets)) or "none"
            raise TeachError(f"no target {target.target_id} to replace (known: {known})")
        if old is None and len(self._targets) - room >= self.max_targets:
            raise TeachError(f"already {len(self._targets)} targets (max_targets); remove some first")
        try:
            if not target.target_id:
                target.target_id = self._new_id()
            elif self.store is not None:
                self.store.reserve_id(target.target_id)
        except (StoreError, OSError) as exc:
            raise TeachError(f"the target store cannot record the target's id: {exc}") from exc
        if old is not None:
            self._unapply(old)
        try:
            self._apply(target)
        except TeachError:
            if old is not None:
                self._reapply_quietly(old)
            raise
        if self.store is not None:
            try:
                self.store.save(target)
            except (StoreError, OSError) as exc:
                self._unapply(target)
                if old is not None:
                    self._reapply_quietly(old)
                raise TeachError(f"could not store {describe(target)}: {exc}") from exc
        verb = "replaced" if old is not None else "taught"
        text = f"{verb} {describe(target)}"
        if target.kind == "caption":
            if self.captions is None:
                text += f": caption {_quote(target.caption)} is waiting: {self.captions_note}"
            else:
                text += f": caption {_quote(target.caption)} tracked through {self.captions.path}"
        return text

    def add_view(self, target_id: int, image: np.ndarray, mask: np.ndarray) -> str:
        """Teach a reference target one more example (k-shot); returns the acknowledgement.

        The engine pins the new example beside the others and keeps what the target has
        tracked so far. All or none: when the engine or the store refuses, the target is
        taught again as it was.
        """
        with self._lock:
            old = self._targets.get(int(target_id))
            if old is None:
                known = ", ".join(str(t) for t in sorted(self._targets)) or "none"
                raise TeachError(f"no target {target_id} to add a view to (known: {known})")
            if old.kind != "reference":
                raise TeachError(f"views are added to reference targets; {describe(old)} is not one")
            self._check(TaughtTarget(old.target_id, old.label, "reference", image=image, mask=mask))
            view_mask = np.asarray(mask) != 0
            new = dataclasses.replace(old, views=old.views + [(image, view_mask)])
            try:
                if old.target_id not in self._notes:
                    prepared = self.reference.prepare(*_examples(new))
                    for camera in self._cameras_of(new):
                        prepared.add_example(self.engine, camera, new.target_id, new.label)
                if self.store is not None:
                    self.store.save(new)
            except Exception as exc:  # bad input, device memory, a full disk: teach the old one again
                self._unapply(old)
                self._reapply_quietly(old)
                if isinstance(exc, (StoreError, OSError)):
                    raise TeachError(f"could not store {describe(new)}: {exc}") from exc
                raise TeachError(_engine_refusal(exc)) from exc
            self._targets[new.target_id] = new
            return f"added view {len(new.views) + 1} to {describe(new)}"

    def remove(self, target_id: int) -> str:
        with self._lock:
            target = self._targets.get(int(target_id))
            if target is None:
                known = ", ".join(str(t) for t in sorted(self._targets)) or "none"
                raise TeachError(f"no target {target_id} (known: {known})")
            self._forget(target)
            return f"removed {describe(target)}"

    def reset(self, camera: str = "") -> str:
        """Forget the targets of one camera, or every target when `camera` is empty."""
        with self._lock:
            if camera:
                camera = self._check_camera(camera)
                doomed = [t for t in self._targets.values() if t.camera == camera]
            else:
                doomed = list(self._targets.values())
            forgotten: list[str] = []
            for target in doomed:
                try:
                    self._forget(target)
                except TeachError as exc:
                    if not forgotten:
                        raise
                    raise TeachError(f"{exc}; {len(forgotten)} target(s) were forgotten before that "
                                     f"(ids: {', '.join(forgotten)})") from exc
                forgotten.append(str(target.target_id))
            ids = ", ".join(str(t.target_id) for t in doomed) or "none"
            where = f"camera {camera}" if camera else "every camera"
            text = f"forgot {len(doomed)} target(s) of {where} (ids: {ids})"
            if camera:
                shared = [t.target_id for t in self._targets.values() if not t.camera]
                if shared:
                    text += (f"; kept {len(shared)} target(s) taught for every camera "
                             f"(ids: {', '.join(map(str, shared))}): remove them by id")
            return text

    # ----------------------------------------------------------------------- inspect
    def statuses(self) -> list[TargetStatus]:
        with self._lock:
            states: dict[int, list[TargetState]] = {}
            for camera in self.cameras:
                for tid, _, state in self.engine.targets(camera):
                    states.setdefault(tid, []).append(state)
            out = []
            for tid in sorted(self._targets):
                target = self._targets[tid]
                path = self._path(target)
                if tid in self._notes:
                    out.append(TargetStatus(target, "waiting", self._notes[tid]))
                elif target.kind == "caption" and self.captions is None:
                    out.append(TargetStatus(target, "waiting", self.captions_note))
                else:
                    best = max(states.get(tid, [TargetState.ACQUIRING]), key=_STATE_RANK.__getitem__)
                    out.append(TargetStatus(target, best.value, path=path))
            return out

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._targets)

    def tracked_ids(self, camera: str) -> frozenset[int]:
        """Ids the engine tracks on `camera` (waiting captions and kept-only targets excluded)."""
        return self._tracked.get(camera_key(camera), frozenset())

    def _refresh_tracked(self) -> None:
        tracked = {c: set() for c in self.cameras}
        for tid, target in self._targets.items():
            if not self._in_engine(target):
                continue
            for camera in self._cameras_of(target):
                if camera in tracked:
                    tracked[camera].add(tid)
        self._tracked = {c: frozenset(ids) for c, ids in tracked.items()}

    # --------------------------------------------------------------------- internals
    def _check(self, target: TaughtTarget) -> None:
        if len(target.label) > self.max_label_length:
            raise TeachError(f"label is {len(target.label)} characters long (at most {self.max_label_length})")
        if target.camera:
            target.camera = self._check_camera(target.camera)
        if target.kind == "caption":
            caption = target.caption.strip()
            if not caption:
                raise TeachError("caption is empty")
            if len(caption) > self.max_caption_length:
                raise TeachError(f"caption is {len(caption)} characters long "
                                 f"(at most {self.max_caption_length})")
            target.caption = caption
            if not target.label:
                target.label = caption if len(caption) <= 64 else caption[:61] + "..."
            return
        image = target.image
        if image is None:
            raise TeachError(f"a {target.kind} target needs an image")
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise TeachError(f"reference image must be H x W x 3 uint8, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}")
        height, width = image.shape[:2]
        if height < 2 or width < 2:
            raise TeachError(f"reference image is too small ({width}x{height})")
        if target.kind in ("reference", "mask"):
            mask = target.mask
            if mask is None:
                raise TeachError(f"a {target.kind} target needs a mask")
            if mask.shape != (height, width):
                mh, mw = mask.shape[:2] if mask.ndim >= 2 else (0, 0)
                raise TeachError(f"mask is {mw}x{mh} but its image is {width}x{height}")
            if not np.any(mask):
                raise TeachError("mask is empty (no nonzero pixel): nothing to teach")

    def _check_camera(self, camera: str) -> str:
        key = camera_key(camera)
        if key not in self.cameras:
            raise TeachError(f"unknown camera {camera!r} (cameras: {', '.join(self.cameras) or 'none'})")
        return key

    def _cameras_of(self, target: TaughtTarget) -> list[str]:
        """The cameras a target lies on: its own, or every camera when it names none."""
        return [target.camera] if target.camera else self.cameras

    def _new_id(self) -> int:
        if self.store is not None:
            tid = self.store.allocate_id()
            while tid in self._targets:
                tid = self.store.allocate_id()
            return tid
        tid = max([self._next_id] + [t + 1 for t in self._targets])
        self._next_id = tid + 1
        return tid

    def _in_engine(self, target: TaughtTarget) -> bool:
        """Whether the engine holds the target (not kept-only, not a waiting caption)."""
        if target.target_id in self._notes:
            return False
        return target.kind != "caption" or self.captions is not None

    def _apply(self, target: TaughtTarget) -> None:
        """Add the target to the engine on its cameras, all or none (a caption without a
        text path is only kept)."""
        if target.kind != "caption" or self.captions is not None:
            self._check_own_camera(target)
            add = self._adder(target)
            done = []
            try:
                for camera in self._cameras_of(target):
                    done.append(camera)
                    add(camera)
            except Exception as exc:  # input the engine or a path refuses, device memory: all or none
                for camera in done:
                    self._remove_quietly(camera, target.target_id)
                raise TeachError(_engine_refusal(exc)) from exc
        self._targets[target.target_id] = target
        self._notes.pop(target.target_id, None)
        self._refresh_tracked()

    def _path(self, target: TaughtTarget) -> str:
        """How the engine finds the target besides its memory (see TargetStatus.path)."""
        if target.kind == "caption":
            return "" if self.captions is None else self.captions.path
        return self.reference.path if target.kind == "reference" else ""

    def _adder(self, target: TaughtTarget) -> Callable[[str], object]:
        """What adds `target` to one camera's stream: its caption path, its reference
        recipe (the parts built here once, shared by its cameras) or its prompt."""
        tid, label = target.target_id, target.label
        if target.kind == "caption":
            return lambda camera: self.captions.add(self.engine, camera, target.caption, label=label, target_id=tid)
        if target.kind == "reference":
            prepared = self._prepare(target)
            return lambda camera: prepared.install(self.engine, camera, tid, label)
        prompt = _prompt(target)
        return lambda camera: self.engine.add_target(camera, prompt, label=label, target_id=tid, image=target.image)

    def _prepare(self, target: TaughtTarget):
        """A reference target's parts from all its examples, as its recipe has them;
        raises TeachError for examples the recipe's adapters refuse."""
        try:
            return self.reference.prepare(*_examples(target))
        except Exception as exc:  # examples an adapter refuses, device memory
            raise TeachError(_engine_refusal(exc)) from exc

    def _check_own_camera(self, target: TaughtTarget) -> None:
        if target.camera and target.camera not in self.cameras:
            raise TeachError(f"its camera {target.camera} is not configured "
                             f"(cameras: {', '.join(self.cameras) or 'none'})")

    def _unapply(self, target: TaughtTarget) -> None:
        # Only targets the engine holds are removed from it: the engine lock is held for
        # a whole frame, and forgetting a waiting caption should not wait for one.
        if self._in_engine(target):
            for camera in self._cameras_of(target):
                self._remove_quietly(camera, target.target_id)
        self._targets.pop(target.target_id, None)
        self._notes.pop(target.target_id, None)
        self._refresh_tracked()

    def _forget(self, target: TaughtTarget) -> None:
        """Remove a target from the store, then from the engine (a store failure keeps it)."""
        if self.store is not None:
            try:
                self.store.remove(target.target_id)
            except (StoreError, OSError) as exc:
                raise TeachError(f"could not remove {describe(target)} from the store: {exc}") from exc
        self._unapply(target)

    def _forget_all(self, doomed: list[TaughtTarget]) -> str:
        """Forget `doomed` (store and engine); the text to add to an acknowledgement."""
        forgotten, failed = [], []
        for target in doomed:
            try:
                self._forget(target)
                forgotten.append(str(target.target_id))
            except TeachError as exc:
                failed.append(str(exc))
        text = f"; forgot target(s) {', '.join(forgotten)} and their stored entries" if forgotten else ""
        return text + "".join(f"; {reason}" for reason in failed)

    def _reapply_quietly(self, target: TaughtTarget) -> None:
        try:
            self._apply(target)
        except TeachError as exc:
            self._targets[target.target_id] = target
            self._notes[target.target_id] = str(exc)
            self._refresh_tracked()

    def _remove_quietly(self, camera: str, target_id: int) -> None:
        if any(tid == target_id for tid, _, _ in self.engine.targets(camera)):
            self.engine.remove_target(camera, target_id)


def _prompt(target: TaughtTarget) -> Prompt:
    if target.kind in ("reference", "mask"):
        return MaskPrompt(np.asarray(target.mask) != 0)
    if target.kind == "box":
        if target.box is None:
            raise TeachError("a box target needs a box")
        return BoxPrompt(tuple(float(v) for v in target.box))
    if target.kind == "points":
        if not target.points:
            raise TeachError("a points target needs points")
        return PointsPrompt(np.asarray(target.points, dtype=np.float32),
                            np.asarray(target.point_labels or [], dtype=np.int64))
    raise TeachError(f"cannot track a {target.kind} target")


def _engine_refusal(exc: Exception) -> str:
    """Why the engine refused: its own message for bad input (a ValueError such as an
    engine error or a caption a text path refuses), the failure otherwise."""
    if isinstance(exc, (EngineError, ValueError)):
        return str(exc)
    return f"the engine failed ({type(exc).__name__}: {exc})"


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _examples(target: TaughtTarget) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A reference target's examples: its images ((H, W, 3) uint8) and masks ((H, W)
    bool), the first one first."""
    images = [target.image] + [image for image, _ in target.views]
    masks = [np.asarray(target.mask) != 0] + [np.asarray(mask) != 0 for _, mask in target.views]
    return images, masks
