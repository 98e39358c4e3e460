"""Loading official SAMWISE checkpoints: complete files load, broken ones are refused
naming the key or the file, and nothing is loaded half-way (the given SAM2 is unchanged).

Uses the SAMWISE fixtures' weight recipe for a file in the official layout (932 keys,
pickled argparse.Namespace in `args`), read with weights_only=True.
"""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest
import torch


from refseg_ros.adapters.text.checkpoint import load_samwise, read_checkpoint
from refseg_ros.engine.errors import CheckpointError
from refseg_ros.engine.model import build_model
from support.shared_fixtures import fixtures_dir


@pytest.fixture(scope="module")
def official_state():
    folder = fixtures_dir("samwise")
    spec = importlib.util.spec_from_file_location("samwise_fixture_weights", folder / "weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layout = json.loads((folder / "keys.json").read_text())
    return module.make_state_dict({k: s for k, s, _ in layout["keys"]}, 2)


def save(state, path):
    torch.save({"model": state, "optimizer": {"state": {}}, "lr_scheduler": {}, "epoch": 5,
                "args": argparse.Namespace(HSA=True, use_cme_head=True, lr=1e-4)}, path)


@pytest.fixture(scope="module")
def sam():
    return build_model("sam2_hiera_b+")


def _snapshot(model):
    keys = ("no_mem_embed", "image_encoder.neck.convs.0.conv.weight")
    return {k: v.clone() for k, v in model.state_dict().items() if k in keys}


def _unchanged(model, snap):
    now = model.state_dict()
    return all(torch.equal(now[k], v) for k, v in snap.items())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("corruption", ["missing_adapter_key", "wrong_shape", "unexpected_key", "missing_text_key"])
def test_broken_checkpoint_is_refused_naming_the_key(official_state, sam, tmp_path, corruption):
    state = dict(official_state)
    if corruption == "missing_adapter_key":
        key = "cmt_adapters.1.hsa.linear.bias"
        del state[key]
    elif corruption == "wrong_shape":
        key = "conditional_memory_encoder.decision_class_head.weight"
        state[key] = torch.zeros(3, 256)
    elif corruption == "unexpected_key":
        key = "cmt_adapters.3.proj_text_up.0.weight"
        state[key] = torch.zeros(768, 256)
    else:
        key = "text_encoder.model.encoder.sentence_encoder.layers.7.fc2.bias"
        del state[key]
    path = tmp_path / "samwise.pth"
    save(state, path)
    snap = _snapshot(sam)
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_samwise(path, sam=sam, verbose=False)
    assert _unchanged(sam, snap)


@pytest.mark.timeout(900)
def test_truncated_and_missing_files_name_the_file(official_state, tmp_path):
    path = tmp_path / "samwise.pth"
    save({k: official_state[k] for k in list(official_state)[:40]}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="samwise.pth could not be read"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pth")


@pytest.mark.timeout(900)
def test_official_layout_loads_completely(official_state, sam, tmp_path, capsys):
    path = tmp_path / "samwise.pth"
    save(official_state, path)
    loaded_sam, adapter = load_samwise(path, sam=sam)
    assert loaded_sam is sam
    assert "4,576,064 + text prompt 328,448 = 4,904,512 parameters; CME 331,394" in capsys.readouterr().out
    assert torch.equal(sam.no_mem_embed, official_state["sam.no_mem_embed"])
    emb = adapter.text_encoder.model.embeddings
    assert torch.equal(emb.word_embeddings.weight,
                       official_state["text_encoder.model.encoder.sentence_encoder.embed_tokens.weight"])
    assert float(emb.token_type_embeddings.weight.abs().max()) == 0.0
    assert torch.equal(adapter.cme.unused_norm.weight,
                       official_state["conditional_memory_encoder.transformerBlock.norm2.weight"])
    assert torch.equal(adapter.cmt[2].hsa_window_pos, official_state["cmt_adapters.2.spatial_pos_embed"])
    assert torch.equal(adapter.text_prompt.layers[1].bias,
                       official_state["sam.sam_prompt_encoder.project_text.layers.1.bias"])
