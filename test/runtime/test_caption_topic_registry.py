"""The caption topic's bookkeeping in the target registry, without processes: the real
engine (small SAM2, random weights) and a real store; no text model, so captions are
stored and listed as waiting, which is all the topic's semantics need."""

from __future__ import annotations

import pytest

from refseg_ros.engine import EngineConfig, SegmentationEngine
from refseg_ros.runtime.registry import TargetRegistry, TeachError, caption_key
from refseg_ros.store import CAPTION_TOPIC, TargetStore, TaughtTarget


@pytest.fixture(scope="module")
def engine():
    return SegmentationEngine.from_config(EngineConfig(model="sam2.1_hiera_t", image_size=256, device="cpu"))


def caption(text: str) -> TaughtTarget:
    return TaughtTarget(0, "", "caption", caption=text)


def captions(registry: TargetRegistry) -> dict[int, str]:
    return {s.target.target_id: s.target.caption for s in registry.statuses()}


def test_caption_key_ignores_case_and_whitespace_only():
    assert caption_key("  The  red\tmug\n") == caption_key("the red mug") == "the red mug"
    assert caption_key("the red mug.") != caption_key("the red mug")
    assert caption_key("the redmug") != caption_key("the red mug")


def test_replace_mode_keeps_one_topic_target_and_never_touches_others(tmp_path, engine):
    registry = TargetRegistry(engine, TargetStore(tmp_path), ["/cam"], max_targets=2)
    service = registry.teach(caption("the red mug"))  # add_target: not the topic's
    assert service.startswith("taught target 1 ")
    assert registry.teach_topic_caption(caption("the red mug"), True).startswith("taught target 2 ")
    again = registry.teach_topic_caption(caption("THE RED  MUG"), True)
    assert again == "caption 'THE RED  MUG' already taught (waiting) as target 2: nothing new stored"
    # at max_targets, a replacement still fits: the one it replaces makes room
    text = registry.teach_topic_caption(caption("a blue box"), True)
    assert text.startswith("replaced target 2 'the red mug' with target 3 'a blue box' (caption) on every camera")
    assert text.endswith("; forgot target(s) 2 and their stored entries"), text
    assert captions(registry) == {1: "the red mug", 3: "a blue box"}
    assert TargetStore(tmp_path).ids() == [1, 3]
    # a refused caption changes nothing
    with pytest.raises(TeachError, match="caption is empty"):
        registry.teach_topic_caption(caption(" \n "), True)
    assert captions(registry) == {1: "the red mug", 3: "a blue box"}

    # after a restart the store still says which target came from the topic
    restarted = TargetRegistry(engine, TargetStore(tmp_path), ["/cam"], max_targets=2)
    restarted.restore()
    assert [t.source for t in TargetStore(tmp_path).load_all()] == ["", CAPTION_TOPIC]
    assert "already taught (waiting) as target 3" in restarted.teach_topic_caption(caption("a blue box"), True)
    assert restarted.teach_topic_caption(caption("the red mug"), True).startswith(
        "replaced target 3 'a blue box' with target 4 'the red mug'")
    assert captions(restarted) == {1: "the red mug", 4: "the red mug"}


def test_add_mode_adds_different_captions_up_to_max_targets(tmp_path, engine):
    registry = TargetRegistry(engine, TargetStore(tmp_path), ["/cam"], max_targets=2)
    registry.teach_topic_caption(caption("the red mug"), False)
    registry.teach_topic_caption(caption("a blue box"), False)
    assert "already taught (waiting) as target 1" in registry.teach_topic_caption(caption("the red mug "), False)
    with pytest.raises(TeachError, match="already 2 targets"):
        registry.teach_topic_caption(caption("a green ball"), False)
    assert captions(registry) == {1: "the red mug", 2: "a blue box"}
    # switched to replace: a new caption replaces every earlier topic target
    text = registry.teach_topic_caption(caption("a green ball"), True)
    assert text.startswith("replaced target 1 'the red mug', target 2 'a blue box' with target 3 'a green ball'")
    assert captions(registry) == {3: "a green ball"} and TargetStore(tmp_path).ids() == [3]
