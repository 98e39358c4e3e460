"""The adapted image-encoder pass of SAMWISE (Sec. 3.2): Hiera + RoBERTa + CMT adapters.

For the T frames of one clip and one caption:

    vision: patch embed + position -> Hiera stage 1 -> stage 2 -> CMT 0 -> stage 3 -> CMT 1
            -> stage 4 -> CMT 2 -> FPN neck (the same neck and conv_s0/s1 as SAM2)
    text:   embeddings -> layer 0  -> layers 1-3 -> CMT 0 -> 4-7 -> CMT 1 -> 8-11 -> CMT 2

Each CMT adapter's vision output is added to the Hiera stream of every frame and its text
output to the RoBERTa stream. The text stream therefore depends on the clip; only the
embeddings and layer 0 depend on the caption alone. The first-token state after the last
adapter, through the text prompt MLP, is the caption's prompt token for every frame of the
clip.

The per-frame features come out as the engine's `FrameFeatures` (the same levels, layout
and positional encodings as `refseg_ros.engine.features.encode_image`), so the engine can
treat the pass as one more feature variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from refseg_ros.engine.features import FrameFeatures, neck_features

from .adapter import SamwiseAdapter
from .roberta import LAYER_GROUPS


@dataclass
class AdaptedClip:
    """Output of one adapted pass over a clip of T frames.

    features: T FrameFeatures, each with (H*W, 1, 256) token maps at strides 4, 8, 16;
    text_state: (768,) float32, the first-token (<s>) state after layer 11 and CMT 2;
    text_token: (1, 256) float32, the caption's extra sparse prompt token;
    adapter_inputs: per CMT adapter, the Hiera stream of the clip's frames entering it,
    (T, h_k, w_k, C_k) channels-last (what a causal window keeps of a frame).
    """

    features: list[FrameFeatures]
    text_state: torch.Tensor
    text_token: torch.Tensor
    adapter_inputs: list[torch.Tensor] = field(default_factory=list)


def stage_blocks(trunk: torch.nn.Module) -> list[tuple[int, int]]:
    """Hiera block ranges [start, end) of the four stages (hiera_b+: 0-2, 2-5, 5-21, 21-24)."""
    ends = [e + 1 for e in trunk.stage_ends]
    return list(zip([0] + ends[:-1], ends))


def encode_clip(
    sam: torch.nn.Module,
    adapter: SamwiseAdapter,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    probe: Optional[dict] = None,
    past: Optional[list[Optional[torch.Tensor]]] = None,
) -> AdaptedClip:
    """images (T, 3, S, S) float32 normalised, input_ids (L,) int64 -> AdaptedClip.

    `past`, if given, holds per CMT adapter k the Hiera stream of P earlier frames
    entering it, (P, h_k, w_k, C_k) (their `adapter_inputs`), or None: each adapter then
    attends over P + T frames (HSA, time code and text-to-vision mean included) and only
    the T new frames come out. This is the causal window of the streaming mode; the
    official clip mode passes no `past`.

    `probe`, if a dict, receives the streams around each adapter k, on every frame:
    `adapter{k}_txt_in/_txt_out` (L, 768) and `adapter{k}_vis_in/_vis_out`
    (T, C, h, w) channels-first.
    """
    trunk = sam.image_encoder.trunk
    T = images.shape[0]
    vis = trunk.patch_embed(images)  # (T, S/4, S/4, C) channels-last
    vis = vis + trunk._get_pos_embed(vis.shape[1:3])
    text = adapter.text_encoder
    txt = text.embed(input_ids.view(1, -1))  # (1, L, 768)
    stage_outputs, adapter_inputs = [], []
    for stage, ((v0, v1), (t0, t1)) in enumerate(zip(stage_blocks(trunk), LAYER_GROUPS)):
        for block in trunk.blocks[v0:v1]:
            vis = block(vis)
        txt = text.run_layers(txt, t0, t1)
        if stage > 0:
            k = stage - 1
            if probe is not None:
                probe[f"adapter{k}_txt_in"] = txt[0].detach().clone()
                probe[f"adapter{k}_vis_in"] = vis.permute(0, 3, 1, 2).detach().clone()
            adapter_inputs.append(vis)
            window = vis if past is None or past[k] is None else torch.cat([past[k], vis], dim=0)
            v_update, t_update = adapter.cmt[k](window.permute(0, 3, 1, 2), txt.transpose(0, 1))
            vis = vis + v_update[window.shape[0] - T:].permute(0, 2, 3, 1)
            txt = txt + t_update.transpose(0, 1)
            if probe is not None:
                probe[f"adapter{k}_txt_out"] = txt[0].detach().clone()
                probe[f"adapter{k}_vis_out"] = vis.permute(0, 3, 1, 2).detach().clone()
        stage_outputs.append(vis.permute(0, 3, 1, 2))
    features = neck_features(sam, stage_outputs)
    state = txt[0, 0]
    return AdaptedClip(features=features, text_state=state, text_token=adapter.text_prompt(state)[None],
                       adapter_inputs=adapter_inputs)
