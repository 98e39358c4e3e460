"""Tiny random-weight models built from configs for the tests: zero-shot detectors
(saved with their processors and hand-made vocabularies), DINOv2, SAMWISE's parts and a
Stable Diffusion pipeline for DBST. Nothing is downloaded; each builds in about a second
on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import transformers

# OWLv2's heads are set so that every patch predicts the same box with the same score.
# Box head: pred = sigmoid(box_head(features) + box_bias); zero weights and a bias of
# logit(OWL_BOX) give OWL_BOX (cx, cy, w, h, normalised to the padded square input) once
# the grid prior `box_bias` (a buffer rebuilt on loading) is zeroed after loading. Class
# head: zero class embeddings give logits (0 + shift) * (elu(scale) + 1) = OWL_LOGIT.
OWL_BOX = (0.5, 0.25, 0.5, 0.25)
OWL_LOGIT = 2.0
OWL_SCORE = 1.0 / (1.0 + math.exp(-OWL_LOGIT))
# The OWLv2 processor pads the 96 x 128 frame to a 128 x 128 square (bottom, right), and
# the box is normalised to that square: (32, 16, 96, 48) in frame pixels.
OWL_PIXELS = (32.0, 16.0, 96.0, 48.0)


def save_owlv2(folder: Path) -> Path:
    """A tiny OWLv2 whose every patch predicts OWL_BOX with OWL_SCORE, saved to `folder`."""
    torch.manual_seed(2)
    chars = list("abcdefghijklmnopqrstuvwxyz.")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (folder.parent / "clip_vocab.json").write_text(json.dumps(vocab))
    (folder.parent / "clip_merges.txt").write_text("#version: 0.2\n")  # no merges: one token a letter
    tokenizer = transformers.CLIPTokenizer(str(folder.parent / "clip_vocab.json"),
                                           str(folder.parent / "clip_merges.txt"), pad_token="<|endoftext|>")
    config = transformers.Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=bos,
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32)
    model = transformers.Owlv2ForObjectDetection(config)
    with torch.no_grad():
        head = model.box_head.dense2
        head.weight.zero_()
        head.bias.copy_(torch.logit(torch.tensor(OWL_BOX)))
        model.class_head.dense0.weight.zero_()
        model.class_head.dense0.bias.zero_()
        model.class_head.logit_shift.weight.zero_()
        model.class_head.logit_shift.bias.fill_(OWL_LOGIT)
        model.class_head.logit_scale.weight.zero_()
        model.class_head.logit_scale.bias.zero_()
    image_processor = transformers.Owlv2ImageProcessor(size={"height": 64, "width": 64})
    transformers.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder




def load_owl(folder: Path, **options):
    """The tiny OWLv2 through the real loader, with the grid prior zeroed (see OWL_BOX)."""
    from refseg_ros.adapters.grounding import GroundingDetector

    detector = GroundingDetector.from_folder(folder, **options)
    with torch.no_grad():
        detector.model.box_bias.zero_()
    return detector


def save_dinov2(folder: Path, size: int = 112, patch: int = 14) -> Path:
    """A DINOv2 of hidden size 32 and 2 layers at `size` pixels, saved to `folder`."""
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                       patch_size=patch, image_size=size)
    transformers.Dinov2Model(config).eval().save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------ SAMWISE
# A tiny byte-level BPE for RoBERTa's tokenizer: the specials at roberta-base's ids, the
# 256 characters of the byte-level alphabet, a handful of merges, and <mask> after them.
ROBERTA_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
ROBERTA_MERGES = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("r", "e"), ("Ġ", "c"), ("u", "p"))


def save_roberta_tokenizer(folder: Path) -> Path:
    """vocab.json + merges.txt in `folder`, readable by `transformers.RobertaTokenizer`
    (every id below roberta-base's 50265)."""
    from tokenizers.pre_tokenizers import ByteLevel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = dict(ROBERTA_SPECIALS)
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    for left, right in ROBERTA_MERGES:
        vocab[left + right] = len(vocab)
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in ROBERTA_MERGES)
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    return folder


