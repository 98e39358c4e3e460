"""SAM2's heads as SAMWISE calls them: the caption token in the decoder, memory with
absolute frame keys, float32 memories.

SAMWISE decodes in single-mask mode and always takes mask token 0 (no dynamic
multimask choice, whatever the model's video settings); the caption's prompt token is
appended to the sparse prompt after SAM2's padding point. The memory-free pass also
yields the "early" mask token 0 (after the first two-way block) that the CME reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from refseg_ros.engine.features import FrameFeatures

NO_OBJECT_LOGIT = -1024.0


@dataclass
class TextDecoded:
    """Decoder output for one frame (B = 1).

    low_res_masks (1, 1, S/4, S/4) and high_res_masks (1, 1, S, S) float32 logits, -1024
    where the object score is <= 0; obj_ptr (1, 256) gated by presence; object_score_logits
    (1, 1); iou (1, 1) sigmoid IoU of mask token 0; early_token (1, 256) mask token 0
    after the first two-way block.
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    iou: torch.Tensor
    early_token: torch.Tensor


def decode_with_text(sam: torch.nn.Module, pix_feat: torch.Tensor, features: FrameFeatures,
                     text_token: torch.Tensor) -> TextDecoded:
    """pix_feat (1, 256, 64, 64) (memory-conditioned or + no_mem_embed), the frame's
    features for the high-res levels, text_token (1, 256) -> TextDecoded."""
    B = pix_feat.shape[0]
    coords = torch.zeros(B, 1, 2, device=pix_feat.device)
    labels = -torch.ones(B, 1, dtype=torch.int32, device=pix_feat.device)
    sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    sparse = torch.cat([sparse, text_token.view(B, 1, -1).to(sparse.dtype)], dim=1)
    decoder = sam.sam_mask_decoder
    captured = {}
    hook = decoder.transformer.layers[0].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("queries", out[0]))
    try:
        masks, ious, mask_tokens, obj_logits = decoder.predict_masks(
            image_embeddings=pix_feat,
            image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=features.high_res(B),
        )
    finally:
        hook.remove()
    first_mask_token = 1 + (1 if decoder.pred_obj_scores else 0)  # [obj score], iou, masks...
    early = captured["queries"][:, first_mask_token]
    low_res = masks[:, 0:1]
    present = obj_logits > 0
    if sam.pred_obj_scores:
        low_res = torch.where(present[:, None, None], low_res, NO_OBJECT_LOGIT)
    low_res = low_res.float()
    high_res = F.interpolate(low_res, size=(sam.image_size, sam.image_size), mode="bilinear", align_corners=False)
    obj_ptr = sam.obj_ptr_proj(mask_tokens[:, 0])
    if sam.pred_obj_scores:
        weight = obj_logits.sigmoid() if sam.soft_no_obj_ptr else present.float()
        if sam.fixed_no_obj_ptr:
            obj_ptr = weight * obj_ptr
        obj_ptr = obj_ptr + (1 - weight) * sam.no_obj_ptr
    return TextDecoded(low_res, high_res, obj_ptr, obj_logits, ious[:, 0:1], early)


def without_memory(sam: torch.nn.Module, features: FrameFeatures) -> torch.Tensor:
    """(1, 256, 64, 64): top-level features + no_mem_embed (a frame decoded without memory)."""
    h, w = features.feat_sizes[-1]
    tokens = features.vision_feats[-1] + sam.no_mem_embed
    return tokens.permute(1, 2, 0).reshape(1, sam.hidden_dim, h, w)


@dataclass
class MemoryEntry:
    """What a frame writes: maskmem_features (1, 64, 64, 64) float32, maskmem_pos_enc
    (1, 64, 64, 64), obj_ptr (1, 256)."""

    maskmem_features: torch.Tensor
    maskmem_pos_enc: torch.Tensor
    obj_ptr: torch.Tensor


