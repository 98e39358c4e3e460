"""What an evaluation will do, decided from the bag before any model runs.

A plan is a list of episodes; each episode starts from an empty stream, adds its
targets when their prompt's stamp comes up, and processes its frames in order:

- video protocol: one episode holding every frame. Targets come from the ground truth
  (``first-frame-gt``, the semi-supervised VOS protocol: each object's mask on the
  first frame where it appears, scored from the next frame on), from the bag's
  references (``reference-topic``: taught by example, every frame scored) or from its
  captions (``caption``: referring VOS, every frame scored; a caption equal to an
  object's label is that object, otherwise captions in log order go to the objects in
  id order when their numbers match - the bag builders' convention);
- one-shot protocol: one episode per reference stamp, holding the frames stamped from
  its references up to the next reference stamp.

A target may be taught by several references (k-shot): the first adds it, each later
one adds an example (``engine.add_reference``); in a one-shot bag, the references of
an episode share its stamp.

Making the plan reads the whole bag once and checks it (see ``bags.index_sequence``),
so a bag that cannot be evaluated fails before anything is written.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from refseg_ros.eval import bags

PROMPT_MODES = ("auto", "first-frame-gt", "reference-topic", "caption")


class PlanError(ValueError):
    """The bag and the requested protocol do not fit together."""


@dataclass
class TargetPrompt:
    """How one target is taught to the engine."""

    target_id: int  # the ground-truth id it is scored against
    label: str
    stamp_ns: int  # added just before the first frame stamped at or after this
    mask: Optional[np.ndarray]  # H x W bool; None for a caption
    image: Optional[np.ndarray] = None  # reference image; None: the mask lies on a frame
    on_frame: Optional[int] = None  # index of that frame (never scored for this target)
    caption: str = ""  # the referring expression of a caption target

    @property
    def kind(self) -> str:
        if self.caption:
            return "caption"
        return "reference" if self.image is not None else "mask"


@dataclass
class Episode:
    """Frames processed from a fresh stream, with the targets taught along the way."""

    index: int
    label: str
    frames: list[int]  # frame indices on the camera topic, in order
    prompts: list[TargetPrompt] = field(default_factory=list)


@dataclass
class EvalPlan:
    protocol: str  # "video" | "one-shot"
    prompt_mode: str  # "first-frame-gt" | "reference-topic" | "caption"
    frame_stamps: list[int]  # by frame index
    sequence: bags.SequenceIndex
    episodes: list[Episode]
    targets: dict[int, str]  # evaluated ground-truth id -> label
    untaught: dict[int, str] = field(default_factory=dict)  # ground-truth objects not evaluated

    @property
    def num_frames(self) -> int:
        return sum(len(e.frames) for e in self.episodes)

    def index_of_stamp(self) -> dict[int, int]:
        return {s: i for i, s in enumerate(self.frame_stamps)}


def _first_frame_prompts(reader: bags.BagReader, seq: bags.SequenceIndex, gt_topic: str,
                         index_of: dict[int, int]) -> list[TargetPrompt]:
    wanted = {stamp for stamp in seq.first_seen.values() if stamp in index_of}
    prompts: list[TargetPrompt] = []
    for stamp, lm in reader.label_maps(gt_topic):
        if stamp not in wanted:
            continue
        for oid, first in seq.first_seen.items():
            if first == stamp:
                prompts.append(TargetPrompt(oid, seq.object_labels[oid], stamp, lm == oid,
                                            on_frame=index_of[stamp]))
    return sorted(prompts, key=lambda p: (p.stamp_ns, p.target_id))


def _reference_prompts(reader: bags.BagReader, topic: str, camera_topic: str
                       ) -> list[TargetPrompt]:
    prompts = []
    for ref in reader.references(topic):
        if ref.camera and ref.camera != camera_topic:
            continue
        if ref.target_id == 0:
            raise PlanError(f"bag {reader.path}: reference on {topic!r} at stamp {ref.stamp_ns} "
                            "has target_id 0; evaluation needs the ground-truth id it teaches")
        if not ref.mask.any():
            raise PlanError(f"bag {reader.path}: reference on {topic!r} at stamp {ref.stamp_ns} "
                            f"(target {ref.target_id}) has an empty mask")
        prompts.append(TargetPrompt(ref.target_id, ref.label, ref.stamp_ns, ref.mask,
                                    image=ref.image))
    if not prompts:
        raise PlanError(f"bag {reader.path}: no reference for camera {camera_topic!r} on topic "
                        f"{topic!r}")
    return prompts


def _caption_prompts(reader: bags.BagReader, topic: str, labels: dict[int, str]) -> list[TargetPrompt]:
    captions = [c for c in reader.captions(topic) if c.text.strip()]
    if not captions:
        raise PlanError(f"bag {reader.path}: no caption on {topic!r}")
    by_label = {label: oid for oid, label in labels.items()}
    if all(c.text in by_label for c in captions):
        ids = [by_label[c.text] for c in captions]
    elif len(captions) == len(labels):
        ids = sorted(labels)
    else:
        raise PlanError(f"bag {reader.path}: {len(captions)} caption(s) on {topic!r} for "
                        f"{len(labels)} object(s), and not every caption is an object's label: "
                        "cannot tell which object each caption refers to")
    return [TargetPrompt(oid, c.text if len(c.text) <= 64 else c.text[:61] + "...", c.stamp_ns, None,
                         caption=c.text) for oid, c in zip(ids, captions)]


def make_plan(reader: bags.BagReader, *, prompt: str = "auto",
              camera_topic: str = bags.CAMERA_TOPIC, gt_topic: str = bags.GROUND_TRUTH_TOPIC,
              reference_topic: str = bags.REFERENCE_TOPIC, caption_topic: str = bags.CAPTION_TOPIC,
              max_frames: Optional[int] = None) -> EvalPlan:
    """Check the bag and decide episodes and prompts; raises BagError or PlanError."""
    if prompt not in PROMPT_MODES:
        raise PlanError(f"prompt mode must be one of {PROMPT_MODES}, got {prompt!r}")
    protocol = reader.protocol
    if prompt == "caption" and protocol == "one-shot":
        raise PlanError(f"bag {reader.path} holds one-shot episodes, taught by references, not captions")
    if prompt == "auto":
        prompt = "reference-topic" if protocol == "one-shot" else "first-frame-gt"
    if protocol == "one-shot" and prompt != "reference-topic":
        raise PlanError(f"bag {reader.path} holds one-shot episodes, which are taught by their "
                        "references: use --prompt reference-topic")

    seq = bags.index_sequence(reader, camera_topic, gt_topic)
    stamps = seq.frame_stamps[:max_frames] if max_frames else list(seq.frame_stamps)
    index_of = {s: i for i, s in enumerate(stamps)}
    where = f"bag {reader.path}"

    if protocol == "one-shot":
        refs = sorted(_reference_prompts(reader, reference_topic, camera_topic),
                      key=lambda p: p.stamp_ns)
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise PlanError(f"{where}: frame stamps on {camera_topic!r} do not increase, so "
                            "frames cannot be assigned to episodes")
        starts = sorted({p.stamp_ns for p in refs})
        episodes: list[Episode] = []
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else None
            lo = bisect.bisect_left(stamps, start)
            hi = bisect.bisect_left(stamps, end) if end is not None else len(stamps)
            ep_prompts = [p for p in refs if p.stamp_ns == start]
            if hi > lo:
                episodes.append(Episode(len(episodes), ep_prompts[0].label, list(range(lo, hi)),
                                        ep_prompts))
        if not episodes:
            raise PlanError(f"{where}: no frame on {camera_topic!r} follows a reference")
        targets = {p.target_id: p.label for e in episodes for p in e.prompts}
        return EvalPlan(protocol, prompt, stamps, seq, episodes, targets)

    if prompt == "first-frame-gt":
        prompts = _first_frame_prompts(reader, seq, gt_topic, index_of)
        if not prompts:
            raise PlanError(f"{where}: no object appears in the ground truth on {gt_topic!r}"
                            + (f" within the first {max_frames} frames" if max_frames else ""))
    else:
        found = (_caption_prompts(reader, caption_topic, reader.object_labels() or seq.object_labels)
                 if prompt == "caption" else _reference_prompts(reader, reference_topic, camera_topic))
        prompts = [p for p in found if not stamps or p.stamp_ns <= stamps[-1]]
        if not prompts:
            topic = caption_topic if prompt == "caption" else reference_topic
            raise PlanError(f"{where}: every {prompt.split('-')[0]} on {topic!r} comes after the last frame")
    targets = {p.target_id: p.label for p in prompts}
    untaught = {k: v for k, v in seq.object_labels.items() if k not in targets}
    episode = Episode(0, "sequence", list(range(len(stamps))), prompts)
    return EvalPlan(protocol, prompt, stamps, seq, [episode], targets, untaught)
