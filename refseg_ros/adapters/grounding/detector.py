"""Zero-shot detection of a caption on one frame with a transformers detector.

Families (see loading.py): Grounding DINO (Liu et al. 2023, "Grounding DINO: Marrying
DINO with Grounded Pre-Training for Open-Set Object Detection"), MM-Grounding-DINO and
LLMDet on the same classes, and OWLv2 (Minderer et al. 2023, "Scaling Open-Vocabulary
Object Detection"). Boxes come from the processors' own post-processing
(`post_process_grounded_object_detection`, given the frame's size as `target_sizes`);
this module only clips them to the frame and sorts them.

Threads: `detect` runs the model under `torch.inference_mode` on the caller's thread
and takes a lock, so calls from several threads run one at a time (the fast tokenizers
are not safe to share between threads that run at once). It never changes torch's
thread settings: on a CPU the detector shares the process's intra-op pool
(`torch.get_num_threads()`) with whatever else runs, e.g. tracking.
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Union

import numpy as np
import torch

from .detection import Detection
from .loading import Family, PathLike, load_model

DEFAULT_MIN_SCORE = 0.05  # boxes scoring less are not returned at all
DEFAULT_TEXT_THRESHOLD = 0.25  # Grounding DINO: words scoring above this name the box
DEFAULT_MAX_DETECTIONS = 50


class GroundingDetector:
    """A caption -> boxes detector around one transformers model and its processor.

    Build one with `from_folder`; `detect(image, caption)` returns the boxes, best
    first. `model`, `processor` and `family` are the loaded objects (read-only use);
    `device` and `dtype` are where and in what the model runs.
    """

    def __init__(self, model: Any, processor: Any, family: Family, *,
                 device: Union[str, torch.device] = "cpu", min_score: float = DEFAULT_MIN_SCORE,
                 text_threshold: float = DEFAULT_TEXT_THRESHOLD,
                 max_detections: int = DEFAULT_MAX_DETECTIONS, source: Optional[str] = None) -> None:
        """Wrap a loaded `model` (on `device`, eval mode) and its `processor`.

        - `min_score` in [0, 1]: detections scoring at or below it are dropped by the
          post-processing (its `threshold`); keep it below the threshold that
          `selection.best_box` applies, so that the caller decides;
        - `text_threshold` in [0, 1]: Grounding DINO only, the score a caption word
          needs to be part of a box's label;
        - `max_detections` >= 1: at most this many boxes are returned (the best ones);
        - `source`: where the model came from, for messages.

        Raises ValueError for a threshold outside [0, 1] or `max_detections` < 1.
        """
        for name, value in (("min_score", min_score), ("text_threshold", text_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if int(max_detections) < 1:
            raise ValueError(f"max_detections must be at least 1, got {max_detections}")
        self.model = model
        self.processor = processor
        self.family = family
        self.device = torch.device(device)
        self.min_score = float(min_score)
        self.text_threshold = float(text_threshold)
        self.max_detections = int(max_detections)
        self.source = source
        self.dtype = next(model.parameters()).dtype  # the parameters' dtype; float inputs are cast to it
        self._max_text_tokens = _max_text_tokens(model.config, family)
        special = getattr(processor.tokenizer, "all_special_tokens", None) or []
        self._special_tokens = frozenset(special)
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: PathLike, device: Union[str, torch.device] = "cpu", *,
                    dtype: Optional[torch.dtype] = None, **options: Any) -> "GroundingDetector":
        """Load the detector saved (by `save_pretrained`) in a local `folder`.

        The family comes from config.json's `model_type` (loading.FAMILIES). `dtype`
        sets the parameters' dtype (None: as saved); `options` are `__init__`'s keyword
        arguments (min_score, text_threshold, max_detections). Nothing is downloaded.
        Raises GroundingModelError naming the path for a missing folder or file, an
        unknown model_type or weights that do not fit the model.
        """
        family, model, processor = load_model(folder, device=device, dtype=dtype)
        return cls(model, processor, family, device=device, source=str(folder), **options)

    def detect(self, image: np.ndarray, caption: str) -> list[Detection]:
        """The boxes where `caption` is seen in `image`, best score first.

        - `image`: H x W x 3 uint8 RGB, pixels (any H, W >= 1; the processor resizes it);
        - `caption`: what to find, e.g. "the red cup". Grounding DINO reads it lowercase
          and ending with "." (it is made so); OWLv2 takes it as one text query.

        Returns at most `max_detections` Detections scoring above `min_score`, each box
        (x0, y0, x1, y1) in pixels of `image` clipped to [0, W] x [0, H], with
        `frame_size` (H, W); boxes with no area inside the frame (e.g. in the square
        padding OWLv2 adds) are left out. Equal scores keep the model's order. Raises
        ValueError for an image that is not H x W x 3 uint8 or an empty caption;
        transformers may raise (ValueError) for a frame too small to resize, a few
        pixels a side.
        """
        height, width = _check_image(image)
        caption = _check_caption(caption)
        with self._lock, torch.inference_mode():
            if self.family.grounded:
                text: Any = _grounding_caption(caption)
            else:
                text = [[caption]]
            # `device`: the image processors resize and normalise on the model's device
            inputs = self.processor(images=image, text=text, return_tensors="pt",
                                    input_data_format="channels_last", device=self.device,
                                    truncation=True, max_length=self._max_text_tokens)
            inputs = {key: self._to_device(value) for key, value in inputs.items()}
            outputs = self.model(**inputs)
            target_sizes = [(height, width)]
            if self.family.grounded:
                result = self.processor.post_process_grounded_object_detection(
                    outputs, input_ids=inputs["input_ids"].cpu(), threshold=self.min_score,
                    text_threshold=self.text_threshold, target_sizes=target_sizes)[0]
                labels = [self._clean_label(label, caption) for label in result["text_labels"]]
            else:
                result = self.processor.post_process_grounded_object_detection(
                    outputs, threshold=self.min_score, target_sizes=target_sizes,
                    text_labels=[[caption]])[0]
                labels = list(result["text_labels"])
            boxes = result["boxes"].float().cpu().numpy().reshape(-1, 4)
            scores = result["scores"].float().cpu().numpy().reshape(-1)
        return _to_detections(boxes, scores, labels, height, width, self.max_detections)

    def _to_device(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if value.is_floating_point():
            return value.to(self.device, dtype=self.dtype)
        return value.to(self.device)

    def _clean_label(self, label: str, caption: str) -> str:
        """Grounding DINO's decoded words without special tokens and the closing '.'."""
        words = [word for word in label.split() if word not in self._special_tokens]
        cleaned = " ".join(words).strip(" .")
        return cleaned or caption

    def __repr__(self) -> str:
        return f"GroundingDetector({self.family.name}, source={self.source!r}, device={self.device})"


