"""Where results come from: anything that turns a plan's frames into per-target masks.

The runner scores results by frame stamp and does not care who produced them. Offline,
:class:`EngineReplaySource` feeds the bag's frames to the engine in order, one episode
at a time. The live source (``live.LiveNodeSource``: the ROS node in replay mode, fed
over DDS) yields the results it receives on the node's output topics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol

import numpy as np

from refseg_ros.eval import bags
from refseg_ros.eval.plan import EvalPlan
from refseg_ros.runtime.parameters import parameter

log = logging.getLogger("refseg_ros.eval")


@dataclass
class FrameResult:
    """Every target's result on one frame, keyed by the frame's header stamp."""

    stamp_ns: int
    episode: int
    masks: dict[int, np.ndarray]  # ground-truth id -> H x W bool
    scores: dict[int, float] = field(default_factory=dict)
    states: dict[int, str] = field(default_factory=dict)
    seconds: Optional[float] = None  # engine step time (offline) or latency (live)


class ResultSource(Protocol):
    """Produces results for a plan; ``skip`` names episodes already done by a previous
    run that the source may leave out. A source may also define ``fingerprint() ->
    dict``: the settings that make its results differ (stored in run.json, so that a
    resumed run never mixes results of two settings)."""

    def info(self) -> dict[str, Any]:
        """What produced the results (model, weights, device...), for the report."""

    def timing_label(self) -> str:
        """What ``FrameResult.seconds`` measures."""

    def results(self, plan: EvalPlan, reader: bags.BagReader, camera_topic: str,
                skip: set[int]) -> Iterator[FrameResult]:
        """Results in frame order."""


@dataclass
class EngineSettings:
    """The engine options the evaluation exposes (see refseg_ros.engine.EngineConfig); the
    node's parameters of the same names, with their defaults (checkpoint None: random
    weights; image_size None: the model's own size)."""

    model: str = parameter("model")
    checkpoint: Optional[str] = None
    image_size: Optional[int] = None
    device: str = parameter("device")
    seed: int = parameter("seed")
    # CPU threads of the model; 0: the node's default (refseg_ros.runtime.threads: the
    # cores less one), offline too, since float sums depend on the thread count and the
    # offline masks must equal the node's bit for bit. Not part of as_dict: a resumed run
    # may use another count.
    compute_threads: int = parameter("compute_threads")
    # What runs the plain image-encoder pass, as the node's parameters (refused when it
    # cannot run here: an evaluation has no fallback).
    encoder_backend: str = parameter("encoder_backend")
    encoder_precision: str = parameter("encoder_precision")
    # Caption targets (``--prompt caption``): the text path, as the node's parameters of
    # the same names (refseg_ros.runtime.captions.TextSettings).
    text: Optional[Any] = None
    # How references are segmented: a recipe's name (runtime.recipes.NAMES, the node's
    # reference_mode), run exactly as named; each part's options: `acquisition`
    # (runtime.acquisition's AcquisitionSettings), `fssam` (runtime.reference_modes'
    # ReferenceSettings: the ttga and fssam trackers' options), `transitions` (dbst:
    # runtime.transitions' TransitionSettings, its dbst_on the recipe's triggers).
    reference_mode: str = "baseline"
    acquisition: Optional[Any] = None
    fssam: Optional[Any] = None
    transitions: Optional[Any] = None

    def recipe(self) -> Any:
        """The reference targets' `runtime.recipes.Recipe`; ValueError for an unknown mode."""
        from refseg_ros.runtime.recipes import parse_mode
        from refseg_ros.runtime.transitions import TransitionSettings

        return parse_mode(self.reference_mode, (self.transitions or TransitionSettings()).triggers())

    def as_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "checkpoint": self.checkpoint,
               "image_size": self.image_size, "device": self.device, "seed": self.seed}
        if self.encoder_backend != "torch":
            out["encoder"] = {"backend": self.encoder_backend, "precision": self.encoder_precision}
        if self.text is not None and self.text.chosen() != "none":
            out["text"] = {k: v for k, v in vars(self.text).items()}
        reference = self.reference_parameters()
        mode = reference.pop("reference_mode")
        if mode != "baseline":
            out["reference_mode"] = mode
            if reference:
                out["reference"] = reference
        return out

    def reference_parameters(self) -> dict[str, Any]:
        """The node parameters of the reference recipe: `reference_mode` (its canonical
        name) and the options of the parts it has, no others (the node adds a part for a
        model it is given: runtime.recipes.for_node). ValueError for an unknown mode."""
        recipe = self.recipe()
        parts = [(recipe.tracker != "baseline", self.fssam), (recipe.acquisition, self.acquisition),
                 (recipe.dbst, self.transitions)]  # their option names do not overlap
        out = {k: v for used, options in parts if used and options is not None for k, v in vars(options).items()}
        out["reference_mode"] = recipe.name
        return out


