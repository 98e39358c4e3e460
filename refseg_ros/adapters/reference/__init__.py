"""Reference (one-shot / k-shot) targets: an object given by example images and masks.

Three ideas, one sub-package each, and two modules they share:

| where | what it offers |
|---|---|
| `prior/` | the DINOv2 prototype prior: acquisition and re-acquisition of a target that is not tracked, and the watch that declares a tracked one absent (`AcquisitionService`) |
| `fssam/` | FSSAM (ICML 2025): a target segmented afresh on every frame from its supports (`FssamSegmenter`, `FssamTracker`) |
| `cavsam/` | CAV-SAM (ICCV 2025): the TTGA-tuned neck (`TtgaTracker`) and DBST transition frames (`TransitionService`) |
| `dino.py` | DINOv2 ViT-B/14 on transformers' `Dinov2Model`, as FSSAM uses it (used by `fssam/` and `prior/`) |
| `prototypes.py` | masked-average prototypes and cosine maps (used by `fssam/` and `prior/`) |
"""
