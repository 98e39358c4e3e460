"""Tiny random-weight models built from configs for the tests: zero-shot detectors
(saved with their processors and hand-made vocabularies) and DINOv2. Nothing is
downloaded; each builds in about a second on 2 CPU cores.
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
