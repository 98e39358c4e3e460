"""DINOv2 ViT-B/14 as FSSAM uses it, on transformers' `Dinov2Model`, built from a config.

FSSAM (Xu et al., ICML 2025, "Pseudo Prompt Generator") takes the last block's patch
tokens, after the final LayerNorm, of images resized to 560 x 560: a 40 x 40 grid of
768-d features. Its checkpoints store the network in torch-hub names (`dino.blocks.N.*`);
`hub_to_hf` maps them onto `Dinov2Model`'s names. Nothing is downloaded.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F

# The `dinov2_vitb14` hub entry: 518 px pretraining size (37 x 37 positions), LayerScale,
# GELU MLP with ratio 4, LayerNorm eps 1e-6, biased qkv.
VITB14 = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
    patch_size=14, image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6,
    qkv_bias=True, hidden_act="gelu", use_swiglu_ffn=False,
)
INPUT_SIZE = 560  # FSSAM's DINOv2 input side: 40 x 40 patches of 14 px
# The hub model resizes its position table by a scale factor of (grid + 0.1) / 37 per
# axis, not to an output size of grid (what stock transformers does).
HUB_INTERPOLATE_OFFSET = 0.1
# Normalisation of 0..255 inputs, as FSSAM writes it: (v - 255 mean) / (255 std).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def _hub_embeddings_class():
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

    class HubDinov2Embeddings(Dinov2Embeddings):
        """`Dinov2Embeddings` with the hub model's position-table resize (bicubic, scale
        factor (grid + 0.1) / 37 per axis, no antialias), so that features equal the hub's."""

        def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
            table = self.position_embeddings
            num_patches, num_positions = embeddings.shape[1] - 1, table.shape[1] - 1
            if num_patches == num_positions and height == width:
                return table
            side = int(round(num_positions ** 0.5))
            patch = self.patch_embeddings.patch_size
            patch_h, patch_w = patch if isinstance(patch, (tuple, list)) else (patch, patch)
            rows, cols = height // patch_h, width // patch_w
            grid = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
            scale = ((rows + HUB_INTERPOLATE_OFFSET) / side, (cols + HUB_INTERPOLATE_OFFSET) / side)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
            if grid.shape[-2:] != (rows, cols):
                raise ValueError(f"position table resized to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
            grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(table.dtype)
            return torch.cat([table[:, :1], grid], dim=1)

    return HubDinov2Embeddings


def build_dinov2(**overrides) -> torch.nn.Module:
    """A randomly initialised ViT-B/14 `Dinov2Model` (eval mode) with hub-style positions.

    Weights come from an FSSAM checkpoint (`checkpoint.load_fssam_checkpoint`).
    """
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(**{**VITB14, **overrides})
    model = Dinov2Model(config)
    model.embeddings = _hub_embeddings_class()(config)
    return model.eval()


def normalise_for_dino(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float 0..255 at SAM2's input size -> (B, 3, 560, 560) DINOv2 input.

    Bilinear resize with align_corners=True, then (v - 255 mean) / (255 std), as FSSAM does.
    """
    mean = torch.tensor([m * 255 for m in PIXEL_MEAN], dtype=images.dtype, device=images.device)
    std = torch.tensor([s * 255 for s in PIXEL_STD], dtype=images.dtype, device=images.device)
    resized = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=True)
    return (resized - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


@torch.no_grad()
def patch_features(dino: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Last-layer, LayerNorm-ed patch features: (B, 3, 560, 560) float32 -> (B, 768, 40, 40).

    The class token is dropped; tokens are reshaped row-major to the patch grid.
    """
    hidden = dino(pixel_values=images).last_hidden_state[:, 1:]  # (B, 1600, 768)
    batch, tokens, channels = hidden.shape
    patch = dino.config.patch_size
    rows, cols = images.shape[-2] // patch, images.shape[-1] // patch
    if rows * cols != tokens:
        raise ValueError(f"{tokens} patch tokens for a {rows} x {cols} grid")
    return hidden.reshape(batch, rows, cols, channels).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------
# torch-hub names -> transformers names

_FIXED = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_RENAMED_IN_BLOCK = {
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
}
_KEPT_IN_BLOCK = {f"{m}.{p}" for m in ("norm1", "norm2", "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")}


def attention_names(hf_keys) -> tuple[tuple[str, str, str], str]:
    """The query/key/value and output-projection names inside `encoder.layer.N.` for this
    transformers version: `attention.{q,k,v}_proj` / `attention.o_proj` (>= 5.18), else
    `attention.attention.{query,key,value}` / `attention.output.dense`."""
    if any(".attention.q_proj." in k for k in hf_keys):
        return ("attention.q_proj", "attention.k_proj", "attention.v_proj"), "attention.o_proj"
    return (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
            "attention.output.dense")


def hub_to_hf(hub_state: Mapping[str, torch.Tensor], hf_keys) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a hub-named DINOv2 state dict (no prefix) for `Dinov2Model`.

    `blocks.N.attn.qkv.{weight,bias}` (3D rows) is split into three equal parts, q, k, v in
    that order. Returns (renamed tensors, hub keys with no counterpart); a qkv tensor whose
    first dimension is not divisible by 3 is returned as unknown.
    """
    qkv_names, out_name = attention_names(hf_keys)
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in hub_state.items():
        if key in _FIXED:
            renamed[_FIXED[key]] = tensor
            continue
        match = _BLOCK.match(key)
        if match is None:
            unknown.append(key)
            continue
        index, rest = match.groups()
        prefix = f"encoder.layer.{index}."
        if rest in _KEPT_IN_BLOCK:
            renamed[prefix + rest] = tensor
        elif rest in _RENAMED_IN_BLOCK:
            renamed[prefix + _RENAMED_IN_BLOCK[rest]] = tensor
        elif rest in ("attn.proj.weight", "attn.proj.bias"):
            renamed[prefix + out_name + rest[len("attn.proj"):]] = tensor
        elif rest in ("attn.qkv.weight", "attn.qkv.bias"):
            if tensor.dim() == 0 or tensor.shape[0] % 3 != 0:
                unknown.append(key)
                continue
            suffix = rest[len("attn.qkv"):]
            for name, part in zip(qkv_names, tensor.chunk(3, dim=0)):
                renamed[prefix + name + suffix] = part.contiguous()
        else:
            unknown.append(key)
    return renamed, unknown


def hf_to_hub_shapes(hf_state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """The hub-named keys (no prefix) and shapes a checkpoint must hold for this model."""
    qkv_names, out_name = attention_names(hf_state.keys())
    inverse = {v: k for k, v in _FIXED.items()}
    shapes: dict[str, tuple[int, ...]] = {}
    for key, tensor in hf_state.items():
        if key in inverse:
            shapes[inverse[key]] = tuple(tensor.shape)
            continue
        match = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", key)
        if match is None:
            shapes[key] = tuple(tensor.shape)  # no hub counterpart: reported as missing
            continue
        index, rest = match.groups()
        prefix = f"blocks.{index}."
        for hub_rest, hf_rest in _RENAMED_IN_BLOCK.items():
            if rest == hf_rest:
                shapes[prefix + hub_rest] = tuple(tensor.shape)
                break
        else:
            if rest in _KEPT_IN_BLOCK:
                shapes[prefix + rest] = tuple(tensor.shape)
            elif rest.startswith(out_name + "."):
                shapes[prefix + "attn.proj" + rest[len(out_name):]] = tuple(tensor.shape)
            elif rest.startswith(qkv_names[0] + "."):
                suffix = rest[len(qkv_names[0]):]
                shape = list(tensor.shape)
                shape[0] *= 3
                shapes[prefix + "attn.qkv" + suffix] = tuple(shape)
            elif any(rest.startswith(n + ".") for n in qkv_names[1:]):
                continue  # folded into qkv above
            else:
                shapes[key] = tuple(tensor.shape)
    return shapes
