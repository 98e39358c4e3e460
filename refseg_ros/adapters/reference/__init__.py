"""Reference (one-shot / k-shot) targets: an object given by example images and masks.

Three ideas, one sub-package each, and two modules they share:

| where | what it offers |
|---|---|
| `prior/` | the DINOv2 prototype prior: finds a target not tracked, notices a tracked one gone |
| `fssam/` | FSSAM (ICML 2025): a target segmented afresh on every frame from its supports |
| `cavsam/` | CAV-SAM (ICCV 2025): the TTGA-tuned neck and DBST transition frames |
| `dino.py` | DINOv2 ViT-B/14 on transformers' `Dinov2Model`, as FSSAM uses it |
| `prototypes.py` | masked-average prototypes and cosine maps |

`dino.py` and `prototypes.py` serve both `fssam/` and `prior/`.
"""
