"""SAM2's per-target computations on shared frame features, batched over targets.

Each function mirrors one stage of SAM2's tracking step (memory attention, mask
decoding, memory encoding) using the model's own modules, with the hooks the
adapters need: extra prompt tokens for the decoder and a reweighting of what a
frame writes to memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .features import FrameFeatures
from .memory import MemorySelection

NO_OBJECT_LOGIT = -1024.0  # SAM2's mask logit for "object absent"


@dataclass
class Decoded:
    """Decoder output for B targets."""

    low_res_masks: torch.Tensor  # (B, 1, S/4, S/4) logits
    high_res_masks: torch.Tensor  # (B, 1, S, S) logits
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)
    ious: torch.Tensor  # (B, M)


def attend_memory(
    model: torch.nn.Module,
    features: FrameFeatures,
    selections: list[MemorySelection],
) -> torch.Tensor:
    """Condition the frame on each target's memory; all selections share one layout.

    Returns the memory-conditioned top-level map (B, C, H, W).
    """
    batch = len(selections)
    C, mem_dim = model.hidden_dim, model.mem_dim
    device = features.vision_feats[-1].device
    memory, memory_pos = [], []
    for slot in range(len(selections[0].masks)):
        t_pos = selections[0].masks[slot][0]
        entries = [s.masks[slot][1] for s in selections]
        feats = torch.cat([e.maskmem_features for e in entries], dim=0).to(device)
        memory.append(feats.flatten(2).permute(2, 0, 1))
        pos = entries[0].maskmem_pos_enc.to(device).flatten(2).permute(2, 0, 1)
        pos = pos + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1]
        memory_pos.append(pos.expand(-1, batch, -1))
    num_ptr_tokens = 0
    n_ptrs = len(selections[0].pointers)
    if n_ptrs > 0:
        ptrs = torch.stack(
            [torch.cat([s.pointers[i][1].obj_ptr for s in selections], dim=0) for i in range(n_ptrs)]
        )  # (P, B, C)
        dists = torch.tensor(
            [[s.pointers[i][0] for s in selections] for i in range(n_ptrs)],
            device=device, dtype=torch.float32,
        )  # (P, B)
        ptr_pos = pointer_time_encoding(model, dists)  # (P, B, mem_dim)
        if mem_dim < C:
            split = C // mem_dim
            ptrs = ptrs.reshape(n_ptrs, batch, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
        memory.append(ptrs)
        memory_pos.append(ptr_pos)
        num_ptr_tokens = ptrs.shape[0]
    dtype = features.vision_feats[-1].dtype  # stored memories are bf16
    out = model.memory_attention(
        curr=[features.top(batch)],
        curr_pos=[features.top_pos(batch)],
        memory=torch.cat(memory, dim=0).to(dtype),
        memory_pos=torch.cat(memory_pos, dim=0).to(dtype),
        num_obj_ptr_tokens=num_ptr_tokens,
    )
    h, w = features.feat_sizes[-1]
    return out.permute(1, 2, 0).reshape(batch, C, h, w)


# A per-target change to memory attention's cross-attention (FSSAM's support calibration).
# Called once per memory-attention layer with the layer index and the projected, RoPE-rotated
# cross-attention inputs q (B, heads, Nq, d), k (B, heads, Nk, d), v (B, heads, Nk, d); returns
# (k', v', bias): the keys and values to attend to (Nk' tokens, may differ from Nk) and an
# additive logit bias (B, heads, Nq, Nk') on q k'^T / sqrt(d), or None for no bias.
CrossAttentionHook = Callable[
    [int, torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]],
]


def attend_memory_tokens(
    model: torch.nn.Module,
    curr: torch.Tensor,
    curr_pos: torch.Tensor,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    num_obj_ptr_tokens: int,
    cross_attention_hook: Optional[CrossAttentionHook] = None,
) -> torch.Tensor:
    """SAM2's memory attention on token tensors, optionally with a cross-attention hook.

    curr, curr_pos: (HW, B, C) frame tokens and their position encoding; memory,
    memory_pos: (M, B, mem_dim), the last `num_obj_ptr_tokens` of them object-pointer tokens
    (no RoPE). Returns the conditioned tokens (HW, B, C), sequence first, as
    `model.memory_attention` does.

    Without a hook this *is* `model.memory_attention(...)`. With one, every layer runs the
    module's own self-attention, norms and MLP; only the cross-attention's softmax step is
    done here, after the module's projections and RoPE, so that the hook can replace keys
    and values and bias the logits (softmax(q k'^T / sqrt(d) + bias) v', then the module's
    output projection).
    """
    attention = model.memory_attention
    if cross_attention_hook is None:
        return attention(curr=[curr], curr_pos=[curr_pos], memory=memory,
                         memory_pos=memory_pos, num_obj_ptr_tokens=num_obj_ptr_tokens)
    output = curr
    if attention.pos_enc_at_input:
        output = output + 0.1 * curr_pos
    if attention.batch_first:
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
    for index, layer in enumerate(attention.layers):
        output = layer._forward_sa(output, curr_pos)
        normed = layer.norm2(output)
        query = normed + curr_pos if layer.pos_enc_at_cross_attn_queries else normed
        keys = memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory
        attended = _hooked_rope_attention(
            layer.cross_attn_image, query, keys, memory, num_obj_ptr_tokens,
            lambda q, k, v, i=index: cross_attention_hook(i, q, k, v),
        )
        output = output + layer.dropout2(attended)
        hidden = layer.linear1(layer.norm3(output))
        output = output + layer.dropout3(layer.linear2(layer.dropout(layer.activation(hidden))))
    output = attention.norm(output)
    return output.transpose(0, 1) if attention.batch_first else output


def _hooked_rope_attention(attn, q, k, v, num_k_exclude_rope: int, hook) -> torch.Tensor:
    """One RoPEAttention step (batch-first (B, N, C) inputs) with `hook` before the softmax."""
    from sam2.modeling.position_encoding import apply_rotary_enc

    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    side = math.sqrt(q.shape[-2])
    attn.freqs_cis = attn.freqs_cis.to(q.device)
    if attn.freqs_cis.shape[0] != q.shape[-2]:  # the module's own rule for other sizes
        attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side).to(q.device)
    num_k_rope = k.size(-2) - num_k_exclude_rope
    k = k.clone()
    q, k[:, :, :num_k_rope] = apply_rotary_enc(
        q, k[:, :, :num_k_rope], freqs_cis=attn.freqs_cis, repeat_freqs_k=attn.rope_k_repeat)
    k, v, bias = hook(q, k, v)
    logits = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    if bias is not None:
        logits = logits + bias
    out = torch.softmax(logits, dim=-1) @ v
    return attn.out_proj(attn._recombine_heads(out))


def pointer_time_encoding(model: torch.nn.Module, dists: torch.Tensor) -> torch.Tensor:
    """Temporal code of object pointers at signed frame distances (P, B) -> (P, B, mem_dim)."""
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    P, B = dists.shape
    if not model.add_tpos_enc_to_obj_ptrs:
        return dists.new_zeros(P, B, model.mem_dim)
    t_diff_max = model.max_obj_ptrs_in_encoder - 1
    dim = model.hidden_dim if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
    if not model.use_signed_tpos_enc_to_obj_ptrs:
        dists = dists.abs()
    enc = get_1d_sine_pe(dists.flatten() / t_diff_max, dim=dim)
    return model.obj_ptr_tpos_proj(enc).reshape(P, B, model.mem_dim)


def without_memory(model: torch.nn.Module, features: FrameFeatures, batch: int) -> torch.Tensor:
    """Features of a prompt frame, which SAM2 decodes without memory."""
    C = model.hidden_dim
    h, w = features.feat_sizes[-1]
    tokens = features.top(batch) + model.no_mem_embed
    return tokens.permute(1, 2, 0).reshape(batch, C, h, w)


def decode(
    model: torch.nn.Module,
    pix_feat: torch.Tensor,
    high_res: Optional[list[torch.Tensor]],
    points: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    mask_inputs: Optional[torch.Tensor] = None,
    multimask: bool = False,
    extra_tokens: Optional[torch.Tensor] = None,
    gate_by_object_score: bool = True,
) -> Decoded:
    """Prompt encoder + mask decoder for B targets.

    `points` are (B, N, 2) coordinates in model-input pixels and (B, N) labels;
    `extra_tokens` (B, K, C) are appended to the sparse prompt (e.g. a caption's).
    `gate_by_object_score=False` keeps the decoder's masks when the object score says
    absent (FSSAM disables SAM2's replacement by -1024); the pointer is gated as always.
    """
    B = pix_feat.shape[0]
    device = pix_feat.device
    if points is None:
        coords = torch.zeros(B, 1, 2, device=device)
        labels = -torch.ones(B, 1, dtype=torch.int32, device=device)
    else:
        coords, labels = points
    dense_mask = None
    if mask_inputs is not None:
        size = model.sam_prompt_encoder.mask_input_size
        dense_mask = mask_inputs.float()
        if dense_mask.shape[-2:] != size:
            dense_mask = F.interpolate(dense_mask, size=size, mode="bilinear",
                                       align_corners=False, antialias=True)
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=dense_mask)
    if extra_tokens is not None:
        sparse = torch.cat([sparse, extra_tokens.to(sparse.dtype)], dim=1)
    multi_logits, ious, tokens, obj_logits = model.sam_mask_decoder(
        image_embeddings=pix_feat,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=high_res,
    )
    present = obj_logits > 0
    if model.pred_obj_scores and gate_by_object_score:
        multi_logits = torch.where(present[:, None, None], multi_logits, NO_OBJECT_LOGIT)
    multi_logits = multi_logits.float()
    out_token = tokens[:, 0]
    if multimask:
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(B, device=device)
        low_res = multi_logits[rows, best].unsqueeze(1)
        if tokens.size(1) > 1:
            out_token = tokens[rows, best]
    else:
        low_res = multi_logits
    high_res_masks = F.interpolate(low_res, size=(model.image_size, model.image_size),
                                   mode="bilinear", align_corners=False)
    obj_ptr = model.obj_ptr_proj(out_token)
    if model.pred_obj_scores:
        weight = obj_logits.sigmoid() if model.soft_no_obj_ptr else present.float()
        if model.fixed_no_obj_ptr:
            obj_ptr = weight * obj_ptr
        obj_ptr = obj_ptr + (1 - weight) * model.no_obj_ptr
    return Decoded(low_res, high_res_masks, obj_ptr, obj_logits, ious)


def decode_prompt(model: torch.nn.Module, features: FrameFeatures, inputs, extra_tokens: Optional[torch.Tensor] = None
                  ) -> Decoded:
    """A prompt (`prompts.PromptInputs`) on a frame decoded without memory, as SAM2 decodes
    a new prompt: a mask prompt becomes the output itself when the model says so, clicks
    use multimask output when their count lies in SAM2's multimask range."""
    if inputs.mask is not None and model.use_mask_input_as_output_without_sam:
        return mask_as_output(model, features, inputs.mask)
    n_points = 0 if inputs.points is None else inputs.points[1].shape[1]
    multimask = model.multimask_output_in_sam and (
        model.multimask_min_pt_num <= n_points <= model.multimask_max_pt_num)
    return decode(model, without_memory(model, features, 1), features.high_res(1),
                  points=inputs.points, mask_inputs=inputs.mask, multimask=multimask, extra_tokens=extra_tokens)


def mask_as_output(model: torch.nn.Module, features: FrameFeatures, masks: torch.Tensor) -> Decoded:
    """A mask prompt becomes the output itself (SAM2's use_mask_input_as_output)."""
    batch = masks.shape[0]
    outs = model._use_mask_as_output(features.pix_feat(batch), features.high_res(batch), masks)
    low_res, high_res, ious, _, _, obj_ptr, obj_logits = outs
    return Decoded(low_res, high_res, obj_ptr, obj_logits, ious)


MemoryWeighting = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def encode_memory(
    model: torch.nn.Module,
    features: FrameFeatures,
    high_res_masks: torch.Tensor,
    object_score_logits: torch.Tensor,
    from_prompt: bool,
    reweight: Optional[MemoryWeighting] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory features (B, mem_dim, h, w) in bf16, as SAM2 stores them, and their pos enc.

    `reweight(mask_for_mem, pix_feat)` may rescale the mask a frame writes to memory.
    """
    batch = high_res_masks.shape[0]
    pix_feat = features.pix_feat(batch)
    if model.binarize_mask_from_pts_for_mem_enc and from_prompt:
        mask_for_mem = (high_res_masks > 0).float()
    else:
        mask_for_mem = torch.sigmoid(high_res_masks)
    if reweight is not None:
        mask_for_mem = reweight(mask_for_mem, pix_feat)
    mask_for_mem = mask_for_mem * model.sigmoid_scale_for_mem_enc + model.sigmoid_bias_for_mem_enc
    out = model.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
    feats = out["vision_features"]
    if model.no_obj_embed_spatial is not None:
        absent = (object_score_logits <= 0).float()[..., None, None]
        feats = feats + absent * model.no_obj_embed_spatial[..., None, None]
    return feats.to(torch.bfloat16), out["vision_pos_enc"][-1]