def samwise_state(sam: torch.nn.Module, adapter) -> dict[str, torch.Tensor]:
    """`sam` (a SAM2 model) and `adapter` (a SamwiseAdapter) as the `model` state dict of
    an official SAMWISE checkpoint: `sam.*`, `sam.sam_prompt_encoder.project_text.*`,
    `cmt_adapters.*`, `conditional_memory_encoder.*` and `text_encoder.*` in fairseq's
    names (the masked-LM head tied to the token embedding, its other tensors zeros)."""
    from refseg_ros.adapters.text import cme, cmt
    from refseg_ros.adapters.text.checkpoint import PROJECT_TEXT, rename_prefix
    from refseg_ros.adapters.text.roberta import fairseq_to_hf

    state = {"sam." + k: v for k, v in sam.state_dict().items()}
    to_cmt = {ours: official for official, ours in cmt.OFFICIAL_NAMES.items()}
    to_cme = {ours: official for official, ours in cme.OFFICIAL_NAMES.items()}
    for key, tensor in adapter.state_dict().items():
        if key.startswith("text_encoder."):
            continue
        group, rest = key.split(".", 1)
        if group == "cmt":
            index, rest = rest.split(".", 1)
            state[f"cmt_adapters.{index}.{rename_prefix(rest, to_cmt)}"] = tensor
        elif group == "cme":
            state["conditional_memory_encoder." + rename_prefix(rest, to_cme)] = tensor
        elif group == "text_prompt":
            state[PROJECT_TEXT + rest] = tensor
        else:
            raise KeyError(key)
    hf = adapter.text_encoder.model.state_dict()
    for name, shape in adapter.text_encoder.fairseq_layout().items():
        target = fairseq_to_hf(name)
        state["text_encoder." + name] = hf[target] if target is not None else torch.zeros(shape)
    # fairseq ties the masked-LM head to the token embedding: one storage in the file
    state["text_encoder.model.encoder.lm_head.weight"] = hf["embeddings.word_embeddings.weight"]
    return state


def write_samwise_checkpoint(path: Path, sam: torch.nn.Module, adapter,
                             state: dict[str, torch.Tensor] | None = None) -> Path:
    """An official-layout SAMWISE file at `path` (model, optimizer, lr_scheduler, epoch
    and an argparse.Namespace in args); `state` overrides `samwise_state(sam, adapter)`."""
    import argparse

    torch.save({"model": samwise_state(sam, adapter) if state is None else state,
                "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {}, "epoch": 1,
                "args": argparse.Namespace(HSA=True, use_cme_head=True, lr=1e-4)}, path)
    return path


def tiny_samwise(model: str = "sam2_hiera_t", image_size: int = 256, seed: int = 0):
    """(SAM2, SamwiseAdapter) with random weights that give masks: the SAM2 of `model` at
    `image_size` with its object-score head saying "present" (the default init says
    absent), and an adapter sized by that trunk's stages whose zero-initialised
    trainable tensors are small random ones instead (else the adapter adds nothing)."""
    from refseg_ros.adapters.text.adapter import SamwiseAdapter
    from refseg_ros.engine.model import build_model

    torch.manual_seed(seed)
    sam = say_present(build_model(model, image_size=image_size).eval())
    trunk = sam.image_encoder.trunk
    adapter = SamwiseAdapter(stage_channels=tuple(trunk.blocks[i].dim_out for i in trunk.stage_ends[1:])).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            if p.requires_grad and p.abs().max() == 0:
                p.normal_(0, 0.02)
    return sam, adapter


# ------------------------------------------------------------------------ DBST (diffusion)
def save_tiny_pipeline(folder: Path) -> Path:
    """Save a tiny random-weight StableDiffusionPipeline to `folder` (diffusers needed).

    A UNet2DConditionModel with block channels (8, 16) and cross-attention in its first
    down / last up block and its mid block, an AutoencoderKL with two blocks (scale factor
    2, 4 latent channels), a one-layer CLIPTextModel with a hand-written letter vocabulary
    (written beside `folder`), and Stable Diffusion's DDIM scheduler settings: images are
    32 x 32 pixels, latents 4 x 16 x 16. Load it with `dbst.load_pipeline(folder)`.
    """
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    vocab_file, merges_file = folder.parent / f"{folder.name}_vocab.json", folder.parent / f"{folder.name}_merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n")  # no merges: one token a letter
    tokenizer = transformers.CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="<|endoftext|>",
                                           model_max_length=77)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=32)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------ SAM2
def say_present(sam: torch.nn.Module, present: bool = True) -> torch.nn.Module:
    """Set SAM2's object head to say "present" (logit +10) or "absent" (-10) on every
    frame; random weights otherwise score every object absent. Returns `sam`."""
    with torch.no_grad():
        sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0 if present else -10.0)
    return sam


def present_sam(model: str = "sam2_hiera_t", image_size: int = 256) -> torch.nn.Module:
    """A random-weight SAM2 (eval mode, CPU) whose object head always says "present"."""
    from refseg_ros.engine.model import build_model

    return say_present(build_model(model, image_size=image_size).eval())


