"""A deterministic synthetic video with exact ground truth.

Real benchmark data cannot ship with the package and no trained weights are available
where the tests run, so the evaluation pipeline is exercised on scenes whose ground
truth is known by construction: the masks are the very pixels painted with each object,
so every score is exact. The scene holds the events a tracker must survive:

- a red disc that a blue square slides over and fully hides for a while (t in 0.4..0.6),
- a green triangle that leaves the frame and comes back (twice over the clip),
- a textured, slowly panning background, so no object is found by colour alone.

Paths depend only on the frame count and size; ``seed`` changes the textures.

The scene also has exact depth and a pinhole camera (`intrinsics`, no distortion): every
object is a flat card facing the camera at its own distance (OBJECT_DEPTHS: the square
nearest, then the triangle, then the disc, as they are painted), in front of a tilted
background plane, so each object's 3D point is known exactly (`object_positions`): on the
ray through its visible mask's centroid, at its card's depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np


@dataclass(frozen=True)
class SceneObject:
    """One object of the scene: its id in label maps, label, caption and colour."""

    object_id: int
    label: str
    caption: str
    color: tuple[int, int, int]


OBJECTS: tuple[SceneObject, ...] = (
    SceneObject(1, "red disc", "the red disc", (215, 40, 35)),
    SceneObject(2, "blue square", "the blue square", (35, 70, 215)),
    SceneObject(3, "green triangle", "the green triangle", (40, 175, 60)),
)

#: Bottom to top: later objects hide earlier ones where they overlap.
PAINT_ORDER: tuple[int, ...] = (1, 3, 2)

#: Distance of each object's card from the camera (its depth, z), metres.
OBJECT_DEPTHS: dict[int, float] = {1: 1.6, 3: 1.3, 2: 1.0}
#: Depth of the background plane at the top and the bottom row, metres.
BACKGROUND_DEPTH: tuple[float, float] = (3.0, 2.2)


def intrinsics(height: int, width: int) -> np.ndarray:
    """The scene camera's K (3 x 3 float64, pixels): f = 0.8 * width (a 64 degree
    horizontal field of view), principal point at the image centre; no distortion."""
    f = 0.8 * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def depth_map(masks: dict[int, np.ndarray], height: int, width: int) -> np.ndarray:
    """Exact depth of one frame: H x W float32 metres (z), from its visible masks."""
    top, bottom = BACKGROUND_DEPTH
    rows = np.linspace(top, bottom, height, dtype=np.float32)
    depth = np.repeat(rows[:, None], width, axis=1)
    for oid, mask in masks.items():
        depth[mask] = OBJECT_DEPTHS[oid]
    return depth


def object_positions(masks: dict[int, np.ndarray], K: np.ndarray) -> dict[int, np.ndarray]:
    """Ground-truth 3D point (3,) float64 metres in the optical frame of every visible
    object: its card's depth on the ray through its visible mask's centroid."""
    out = {}
    for oid, mask in masks.items():
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        u, v = cols.mean(), rows.mean()
        z = OBJECT_DEPTHS[oid]
        out[oid] = np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
    return out


@dataclass
class SyntheticSequence:
    """Frames and per-object visible masks of one generated clip."""

    frames: list[np.ndarray]  # H x W x 3 uint8 RGB
    masks: list[dict[int, np.ndarray]]  # per frame: object id -> H x W bool (visible part)
    objects: tuple[SceneObject, ...]
    fps: float
    start_ns: int
    seed: int
    amodal: list[dict[int, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def K(self) -> np.ndarray:
        """The scene camera's intrinsics (see `intrinsics`)."""
        return intrinsics(self.height, self.width)

    def depth(self, index: int) -> np.ndarray:
        """Exact depth of frame ``index``: H x W float32 metres."""
        return depth_map(self.masks[index], self.height, self.width)

    def positions(self, index: int) -> dict[int, np.ndarray]:
        """Ground-truth 3D point of every object visible in frame ``index`` (metres)."""
        return object_positions(self.masks[index], self.K)

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])

    def __len__(self) -> int:
        return len(self.frames)

    def stamp_ns(self, index: int) -> int:
        """Capture time of frame ``index`` in nanoseconds."""
        return frame_stamp_ns(index, self.fps, self.start_ns)

    def label_map(self, index: int) -> np.ndarray:
        """Ground truth of one frame as a uint8 label map (0 background, k object k)."""
        return label_map(self.masks[index])

    def object(self, object_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.object_id == object_id:
                return obj
        raise KeyError(f"no object {object_id} in the scene")


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _square_offset(t: float) -> float:
    """The square's lead over the disc: +1 -> 0 (t 0..0.4), 0 (0.4..0.6), 0 -> -1 (0.6..1).

    Smooth (zero slope at the joins), so the square glides onto the disc, stays on it
    and glides off.
    """
    if t < 0.4:
        return 1.0 - _smoothstep(t / 0.4)
    if t <= 0.6:
        return 0.0
    return -_smoothstep((t - 0.6) / 0.4)


def object_centres(t: float, height: int, width: int) -> dict[int, tuple[float, float]]:
    """Centre (x, y) in pixels of each object at normalised time t in [0, 1]."""
    disc = (width * (0.3 + 0.4 * t), height * (0.45 + 0.05 * math.sin(2 * math.pi * t)))
    square = (disc[0] + 0.45 * width * _square_offset(t), disc[1])
    triangle = (width * (0.55 + 0.7 * math.sin(2 * math.pi * t)), height * 0.8)
    return {1: disc, 2: square, 3: triangle}


def object_sizes(height: int, width: int) -> dict[int, float]:
    """Disc radius, square half side and triangle circumradius in pixels.

    The square's half side exceeds the disc's radius, so centred on it, it hides it.
    """
    s = min(height, width)
    return {1: 0.09 * s, 2: 0.15 * s, 3: 0.13 * s}


def shape_mask(object_id: int, centre: tuple[float, float], size: float,
               height: int, width: int) -> np.ndarray:
    """The full (amodal) mask of one object, evaluated at pixel centres."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    cx, cy = centre
    if object_id == 1:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= size * size
    if object_id == 2:
        return (np.abs(xx - cx) <= size) & (np.abs(yy - cy) <= size)
    if object_id == 3:
        angles = [-math.pi / 2, math.pi / 6, 5 * math.pi / 6]  # apex up
        pts = [(cx + size * math.cos(a), cy + size * math.sin(a)) for a in angles]
        inside = np.ones((height, width), bool)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            # Vertices run clockwise on screen (y down): interior on the right side.
            inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
        return inside
    raise KeyError(f"no object {object_id} in the scene")


def background_texture(height: int, width: int, rng: np.random.Generator,
                       tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Muted, multi-scale colour noise with stripes: busy but never object-coloured."""
    coarse = rng.uniform(70, 170, size=(6, 8, 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    mid = rng.uniform(-25, 25, size=(max(2, height // 12), max(2, width // 12), 3))
    img += cv2.resize(mid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(9, 15)
    img += (10 * np.sin(2 * np.pi * (xx + 0.6 * yy) / period))[..., None]
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    # Pull colours towards grey so that no background patch looks like an object.
    grey = img.mean(axis=2, keepdims=True)
    img = grey + 0.45 * (img - grey)
    img *= np.asarray(tint, np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _paint(canvas: np.ndarray, mask: np.ndarray, obj: SceneObject,
           centre: tuple[float, float], size: float, noise: np.ndarray) -> None:
    """Fill an object with its colour, a soft highlight and fine texture."""
    yy, xx = np.nonzero(mask)
    if yy.size == 0:
        return
    d = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1]) / max(size, 1.0)
    shade = 1.15 - 0.3 * np.clip(d, 0, 1.5)
    colour = np.asarray(obj.color, np.float32)[None, :] * shade[:, None]
    colour += noise[yy, xx]
    canvas[yy, xx] = np.clip(colour, 0, 255).astype(np.uint8)


@dataclass
class SyntheticFrame:
    """One rendered frame with its ground truth."""

    index: int
    image: np.ndarray  # H x W x 3 uint8 RGB
    masks: dict[int, np.ndarray]  # object id -> visible part, H x W bool
    amodal: dict[int, np.ndarray]  # object id -> whole shape, hidden parts included


def frame_stamp_ns(index: int, fps: float, start_ns: int) -> int:
    """Capture time of frame ``index`` of a clip starting at ``start_ns``."""
    return start_ns + int(round(index * 1e9 / fps))


def check_args(num_frames: int, height: int, width: int) -> None:
    """Reject clips too short or frames too small to hold the scene."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if height < 16 or width < 16:
        raise ValueError(f"frames must be at least 16x16 pixels, got {width}x{height}")


def iter_frames(num_frames: int = 30, height: int = 240, width: int = 320,
                seed: int = 0) -> Iterator[SyntheticFrame]:
    """Render the clip one frame at a time, so long clips need little memory.

    Same arguments, same pixels: all randomness comes from ``seed``.
    """
    check_args(num_frames, height, width)
    rng = np.random.default_rng(seed)
    pan = max(4, width // 16)
    wide = background_texture(height, width + pan, rng)
    object_noise = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    sizes = object_sizes(height, width)
    by_id = {o.object_id: o for o in OBJECTS}
    for i in range(num_frames):
        t = i / (num_frames - 1) if num_frames > 1 else 0.0
        x0 = int(round(pan * t))
        canvas = wide[:, x0 : x0 + width].copy()
        centres = object_centres(t, height, width)
        full = {oid: shape_mask(oid, centres[oid], sizes[oid], height, width) for oid in by_id}
        visible: dict[int, np.ndarray] = {}
        covered = np.zeros((height, width), bool)
        for oid in reversed(PAINT_ORDER):  # top first: what is already covered is hidden
            visible[oid] = full[oid] & ~covered
            covered |= full[oid]
        for oid in PAINT_ORDER:
            _paint(canvas, full[oid], by_id[oid], centres[oid], sizes[oid], object_noise)
        yield SyntheticFrame(i, canvas, {oid: visible[oid] for oid in sorted(visible)}, full)


def label_map(masks: dict[int, np.ndarray]) -> np.ndarray:
    """Visible masks as a uint8 label map (0 background, k object k)."""
    first = next(iter(masks.values()))
    out = np.zeros(first.shape, np.uint8)
    for oid, mask in masks.items():
        out[mask] = oid
    return out


def generate(num_frames: int = 30, height: int = 240, width: int = 320, seed: int = 0,
             fps: float = 10.0, start_ns: int = 1_000_000_000) -> SyntheticSequence:
    """Render a whole clip of ``num_frames`` frames of ``height`` x ``width`` pixels."""
    frames = list(iter_frames(num_frames, height, width, seed))
    return SyntheticSequence([f.image for f in frames], [f.masks for f in frames], OBJECTS,
                             fps, start_ns, seed, [f.amodal for f in frames])


@dataclass(frozen=True)
class ReferenceView:
    """One object shown alone, as a teach-by-example reference."""

    object_id: int
    label: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W bool


def render_reference(object_id: int, height: int = 240, width: int = 320,
                     seed: int = 0) -> ReferenceView:
    """Render one object alone, off-centre and larger, on an unrelated background.

    The background is drawn from another random stream and tinted, so a model cannot
    match the reference to the video by its surroundings.
    """
    obj = next((o for o in OBJECTS if o.object_id == object_id), None)
    if obj is None:
        raise KeyError(f"no object {object_id} in the scene")
    rng = np.random.default_rng([seed, 7919, object_id])
    image = background_texture(height, width, rng, tint=(0.9, 1.05, 1.1))
    size = 1.3 * object_sizes(height, width)[object_id]
    centre = (width * 0.38, height * 0.55)
    mask = shape_mask(object_id, centre, size, height, width)
    noise = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    _paint(image, mask, obj, centre, size, noise)
    return ReferenceView(object_id, obj.label, image, mask)