def attend_memory(sam: torch.nn.Module, features: FrameFeatures, frame_idx: int,
                  bank: dict[int, MemoryEntry]) -> torch.Tensor:
    """SAMWISE's memory conditioning of frame `frame_idx` (absolute index) -> (1, 256, 64, 64).

    Frame 0: features + no_mem_embed. Otherwise SAM2 memory attention over the mask
    memories of frames t-6 ... t-1 present in `bank` (oldest first; k frames back gets
    maskmem_tpos_enc[k-1]) and the object pointers of frames t-1 ... t-15 (nearest first,
    4 tokens of 64 channels each, zero positional code). No conditioning frames.
    """
    if frame_idx == 0:
        return without_memory(sam, features)
    C, mem_dim = sam.hidden_dim, sam.mem_dim
    memory, memory_pos = [], []
    for back in range(sam.num_maskmem - 1, 0, -1):
        entry = bank.get(frame_idx - back)
        if entry is None:
            continue
        memory.append(entry.maskmem_features.flatten(2).permute(2, 0, 1))
        tpos = sam.maskmem_tpos_enc[min(back - 1, sam.maskmem_tpos_enc.shape[0] - 1)]
        memory_pos.append(entry.maskmem_pos_enc.flatten(2).permute(2, 0, 1) + tpos)
    num_ptr_tokens = 0
    max_ptrs = min(frame_idx + 1, sam.max_obj_ptrs_in_encoder)
    ptrs = [bank[frame_idx - d].obj_ptr for d in range(1, max_ptrs) if frame_idx - d in bank]
    if ptrs:
        stacked = torch.stack(ptrs, dim=0)  # (P, 1, C)
        split = C // mem_dim
        stacked = stacked.reshape(-1, 1, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        memory.append(stacked)
        memory_pos.append(stacked.new_zeros(stacked.shape))
        num_ptr_tokens = stacked.shape[0]
    out = sam.memory_attention(
        curr=[features.vision_feats[-1]],
        curr_pos=[features.vision_pos[-1]],
        memory=torch.cat(memory, dim=0),
        memory_pos=torch.cat(memory_pos, dim=0),
        num_obj_ptr_tokens=num_ptr_tokens,
    )
    h, w = features.feat_sizes[-1]
    return out.permute(1, 2, 0).reshape(1, C, h, w)


def encode_memory(sam: torch.nn.Module, features: FrameFeatures, high_res_masks: torch.Tensor,
                  obj_ptr: torch.Tensor) -> MemoryEntry:
    """The frame's memory from its (1, 1, S, S) logits: sigmoid x 20 - 10 into SAM2's memory
    encoder with the frame's un-conditioned top-level features; float32 (SAMWISE keeps
    its memories in the model's dtype)."""
    h, w = features.feat_sizes[-1]
    pix_feat = features.vision_feats[-1].permute(1, 2, 0).reshape(1, sam.hidden_dim, h, w)
    mask = torch.sigmoid(high_res_masks)
    if sam.sigmoid_scale_for_mem_enc != 1.0:
        mask = mask * sam.sigmoid_scale_for_mem_enc
    if sam.sigmoid_bias_for_mem_enc != 0.0:
        mask = mask + sam.sigmoid_bias_for_mem_enc
    out = sam.memory_encoder(pix_feat, mask, skip_mask_sigmoid=True)
    return MemoryEntry(out["vision_features"], out["vision_pos_enc"][-1], obj_ptr)


def output_logits(low_res: torch.Tensor, image_size: int, resized_hw: tuple[int, int],
                  frame_hw: tuple[int, int]) -> torch.Tensor:
    """(1, 1, S/4, S/4) logits -> (1, 1, H, W) at the frame's size: bilinear to S x S, crop
    the resized image, bilinear to the resized size then to the frame's (the official
    model output followed by its evaluation resize)."""
    x = F.interpolate(low_res, (image_size, image_size), mode="bilinear", align_corners=False)
    x = x[..., : resized_hw[0], : resized_hw[1]]
    x = F.interpolate(x, resized_hw, mode="bilinear", align_corners=False)
    return F.interpolate(x, frame_hw, mode="bilinear", align_corners=False)
