"""SAMWISE adapter wiring on a small model (sam2_hiera_t at 512, PyTorch's default init):
captions matter, gradients reach every adapter parameter and no frozen one, and the CME
changes only what a frame writes to memory. No fixtures needed; a few seconds each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.adapters.text.adapter import SamwiseAdapter
from refseg_ros.adapters.text.clip_runner import ClipRunner
from refseg_ros.adapters.text.decoding import decode_with_text, without_memory
from refseg_ros.adapters.text.encoder import encode_clip
from refseg_ros.adapters.text.preprocess import preprocess_frame
from support.tiny_models import present_sam

CAPTION_A = torch.tensor([0, 1234, 873, 40001, 2])
CAPTION_B = torch.tensor([0, 99, 31337, 2])


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    sam = present_sam("sam2_hiera_t", 512).requires_grad_(False)
    trunk = sam.image_encoder.trunk
    channels = tuple(trunk.blocks[i].dim_out for i in trunk.stage_ends[1:])
    adapter = SamwiseAdapter(stage_channels=channels).eval()
    with torch.no_grad():  # away from the zero init, so that every branch is live
        for p in adapter.parameters():
            if p.requires_grad and p.abs().max() == 0:
                p.normal_(0, 0.02)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(6, 96, 128, 3), dtype=np.uint8)
    return sam, adapter, frames


def _images(sam, frames):
    return torch.stack([preprocess_frame(f, sam.image_size)[0] for f in frames])


def test_different_captions_give_different_tokens_and_masks(small):
    sam, adapter, frames = small
    images = _images(sam, frames[:2])
    with torch.no_grad():
        outs = []
        for ids in (CAPTION_A, CAPTION_B):
            clip = encode_clip(sam, adapter, images, ids)
            feats = clip.features[0]
            outs.append((clip.text_token, decode_with_text(sam, without_memory(sam, feats), feats, clip.text_token)))
    (tok_a, dec_a), (tok_b, dec_b) = outs
    assert tok_a.shape == (1, 256)
    assert float((tok_a - tok_b).abs().max()) > 1e-3
    assert float((dec_a.low_res_masks - dec_b.low_res_masks).abs().max()) > 1e-3


def test_mask_loss_reaches_every_adapter_parameter_and_no_frozen_one(small):
    sam, adapter, frames = small
    images = _images(sam, frames[:2])
    adapter.zero_grad(set_to_none=True)
    clip = encode_clip(sam, adapter, images, CAPTION_A)
    feats = clip.features[1]
    dec = decode_with_text(sam, without_memory(sam, feats), feats, clip.text_token)
    free = decode_with_text(sam, without_memory(sam, feats), feats, clip.text_token)
    loss = dec.low_res_masks.sigmoid().mean() + adapter.cme(dec.obj_ptr, free.early_token).logsumexp(-1).sum()
    loss.backward()
    trainable = {n: p for n, p in adapter.named_parameters() if p.requires_grad}
    assert not any(n.startswith("text_encoder.") for n in trainable)
    # the official CME block defines a LayerNorm it never applies: no gradient, by design
    missing = [n for n, p in trainable.items()
               if (p.grad is None or float(p.grad.abs().max()) == 0.0) and not n.startswith("cme.unused_norm.")]
    assert missing == []
    assert adapter.cme.unused_norm.weight.grad is None
    assert all(p.grad is None for p in adapter.text_encoder.parameters())
    assert all(p.grad is None for p in sam.parameters())


def test_cme_switch_changes_only_memory(small):
    sam, adapter, frames = small
    ids = CAPTION_A
    with torch.no_grad():
        plain = ClipRunner(sam, adapter, clip_window=8, cme_enabled=False)
        base = plain.run_video(frames, ids)
        bias = adapter.cme.decision_head.bias.clone()
        try:
            adapter.cme.decision_head.bias.copy_(torch.tensor([-1e4, 1e4]))  # always "switch"
            forced = ClipRunner(sam, adapter, clip_window=8)
            switched = forced.run_video(frames, ids)
        finally:
            adapter.cme.decision_head.bias.copy_(bias)
    assert [o.frame_idx for o in switched if o.cme_switched] == [5]
    for a, b in zip(base[:6], switched[:6]):  # the switching frame's own output is unchanged
        assert torch.equal(a.decoded.low_res_masks, b.decoded.low_res_masks)
    # what frame 5 wrote differs exactly where the memory-free logits are positive
    assert not torch.equal(plain.bank[5].maskmem_features, forced.bank[5].maskmem_features)
    assert all(torch.equal(plain.bank[t].maskmem_features, forced.bank[t].maskmem_features) for t in range(5))


def test_adapted_pass_gives_the_engines_feature_form(small):
    """With the adapters' vision outputs silenced, the adapted pass equals the engine's
    plain image-encoder pass level by level (same layout, sizes and positional codes)."""
    from refseg_ros.engine.features import encode_image

    sam, adapter, frames = small
    images = _images(sam, frames[:2])
    saved = [(m.vision_up[1].weight.clone(), m.vision_up[1].bias.clone()) for m in adapter.cmt]
    try:
        with torch.no_grad():
            for m in adapter.cmt:
                m.vision_up[1].weight.zero_()
                m.vision_up[1].bias.zero_()
            clip = encode_clip(sam, adapter, images, CAPTION_A)
            plain = [encode_image(sam, images[i:i + 1]) for i in range(2)]
    finally:
        with torch.no_grad():
            for m, (w, b) in zip(adapter.cmt, saved):
                m.vision_up[1].weight.copy_(w)
                m.vision_up[1].bias.copy_(b)
    for ours, theirs in zip(clip.features, plain):
        assert ours.feat_sizes == theirs.feat_sizes
        for a, b in zip(ours.vision_feats + ours.vision_pos, theirs.vision_feats + theirs.vision_pos):
            assert a.shape == b.shape
            assert float((a - b).abs().max()) <= 1e-5
