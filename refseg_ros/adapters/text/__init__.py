"""SAMWISE text adapter (CVPR 2025, "SAMWISE: Infusing wisdom in SAM2 for text-driven
video segmentation") on the engine's SAM2, ROS-free.

One idea per module:

| module | one idea |
|---|---|
| `roberta.py` | RoBERTa-base as `transformers.RobertaModel`, fairseq names mapped, run in layer groups |
| `cmt.py` | the cross-modal temporal (CMT) adapter: HSA over P x P windows across a clip, V2T / T2V |
| `cme.py` | the conditional memory encoder (CME): decision token, one self-attention block, 2-way head |
| `adapter.py` | the trainable parts together (three CMT adapters, the text projection, the CME) |
| `checkpoint.py` | an official SAMWISE checkpoint -> the engine's SAM2 + the adapter, all or nothing |
| `preprocess.py` | the official frame preprocessing (PIL uint8 bilinear, long side 1024, zero pad) |
| `encoder.py` | the adapted image-encoder pass: Hiera stages interleaved with RoBERTa and the adapters |
| `decoding.py` | the mask decoder with the caption's prompt token; memory attention and memory writes |
| `clip_runner.py` | the official clip mode: clips of T frames, memory keyed by absolute frame index, CME |
"""
