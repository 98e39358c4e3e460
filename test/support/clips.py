"""Small synthetic clips with exact masks, made on the fly for engine tests."""

from __future__ import annotations

import numpy as np


def moving_shapes(num_frames: int = 24, size: int = 256, seed: int = 0):
    """Frames (H x W x 3 uint8) and per-object masks for a disc, a square and a bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    background = (rng.integers(40, 90, size=(size // 8, size // 8, 3))).astype(np.uint8)
    background = np.kron(background, np.ones((8, 8, 1), dtype=np.uint8))
    frames, masks = [], []
    for t in range(num_frames):
        phase = t / max(num_frames - 1, 1)
        cx, cy = size * (0.25 + 0.5 * phase), size * (0.35 + 0.1 * np.sin(4 * phase))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (size * 0.11) ** 2
        sx, sy = size * (0.7 - 0.4 * phase), size * 0.7
        square = (abs(xx - sx) < size * 0.09) & (abs(yy - sy) < size * 0.09)
        bx = size * (0.15 + 0.2 * np.cos(3 * phase))
        bar = (abs(xx - bx) < size * 0.04) & (yy > size * 0.1) & (yy < size * 0.55)
        frame = background.copy()
        frame[bar] = (40, 200, 60)
        frame[square] = (40, 60, 220)
        frame[disc] = (220, 40, 40)
        frames.append(frame)
        masks.append({1: disc & ~np.zeros_like(disc), 2: square & ~disc, 3: bar & ~square & ~disc})
    return frames, masks


def write_fss_folder(root, classes=("blob",), pairs: int = 2, seed: int = 0, step: int = 5, size=(40, 48)):
    """An FSS-1000-style folder: per class, `pairs` random images <k>.jpg with a box mask
    <k>.png (rows step*k .. step*k+20, columns 10..30). Returns `root`."""
    import cv2

    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(1, pairs + 1):
            cv2.imwrite(str(root / cls / f"{k}.jpg"), rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))
            mask = np.zeros(size, np.uint8)
            mask[step * k: step * k + 20, 10:30] = 255
            cv2.imwrite(str(root / cls / f"{k}.png"), mask)
    return root