def noise_reference(height: int = 96, width: int = 128, seed: int = 0):
    """A reference example: (H, W, 3) uint8 noise with a reddish block at rows 20-69,
    columns 30-89, and that block's (H, W) bool mask."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    mask[20:70, 30:90] = True
    image[mask] = (220, 40, 40)
    return image, mask


# ------------------------------------------------------------------ colour-keyed models
# Two models whose answers a test can predict, for following a red object through the
# node: a DINOv2 whose patch features are colour differences (so a red patch matches red
# examples and nothing else does), and a SAM2 whose masks are the red pixels with its
# object head always saying "present". Both are the real architectures with weights set by
# hand; everything not set here stays random.
RED = (220, 30, 30)


def save_colour_dinov2(folder: Path, size: int = 224, patch: int = 14) -> Path:
    """A one-layer DINOv2 (hidden size 8) whose patch features are the patch's mean colour
    differences (R-G, R-B, G-R, G-B, B-R, B-G, then +-1): its layer adds nothing
    (layer scales 0), positions and the class token are 0. Saved to `folder`."""
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, mlp_ratio=1,
                                       patch_size=patch, image_size=size)
    model = transformers.Dinov2Model(config).eval()
    rgb = {"R": 0, "G": 1, "B": 2}
    pairs = ("RG", "RB", "GR", "GB", "BR", "BG")
    with torch.no_grad():
        conv = model.embeddings.patch_embeddings.projection
        conv.weight.zero_()
        conv.bias.zero_()
        for channel, (plus, minus) in enumerate(pairs):
            conv.weight[channel, rgb[plus]] = 1.0 / patch ** 2
            conv.weight[channel, rgb[minus]] = -1.0 / patch ** 2
        conv.bias[6], conv.bias[7] = 1.0, -1.0
        model.embeddings.position_embeddings.zero_()
        model.embeddings.cls_token.zero_()
        for layer in model.encoder.layer:
            layer.layer_scale1.lambda1.zero_()
            layer.layer_scale2.lambda1.zero_()
        model.layernorm.weight.fill_(1.0)
        model.layernorm.bias.zero_()
    model.save_pretrained(folder)
    return folder


def red_sam2(model: str = "sam2.1_hiera_t", image_size: int = 256) -> torch.nn.Module:
    """SAM2 (random weights) whose decoder masks are the red pixels of the frame, whatever
    the prompt or memory: logit = 10 GELU(redness - 1.5) on the stride-4 grid, redness =
    the 7 x 7 mean of R - (G + B) / 2 in normalised input (about 3 on RED, below 0 on
    grey). Its object score is +10 and its predicted IoU sigmoid(5) on every frame.

    How: the trunk's first stage passes the patch embedding through (its block's residual
    branches zeroed), whose channel 0 is the redness; the neck's stride-4 level and the
    decoder's conv_s0 carry channel 0 through; the second upscaling layer is zeroed, so
    the upscaled embedding is GELU(conv_s0 features); every mask token's hypernetwork
    output is (10, 0, ..., 0)."""
    from refseg_ros.engine.model import build_model

    sam = build_model(model, image_size=image_size)
    trunk, decoder = sam.image_encoder.trunk, sam.sam_mask_decoder
    with torch.no_grad():
        embed = trunk.patch_embed.proj
        embed.weight[0] = 0.0
        embed.weight[0, 0] = 1.0 / 49
        embed.weight[0, 1:] = -0.5 / 49
        embed.bias[0] = -1.5
        trunk.pos_embed[:, 0] = 0.0
        trunk.pos_embed_window[:, 0] = 0.0
        first = trunk.blocks[0]
        for layer in (first.attn.proj, first.mlp.layers[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        lateral = sam.image_encoder.neck.convs[-1].conv  # the stride-4 level
        lateral.weight[0] = 0.0
        lateral.weight[0, 0] = 1.0
        lateral.bias[0] = 0.0
        decoder.conv_s0.weight[0] = 0.0
        decoder.conv_s0.weight[0, 0] = 1.0
        decoder.conv_s0.bias[0] = 0.0
        decoder.output_upscaling[3].weight.zero_()
        decoder.output_upscaling[3].bias.zero_()
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.zero_()
            mlp.layers[-1].bias[0] = 10.0
        for head, value in ((decoder.iou_prediction_head, 5.0), (decoder.pred_obj_score_head, 10.0)):
            head.layers[-1].weight.zero_()
            head.layers[-1].bias.fill_(value)
    return sam


def save_red_sam2(path: Path, model: str = "sam2.1_hiera_t", image_size: int = 256) -> Path:
    """`red_sam2` as an official checkpoint file ({"model": state_dict}) at `path`."""
    torch.save({"model": red_sam2(model, image_size).state_dict()}, path)
    return path
