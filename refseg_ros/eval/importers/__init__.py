"""Benchmark importers: a benchmark's own published layout -> one evaluation bag per
sequence or episode plus ``index.json`` (see :mod:`.index`), which records the protocol
that scoring follows.

- ``davis2017``: DAVIS 2017 semi-supervised (:mod:`.davis2017`);
- ``ref-davis``, ``ref-youtube-vos``, ``mevis``: referring VOS, a bag per expression
  (:mod:`.refvos`);
- ``fss1000``, ``deepglobe``, ``isic``, ``chest-xray``: few-shot, PATNet's episodes, a
  bag per episode (:mod:`.fewshot`);
- ``pascal5i``, ``coco20i``: PASCAL-5i / COCO-20i folds, FSSAM's protocol
  (:mod:`.pascal5i`).
"""

from __future__ import annotations

from refseg_ros.eval.importers import davis2017, fewshot, pascal5i, refvos
from refseg_ros.eval.importers.index import INDEX_FILE, read_index, run_options, summarize

BENCHMARKS = {"davis2017": davis2017, "ref-davis": refvos, "ref-youtube-vos": refvos,
              "mevis": refvos, "fss1000": fewshot, "deepglobe": fewshot, "isic": fewshot,
              "chest-xray": fewshot, "pascal5i": pascal5i,
              "coco20i": pascal5i}

__all__ = ["BENCHMARKS", "INDEX_FILE", "read_index", "run_options", "summarize"]
