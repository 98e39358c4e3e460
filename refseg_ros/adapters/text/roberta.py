"""RoBERTa-base text encoder through `transformers.RobertaModel`, run in layer groups.

SAMWISE (Sec. 3.2) interleaves RoBERTa's 12 layers with the Hiera stages: the text
stream goes through the embeddings and layer 0, then layers 1-3, 4-7 and 8-11, and a CMT
adapter runs after each of the last three groups. So the encoder is exposed as
`embed(input_ids)` plus `run_layers(hidden, start, end)`, never as one forward.

The official model is fairseq's RoBERTa-base (12 post-LN layers, 768 channels, 12 heads,
FFN 3072, erf GELU, LayerNorm eps 1e-5, learned positions indexed from padding_idx + 1
= 2, a LayerNorm on the embeddings, embedding scale 1). `transformers.RobertaModel`
computes the same function once the fairseq parameter names are mapped
(`fairseq_to_hf`) and its token-type embedding (which fairseq lacks) is zero.
"""

from __future__ import annotations

import re
from typing import Optional

import torch
from torch import nn

HIDDEN = 768
NUM_LAYERS = 12
# Layer groups [start, end) that SAMWISE runs between the Hiera stages (embeddings first).
LAYER_GROUPS = ((0, 1), (1, 4), (4, 8), (8, 12))

# fairseq prefix of the sentence encoder inside an official SAMWISE state dict.
FAIRSEQ_PREFIX = "model.encoder.sentence_encoder."
# fairseq keys that never enter the forward pass: the masked-LM head (its weight is tied
# to the token embedding) and two bookkeeping buffers. They are checked, then dropped.
FAIRSEQ_UNUSED = (
    "_float_tensor",
    "model.encoder.sentence_encoder.version",
    "model.encoder.lm_head.weight",
    "model.encoder.lm_head.bias",
    "model.encoder.lm_head.dense.weight",
    "model.encoder.lm_head.dense.bias",
    "model.encoder.lm_head.layer_norm.weight",
    "model.encoder.lm_head.layer_norm.bias",
)

_EMBEDDING_NAMES = {
    "embed_tokens.weight": "embeddings.word_embeddings.weight",
    "embed_positions.weight": "embeddings.position_embeddings.weight",
    "layernorm_embedding.weight": "embeddings.LayerNorm.weight",
    "layernorm_embedding.bias": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "output.LayerNorm",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias)$")


def roberta_base_config():
    """The RoBERTa-base configuration fairseq's `roberta.base` has (nothing downloaded)."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50265,
        hidden_size=HIDDEN,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",  # erf GELU, as fairseq's
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def fairseq_to_hf(name: str) -> Optional[str]:
    """Map one fairseq key (without the `text_encoder.` prefix) to its HF RobertaModel key.

    Returns None for the keys in FAIRSEQ_UNUSED; raises KeyError for anything unknown.
    """
    if name in FAIRSEQ_UNUSED:
        return None
    if not name.startswith(FAIRSEQ_PREFIX):
        raise KeyError(name)
    rest = name[len(FAIRSEQ_PREFIX):]
    if rest in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[rest]
    match = _LAYER_RE.match(rest)
    if match is None or match.group(2) not in _LAYER_NAMES or int(match.group(1)) >= NUM_LAYERS:
        raise KeyError(name)
    index, module, param = match.groups()
    return f"encoder.layer.{index}.{_LAYER_NAMES[module]}.{param}"


class RobertaText(nn.Module):
    """RoBERTa-base (frozen in SAMWISE) with the embeddings and layers callable apart.

    Tensors are batch-first: (B, L, 768) float32. No padding mask: SAMWISE encodes one
    caption per pass at inference, so no token is padding.
    """

    def __init__(self, config=None):
        super().__init__()
        from transformers import RobertaModel

        self.model = RobertaModel(config or roberta_base_config(), add_pooling_layer=False)
        with torch.no_grad():  # fairseq has no token types: a zero embedding adds nothing
            self.model.embeddings.token_type_embeddings.weight.zero_()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 token ids -> (B, L, 768): token + learned position (from index 2)
        embeddings, then LayerNorm (fairseq's `forward_embedding`)."""
        return self.model.embeddings(input_ids=input_ids)

    def run_layers(self, hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Layers [start, end) on (B, L, 768) hidden states; same shape out."""
        for layer in self.model.encoder.layer[start:end]:
            out = layer(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def load_fairseq(self, fairseq_state: dict[str, torch.Tensor]) -> None:
        """Load fairseq-named tensors (keys without `text_encoder.`); strict, all or nothing.

        Callers validate names and shapes first (see checkpoint.py); the token-type
        embedding is set to zero.
        """
        hf = {}
        for name, tensor in fairseq_state.items():
            target = fairseq_to_hf(name)
            if target is not None:
                hf[target] = tensor
        hf["embeddings.token_type_embeddings.weight"] = torch.zeros_like(
            self.model.embeddings.token_type_embeddings.weight
        )
        self.model.load_state_dict(hf, strict=True)

    def fairseq_layout(self) -> dict[str, tuple[int, ...]]:
        """Every fairseq key the official checkpoint holds for the text encoder, with its
        shape (FAIRSEQ_UNUSED included), derived from this model's own parameters."""
        shapes: dict[str, tuple[int, ...]] = {}
        own = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        for fs, hf in _EMBEDDING_NAMES.items():
            shapes[FAIRSEQ_PREFIX + fs] = own[hf]
        for i in range(NUM_LAYERS):
            for fs, hf in _LAYER_NAMES.items():
                for param in ("weight", "bias"):
                    shapes[f"{FAIRSEQ_PREFIX}layers.{i}.{fs}.{param}"] = own[f"encoder.layer.{i}.{hf}.{param}"]
        vocab = own["embeddings.word_embeddings.weight"][0]
        shapes.update({
            "_float_tensor": (1,),
            FAIRSEQ_PREFIX + "version": (1,),
            "model.encoder.lm_head.weight": (vocab, HIDDEN),
            "model.encoder.lm_head.bias": (vocab,),
            "model.encoder.lm_head.dense.weight": (HIDDEN, HIDDEN),
            "model.encoder.lm_head.dense.bias": (HIDDEN,),
            "model.encoder.lm_head.layer_norm.weight": (HIDDEN,),
            "model.encoder.lm_head.layer_norm.bias": (HIDDEN,),
        })
        return shapes