def _put(result: FrameResult, gid: int, r: Any) -> None:
    result.masks[gid] = np.asarray(r.mask, bool)
    result.scores[gid] = float(r.score)
    result.states[gid] = getattr(r.state, "value", str(r.state))


class _LateResults:
    """Frames whose results are not all in yet (a clip-mode caption target reports a
    clip's frames when the clip completes): held, filled by later steps' late results,
    and released in frame order once complete, so the runner sees whole frames."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, FrameResult, set[int]]] = []  # (engine index, result, awaited ids)

    def add(self, index: int, result: FrameResult, waiting: set[int], late: list,
            engine_to_gt: dict[int, int]) -> Iterator[FrameResult]:
        self.frames.append((index, result, set(waiting)))
        self._fill(late, engine_to_gt)
        while self.frames and not self.frames[0][2]:
            yield self.frames.pop(0)[1]

    def finish(self, late: list, engine_to_gt: dict[int, int]) -> Iterator[FrameResult]:
        """The episode ended (after `engine.flush`): everything goes, complete or not."""
        self._fill(late, engine_to_gt)
        while self.frames:
            yield self.frames.pop(0)[1]

    def _fill(self, late: list, engine_to_gt: dict[int, int]) -> None:
        by_index = {index: (result, waiting) for index, result, waiting in self.frames}
        for index, _, r in late:
            if index in by_index:
                result, waiting = by_index[index]
                _put(result, engine_to_gt.get(r.target_id, r.target_id), r)
                waiting.discard(r.target_id)


class EngineReplaySource:
    """Offline replay: every frame through the engine, in bag order, nothing dropped.

    Episodes are independent (a fresh stream each), so an episode finished by an
    interrupted run can be skipped; within an episode the engine's memory depends on
    every earlier frame, so an episode always runs from its first frame.
    """

    def __init__(self, settings: EngineSettings, engine: Any = None) -> None:
        self.settings = settings
        self._engine = engine
        self._captions: Any = None
        self._reference: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from refseg_ros.engine import EngineConfig, SegmentationEngine
            from refseg_ros.runtime.threads import apply_threads, plan_threads

            apply_threads(plan_threads(self.settings.compute_threads))
            cfg = EngineConfig(model=self.settings.model, checkpoint=self.settings.checkpoint,
                               image_size=self.settings.image_size, device=self.settings.device,
                               seed=self.settings.seed, encoder_backend=self.settings.encoder_backend,
                               encoder_precision=self.settings.encoder_precision)
            self._engine = SegmentationEngine.from_config(cfg)
        return self._engine

    def captions(self) -> Any:
        """The caption path (`runtime.captions`), opened once. Grounding waits for each
        detection here, so that offline results do not depend on timing.
        Raises PlanError when no text model is configured or it cannot be loaded."""
        if self._captions is None:
            from refseg_ros.eval.plan import PlanError
            from refseg_ros.runtime.captions import TextSettings, open_caption_path

            text = self.settings.text or TextSettings()
            path, note = open_caption_path(text, self.engine, self.settings.model, synchronous=True)
            if path is None:
                raise PlanError(f"caption episodes need a text model: {note}")
            self._captions = path
        return self._captions

    def reference_adapters(self) -> Any:
        """The reference targets' `runtime.recipes.ReferenceSetup` (the recipe of
        `settings.reference_mode` with its models), opened once, exactly as named: the
        node's path to the engine. Background work is waited for (synchronous), so results
        do not depend on timing. Raises PlanError when the mode is unknown or a part
        cannot be loaded."""
        if self._reference is None:
            from refseg_ros.eval.plan import PlanError
            from refseg_ros.runtime.acquisition import AcquisitionSettings
            from refseg_ros.runtime.recipes import open_reference
            from refseg_ros.runtime.reference_modes import ReferenceSettings
            from refseg_ros.runtime.transitions import TransitionSettings

            try:
                wanted = self.settings.recipe()
            except ValueError as exc:
                raise PlanError(str(exc)) from None
            opened = open_reference(wanted, self.settings.fssam or ReferenceSettings(wanted.name),
                                    self.settings.acquisition or AcquisitionSettings(),
                                    self.settings.transitions or TransitionSettings(), self.engine, synchronous=True)
            missing = opened.missing()
            if missing:
                opened.setup.services.close()
                raise PlanError(f"reference mode {wanted.name}: {'; '.join(missing)}")
            self._reference = opened.setup
        return self._reference

    def teach_reference(self, engine: Any, stream: str, p: Any, examples: dict, engine_to_gt: dict) -> int:
        """Teach reference prompt `p` (a target's first example, or one more) by the
        configured recipe; returns the engine id."""
        shots = examples.setdefault(p.target_id, [])
        shots.append((p.image, p.mask))
        prepared = self.reference_adapters().prepare([s[0] for s in shots], [s[1] for s in shots])
        if p.target_id in engine_to_gt:  # one more example (k-shot)
            prepared.add_example(engine, stream, p.target_id, p.label)
            return p.target_id
        return prepared.install(engine, stream, p.target_id, p.label)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that make results differ (run.json's ``source``): the same as a
        run without an explicit source, so a given engine and a built one are one run."""
        return self.settings.as_dict()

    def info(self) -> dict[str, Any]:
        eng = self.engine
        out = self.settings.as_dict()
        out["random_weights"] = bool(getattr(eng, "random_weights", False))
        out["resolved_device"] = str(getattr(eng, "device", self.settings.device))
        out["model_image_size"] = getattr(eng, "image_size", self.settings.image_size)
        return out

    def timing_label(self) -> str:
        return "engine step time (wall clock around engine.step)"

    def results(self, plan: EvalPlan, reader: bags.BagReader, camera_topic: str,
                skip: set[int]) -> Iterator[FrameResult]:
        from refseg_ros.engine import MaskPrompt, PromptBelowResolutionError

        engine = self.engine
        todo = {i: ep for ep in plan.episodes if ep.index not in skip for i in ep.frames}
        if not todo:
            return
        last = max(todo)
        held = _LateResults()
        current: Optional[int] = None
        stream = ""
        pending: list = []
        engine_to_gt: dict[int, int] = {}
        examples: dict[int, list] = {}
        for frame in reader.frames(camera_topic):
            if frame.index > last:
                break
            ep = todo.get(frame.index)
            if ep is None:
                continue
            if ep.index != current:
                if current is not None:
                    yield from held.finish(engine.flush(stream), engine_to_gt)
                    engine.remove_stream(stream)
                current = ep.index
                stream = f"eval-episode-{ep.index}"
                engine.add_stream(stream)
                pending = sorted(ep.prompts, key=lambda p: p.stamp_ns)
                engine_to_gt = {}
                examples: dict[int, list] = {}
            while pending and pending[0].stamp_ns <= frame.stamp_ns:
                p = pending.pop(0)
                try:
                    if p.caption:
                        self.captions().add(engine, stream, p.caption, label=p.label, target_id=p.target_id)
                        engine_to_gt[p.target_id] = p.target_id
                        continue
                    if p.image is not None:
                        tid = self.teach_reference(engine, stream, p, examples, engine_to_gt)
                    else:
                        tid = engine.add_target(stream, MaskPrompt(p.mask), label=p.label, target_id=p.target_id)
                except PromptBelowResolutionError as exc:
                    # The protocol gives this prompt, the model cannot see it: the target
                    # is scored with no prediction, as the node would refuse it too.
                    log.warning("frame %d: prompt for target %d refused: %s", frame.index, p.target_id, exc)
                    continue
                engine_to_gt[tid] = p.target_id
            start = time.perf_counter()
            step = engine.step(stream, frame.image, frame.stamp_ns * 1e-9)
            seconds = time.perf_counter() - start
            for event in getattr(step, "events", None) or []:
                level = logging.WARNING if "rejected" in event else logging.INFO
                log.log(level, "frame %d: %s", frame.index, event)
            result = FrameResult(frame.stamp_ns, ep.index, {}, {}, {}, seconds)
            for r in step.targets:
                _put(result, engine_to_gt.get(r.target_id, r.target_id), r)
            reported = {r.target_id for r in step.targets}
            waiting = {tid for tid, _, _ in engine.targets(stream) if tid not in reported}
            yield from held.add(step.frame_index, result, waiting, getattr(step, "late", []), engine_to_gt)
        if current is not None:
            yield from held.finish(engine.flush(stream), engine_to_gt)
            engine.remove_stream(stream)