def _check_image(image: np.ndarray) -> tuple[int, int]:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be an H x W x 3 uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return int(height), int(width)


def _check_caption(caption: str) -> str:
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    return caption.strip()


def _grounding_caption(caption: str) -> str:
    """Grounding DINO was trained on lowercase phrases each closed by '.'."""
    text = caption.lower()
    return text if text.endswith(".") else text + "."


def _max_text_tokens(config: Any, family: Family) -> int:
    """The longest caption (tokens) the model takes; longer ones are truncated."""
    text_positions = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    limits = [int(text_positions)] if text_positions else []
    if family.grounded and getattr(config, "max_text_len", None):
        limits.append(int(config.max_text_len))
    return min(limits) if limits else 256


def _to_detections(boxes: np.ndarray, scores: np.ndarray, labels: list[str], height: int, width: int,
                   limit: int) -> list[Detection]:
    """(N, 4) float boxes in frame pixels and (N,) scores -> clipped, sorted Detections."""
    clipped = boxes.astype(np.float64, copy=True)
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, float(width))
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, float(height))
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & np.isfinite(scores)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if keep[i]][:limit]
    return [Detection(box=tuple(float(v) for v in clipped[i]), score=float(scores[i]), label=labels[i],
                      frame_size=(height, width)) for i in order]
