"""Captions through the node over DDS, on the SAMWISE path: a SAMWISE checkpoint in the
official layout written from the small SAM2 (sam2_hiera_t at 256, the node's `model`) and
an adapter sized by its trunk, with the full RoBERTa-base text encoder (random weights),
and a tiny byte-level BPE tokenizer folder. A caption becomes a target tracked through
SAMWISE, with a mask on every frame; a checkpoint that does not fit the model, or a
missing tokenizer folder, leaves the node running and captions waiting with the reason.
"""

from __future__ import annotations

import re

import pytest
import torch

from support.node_harness import CAM0, CAM0_OBJECTS, list_targets, start_camera, start_node, teach_caption, wait_tracked
from support.tiny_models import samwise_state, save_roberta_tokenizer, tiny_samwise, write_samwise_checkpoint

MODEL = {"model": "sam2_hiera_t", "image_size": 256}  # the SAM2 the checkpoint's sam.* is for
# A checkpoint that does not fit: one adapter key left out, one CME key of another shape.
MISSING_KEY = "cmt_adapters.1.hsa.linear.bias"
RESHAPED_KEY = "conditional_memory_encoder.decision_class_head.weight"


@pytest.fixture(scope="module")
def samwise(tmp_path_factory):
    """{"checkpoint", "tokenizer", "state"}: files written once for the module."""
    folder = tmp_path_factory.mktemp("samwise")
    sam, adapter = tiny_samwise(MODEL["model"], MODEL["image_size"])
    state = samwise_state(sam, adapter)
    return {"checkpoint": write_samwise_checkpoint(folder / "samwise.pth", sam, adapter, state),
            "tokenizer": save_roberta_tokenizer(folder / "roberta-base"), "state": state}


def _start(tmp_path, procs, listener, checkpoint, tokenizer, camera: bool = False, **extra):
    params = {**MODEL, "cameras": [CAM0], "store_dir": "", "samwise_checkpoint": str(checkpoint),
              "samwise_tokenizer": str(tokenizer), "text_window": 2, **extra}
    node = start_node(tmp_path, params)
    procs.append(node)
    if camera:
        procs.append(start_camera(tmp_path, CAM0, "cam0_optical", rate=5))
    listener.wait_status("active", timeout=120, node=node)
    return node


def test_a_caption_is_tracked_through_samwise(tmp_path, samwise, listener, procs):
    node = _start(tmp_path, procs, listener, samwise["checkpoint"], samwise["tokenizer"], camera=True)
    assert "captions tracked by SAMWISE (causal window 2)" in node.output()

    ack = teach_caption(listener, node, "the red cup")
    assert "tracked through samwise" in ack, ack
    cup = int(re.search(r"taught target (\d+)", ack).group(1))
    wait_tracked(listener, node, CAM0_OBJECTS, cup)
    listed = list_targets(listener)
    assert {t: (v.kind, v.caption, v.path, v.status) for t, v in listed.items()} == {
        cup: ("caption", "the red cup", "samwise", "tracked")}


def test_a_checkpoint_for_another_model_keeps_captions_waiting(tmp_path, samwise, listener, procs):
    state = dict(samwise["state"])
    del state[MISSING_KEY]
    state[RESHAPED_KEY] = torch.zeros(3, 256)
    bad = write_samwise_checkpoint(tmp_path / "other.pth", None, None, state)
    node = _start(tmp_path, procs, listener, bad, samwise["tokenizer"])
    log = node.output()
    assert f"missing key {MISSING_KEY}" in log and RESHAPED_KEY in log, log[-4000:]

    ack = teach_caption(listener, node, "the red cup")
    assert "is waiting: the samwise text path could not be loaded (CheckpointError" in ack, ack
    assert f"missing key {MISSING_KEY}" in ack and f"key {RESHAPED_KEY} has shape (3, 256)" in ack, ack
    assert "other.pth" in ack, ack
    assert [(t.status, t.path) for t in list_targets(listener).values()] == [("waiting", "")]
    assert node.alive()


def test_a_missing_tokenizer_folder_names_the_parameter(tmp_path, samwise, listener, procs):
    absent = tmp_path / "no_tokenizer_here"
    node = _start(tmp_path, procs, listener, samwise["checkpoint"], absent)
    ack = teach_caption(listener, node, "the red cup")
    assert "is waiting: the samwise text path could not be loaded" in ack, ack
    assert f"tokenizer folder {absent} (parameter samwise_tokenizer) does not exist" in ack, ack
    assert [(t.status, t.path) for t in list_targets(listener).values()] == [("waiting", "")]
    assert node.alive()


def test_clip_mode_publishes_each_clip_with_its_frames_headers(tmp_path, samwise, listener, procs):
    """text_mode clip: the caption's results come when a clip of 2 frames completes: the
    clip's last frame carries it in its own array, the first frame gets an extra array
    with its own header (its array, published at once, left the caption target out)."""
    node = _start(tmp_path, procs, listener, samwise["checkpoint"], samwise["tokenizer"], camera=True,
                  text_mode="clip")
    assert "captions tracked by SAMWISE (clips of 2, results 1 frames late)" in node.output()
    cup = int(re.search(r"taught target (\d+)", teach_caption(listener, node, "the red cup")).group(1))

    def stamps():
        with_cup, without = [], []
        for _, array in listener.received(CAM0_OBJECTS):
            key = (array.header.stamp.sec, array.header.stamp.nanosec)
            (with_cup if any(o.target_id == cup for o in array.objects) else without).append(key)
        return with_cup, without
    listener.wait_for(lambda: len(stamps()[0]) >= 4, 120, "4 clip results", node)
    with_cup, without = stamps()
    assert len(set(with_cup)) == len(with_cup)  # each frame's clip result once
    late = set(with_cup) & set(without)  # first frames of clips: published first without it
    assert len(late) >= 1 and len(late) >= len(with_cup) // 2 - 1
