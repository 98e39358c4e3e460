"""Where a target is: mask centroid, bearing ray and 3D point, from numpy arrays only.

Conventions (REP-103 / REP-105, sensor_msgs/CameraInfo):

- Pixel coordinates: u (x) to the right, v (y) down, the centre of pixel (row r, column c)
  at (u, v) = (c, r), as CameraInfo's K assumes.
- The optical frame: z forward along the optical axis, x right, y down, metres.
- Depth images (REP-118): each pixel holds the z coordinate of the surface it sees, in
  metres (32FC1) or millimetres (16UC1); 0, NaN and +-inf mean "no measurement".

Raw and rectified images (CameraInfo, REP-104): a raw image is seen through K and the
lens distortion D; a rectified one (image_proc's `image_rect`, `image_rect_color`) has
had D removed and is seen through the projection matrix P, whose left 3 x 3 part is its
camera matrix (fx' = P[0], cx' = P[2], fy' = P[5], cy' = P[6]), with no distortion
(`Intrinsics.from_projection`). P's fourth column (Tx = -fx' * B, Ty) of the second camera
of a stereo pair only places its optical centre in the first camera's frame; bearings
and points here are in the image's own frame (`header.frame_id`, whose origin is that
camera's centre), so Tx and Ty do not enter, as in image_geometry's Python
PinholeCameraModel.projectPixelTo3dRay. The rectification rotation R is not applied
either: rays of a rectified image are in the rectified frame (R is the identity for a
monocular camera).

A target's position is the point on its bearing ray (the ray through the mask centroid)
whose z equals a percentile of the mask's valid depth values (the median by default): a
robust depth that ignores holes, flying pixels at the silhouette and background seen
through a mask that is a little too large, and a point that lies on the ray the bearing
gives, so that a controller that turns towards the bearing and one that drives to the
point agree.

Nothing here needs ROS; refseg_ros.ros.conversions unpacks the messages into these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

#: CameraInfo distortion models this module undistorts (others are refused).
RATIONAL_MODELS = ("plumb_bob", "rational_polynomial", "")
FISHEYE_MODELS = ("equidistant",)
#: Depth encodings: name -> (dtype, metres per unit).
DEPTH_ENCODINGS = {"16UC1": (np.dtype(np.uint16), 0.001), "mono16": (np.dtype(np.uint16), 0.001),
                   "32FC1": (np.dtype(np.float32), 1.0)}


def _camera_matrix(name: str, values: Sequence[float], columns: int, if_zero: str) -> np.ndarray:
    """CameraInfo's K (3 columns) or P (4) as a 3 x `columns` float64 array.

    Raises:
        ValueError: not 3 * columns finite values, all zero (`if_zero` says what that
            means), or focal lengths fx, fy not > 0.
    """
    M = np.asarray(values, np.float64).reshape(-1)
    if M.size != 3 * columns:
        raise ValueError(f"CameraInfo {name} has {M.size} values, needs {3 * columns}")
    M = M.reshape(3, columns)
    if not np.all(np.isfinite(M)):
        raise ValueError(f"CameraInfo {name} holds NaN or inf")
    if not np.any(M):
        raise ValueError(f"CameraInfo {name} is all zero ({if_zero}): no bearing or position")
    if M[0, 0] <= 0 or M[1, 1] <= 0:
        raise ValueError(f"CameraInfo {name} has focal lengths fx={M[0, 0]:g}, fy={M[1, 1]:g}; both must be > 0")
    return M


@dataclass(frozen=True)
class Intrinsics:
    """A camera's pinhole model and lens distortion (the used fields of CameraInfo).

    K: 3 x 3 float64 camera matrix, pixels ([fx 0 cx; 0 fy cy; 0 0 1]).
    D: (N,) float64 distortion coefficients in the order `distortion_model` names
       (plumb_bob: k1 k2 t1 t2 k3; rational_polynomial: 8; equidistant: k1..k4).
    width, height: the image size K belongs to, pixels (0: unknown).
    """

    K: np.ndarray
    D: np.ndarray
    width: int = 0
    height: int = 0
    distortion_model: str = "plumb_bob"

    @staticmethod
    def from_fields(k: Sequence[float], d: Sequence[float], width: int = 0, height: int = 0,
                    distortion_model: str = "plumb_bob") -> "Intrinsics":
        """Check and build from CameraInfo's fields (k: 9 row-major values, d: any length).

        Raises:
            ValueError: K is not 9 finite values with fx, fy > 0 (an all-zero K means an
                uncalibrated camera), D is not finite, or the model is not supported.
        """
        K = _camera_matrix("K", k, 3, "uncalibrated camera")
        D = np.asarray(d, np.float64).reshape(-1)
        if not np.all(np.isfinite(D)):
            raise ValueError("CameraInfo D holds NaN or inf")
        model = distortion_model or ("plumb_bob" if D.size else "")
        if model not in RATIONAL_MODELS + FISHEYE_MODELS:
            raise ValueError(f"CameraInfo distortion_model {distortion_model!r} is not supported "
                             f"(plumb_bob, rational_polynomial, equidistant)")
        if model in FISHEYE_MODELS and D.size not in (0, 4):
            raise ValueError(f"CameraInfo D of the equidistant model needs 4 values, has {D.size}")
        if model in RATIONAL_MODELS and D.size not in (0, 4, 5, 8, 12, 14):
            raise ValueError(f"CameraInfo D has {D.size} values; OpenCV takes 4, 5, 8, 12 or 14")
        return Intrinsics(K, D, int(width), int(height), model)

    @staticmethod
    def from_projection(p: Sequence[float], width: int = 0, height: int = 0) -> "Intrinsics":
        """The camera model of a rectified image: CameraInfo's P (12 row-major values), its
        left 3 x 3 part as the camera matrix and no distortion (Tx, Ty ignored: see the
        module's notes).

        Raises:
            ValueError: P is not 12 finite values with fx', fy' > 0 (an all-zero P: the
                camera's calibration has no rectified projection).
        """
        P = _camera_matrix("P", p, 4, "no rectified calibration; camera_rectified false reads K and D")
        return Intrinsics(np.ascontiguousarray(P[:, :3]), np.zeros(0), int(width), int(height), "")

    @property
    def distorted(self) -> bool:
        """Whether D holds a nonzero coefficient (else pixels map through K alone)."""
        return bool(self.D.size and np.any(self.D))


def is_rectified_topic(topic: str) -> bool:
    """Whether an image topic's name says it is rectified: its last name (without a
    /compressed suffix) has a `rect` or `rectified` part between underscores, as
    image_proc's `image_rect` and `image_rect_color` and drivers' `image_rect_raw` do
    (`image_raw`, `image_color`: no)."""
    parts = [p for p in topic.split("/") if p]
    if parts and parts[-1] == "compressed":
        parts.pop()
    return bool(parts) and any(word in ("rect", "rectified") for word in parts[-1].split("_"))


@dataclass(frozen=True)
class Centroid:
    """A mask's centroid (u, v) in pixels (float) and its area in pixels (0: empty mask)."""

    u: float
    v: float
    area: int


@dataclass(frozen=True)
class Position:
    """A target's 3D point in the optical frame, metres, or None; with the depth used.

    depth: the depth statistic (z, metres); valid_pixels: the mask's valid depth pixels.
    """

    point: Optional[np.ndarray]  # (3,) float64 x, y, z in metres
    depth: float
    valid_pixels: int


def mask_centroid(mask: np.ndarray, box: Optional[Sequence[int]] = None) -> Centroid:
    """Centroid and area of a boolean mask.

    Args:
        mask: H x W bool (or any dtype; nonzero = object).
        box: optional (x0, y0, x1, y1) inclusive pixel box that holds every mask pixel
            (the engine's box): only that part of the mask is read, which is much faster
            for small objects in large frames.
    Returns:
        Centroid(u, v, area): mean column and mean row of the mask's pixels, pixels (a
        pixel's centre at integer coordinates); (0, 0, 0) for an empty mask.
    """
    x0 = y0 = 0
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0 = max(x0, 0), max(y0, 0)
        mask = mask[y0:y1 + 1, x0:x1 + 1]
    m = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)
    cols = m.sum(axis=0, dtype=np.int64)
    area = int(cols.sum())
    if area == 0:
        return Centroid(0.0, 0.0, 0)
    rows = m.sum(axis=1, dtype=np.int64)
    u = float(np.dot(cols, np.arange(cols.size, dtype=np.int64))) / area + x0
    v = float(np.dot(rows, np.arange(rows.size, dtype=np.int64))) / area + y0
    return Centroid(u, v, area)


def undistort_points(intrinsics: Intrinsics, uv: np.ndarray) -> np.ndarray:
    """Pixels to normalised image coordinates (x/z, y/z) with the lens distortion removed.

    Args:
        uv: N x 2 float pixel coordinates (u right, v down).
    Returns:
        N x 2 float64 (x/z, y/z), through OpenCV's undistortPoints (fisheye.undistortPoints
        for the equidistant model); a plain K inverse when D is all zero.
    """
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    K = intrinsics.K
    if not intrinsics.distorted:
        x = (uv[:, 0] - K[0, 2] - K[0, 1] * (uv[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0]
        y = (uv[:, 1] - K[1, 2]) / K[1, 1]
        return np.stack([x, y], axis=1)
    import cv2

    pts = uv.reshape(-1, 1, 2)
    if intrinsics.distortion_model in FISHEYE_MODELS:
        out = cv2.fisheye.undistortPoints(pts, K, intrinsics.D)
    else:
        # The iterative solver's default (5 iterations) leaves ~1e-3 px of error on strong
        # distortion; 50 iterations or 1e-10 reach OpenCV's own projection within 1e-6.
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4 (Humble's 4.5 takes criteria only here)
            out = cv2.undistortPointsIter(pts, K, intrinsics.D, None, None, criteria)
        else:  # OpenCV 5
            out = cv2.undistortPoints(pts, K, intrinsics.D, None, None, None, criteria)
    return out.reshape(-1, 2).astype(np.float64)


def bearing(intrinsics: Intrinsics, u: float, v: float) -> np.ndarray:
    """The unit ray through pixel (u, v) in the optical frame (z forward, x right, y down).

    Returns:
        (3,) float64, norm 1, z > 0.
    """
    x, y = undistort_points(intrinsics, np.array([[u, v]]))[0]
    ray = np.array([x, y, 1.0])
    return ray / np.linalg.norm(ray)


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image as H x W float32 metres, invalid pixels NaN.

    Args:
        depth: H x W uint16 (16UC1/mono16, millimetres) or float32 (32FC1, metres).
        encoding: the Image encoding.
    Raises:
        ValueError: an encoding other than 16UC1, mono16 or 32FC1.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding {encoding!r} is not supported (16UC1 in millimetres, "
                         f"32FC1 in metres)")
    dtype, scale = DEPTH_ENCODINGS[encoding]
    if dtype == np.uint16:
        out = depth.astype(np.float32) * np.float32(scale)
        out[depth == 0] = np.nan
        return out
    out = np.asarray(depth, np.float32)
    return np.where(np.isfinite(out) & (out != 0), out, np.float32(np.nan)).astype(np.float32, copy=False)


def depth_image_array(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                      data) -> np.ndarray:
    """The raw pixels of a depth Image's fields: H x W uint16 or float32, native byte order.

    Raises:
        ValueError: unknown encoding, zero size, or too little data for height * step.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding {encoding!r} is not supported (16UC1 in millimetres, "
                         f"32FC1 in metres)")
    dtype = DEPTH_ENCODINGS[encoding][0]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"depth image of zero size ({width}x{height})")
    row = width * dtype.itemsize
    if step < row:
        raise ValueError(f"depth image step {step} is shorter than one row of {width} {encoding} pixels")
    buf = np.frombuffer(data, np.uint8)
    if buf.size < height * step:
        raise ValueError(f"depth image data holds {buf.size} bytes, fewer than height*step = {height * step}")
    rows = buf[:height * step].reshape(height, step)[:, :row]
    wire = dtype.newbyteorder(">" if is_bigendian else "<")
    return np.ascontiguousarray(rows).view(wire).reshape(height, width).astype(dtype, copy=False)


def fit_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """A registered depth image brought to the colour frame's size (nearest neighbour, so
    that no depth is invented between a surface and its background).

    Registered depth at another resolution sees what the colour camera sees, scaled: the
    same aspect ratio is required.

    Raises:
        ValueError: the aspect ratios differ by more than one pixel's worth.
    """
    dh, dw = depth.shape[:2]
    if (dh, dw) == (height, width):
        return depth
    if abs(dw * height - dh * width) > 0.01 * dw * height:
        raise ValueError(f"depth image {dw}x{dh} does not have the colour frame's ({width}x{height}) "
                         f"aspect ratio: it cannot be registered to it")
    import cv2

    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)


def mask_position(depth_m: np.ndarray, mask: np.ndarray, ray: np.ndarray, percentile: float = 50.0,
                  min_range: float = 0.0, max_range: float = float("inf"),
                  box: Optional[Sequence[int]] = None) -> Position:
    """The target's 3D point from the depth of its mask's pixels.

    Args:
        depth_m: H x W float32 depth in metres (z), invalid NaN (depth_to_metres).
        mask: H x W bool, the target's pixels, same size as depth_m.
        ray: (3,) the target's bearing (unit or not; z > 0).
        percentile: 0..100, which percentile of the valid depths to take (50: median).
        min_range, max_range: metres; depths outside [min_range, max_range] are invalid.
        box: optional (x0, y0, x1, y1) inclusive box that holds the mask (read only there).
    Returns:
        Position(point, depth, valid_pixels): point (3,) float64 metres on the ray at
        z = the percentile, or point None when no pixel of the mask has a valid depth.
    """
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0 = max(x0, 0), max(y0, 0)
        depth_m = depth_m[y0:y1 + 1, x0:x1 + 1]
        mask = mask[y0:y1 + 1, x0:x1 + 1]
    values = depth_m[mask]
    # NaN compares false, so this one test drops NaN too.
    values = values[(values >= max(min_range, np.finfo(np.float32).tiny)) & (values <= max_range)]
    if values.size == 0:
        return Position(None, 0.0, 0)
    z = percentile_of(values, percentile)
    ray = np.asarray(ray, np.float64)
    return Position(ray * (z / ray[2]), z, int(values.size))


def percentile_of(values: np.ndarray, percentile: float) -> float:
    """np.percentile's default (linear) rule through np.partition: the same number, about
    20x faster on a mask's depths (np.percentile sorts more than it needs).

    Args:
        values: (N,) N >= 1, finite.
        percentile: 0..100.
    """
    n = values.size
    h = (n - 1) * percentile / 100.0
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    # One k-th element: np.partition with two is ~15x slower. Everything before the
    # hi-th element is no larger than it, so the lo-th is their maximum.
    part = np.partition(values, hi)
    b = float(part[hi])
    a = float(part[:hi].max()) if hi > lo else b
    return a + (h - lo) * (b - a)


def project(intrinsics: Intrinsics, points: np.ndarray) -> np.ndarray:
    """Points of the optical frame (N x 3, metres, z > 0) to pixels (N x 2), with the
    camera's distortion (OpenCV projectPoints; fisheye.projectPoints for equidistant)."""
    import cv2

    pts = np.asarray(points, np.float64).reshape(-1, 1, 3)
    zero = np.zeros(3)
    if intrinsics.distortion_model in FISHEYE_MODELS:
        out, _ = cv2.fisheye.projectPoints(pts, zero, zero, intrinsics.K, intrinsics.D)
    else:
        out, _ = cv2.projectPoints(pts, zero, zero, intrinsics.K, intrinsics.D)
    return out.reshape(-1, 2)


@dataclass(frozen=True)
class TargetGeometry:
    """Where one target is on one frame.

    centroid: always (area 0 when the mask is empty or missing).
    bearing: (3,) unit ray in the optical frame, or None (no intrinsics, empty mask).
    position: None when no depth image was paired with the frame (or no bearing);
        otherwise a Position whose point is None when the mask has no valid depth pixel.
    """

    centroid: Centroid
    bearing: Optional[np.ndarray] = None
    position: Optional[Position] = None


EMPTY = TargetGeometry(Centroid(0.0, 0.0, 0))


def locate_all(masks: Sequence[Optional[np.ndarray]], boxes: Sequence[Optional[Sequence[int]]],
               intrinsics: Optional[Intrinsics], depth_m: Optional[np.ndarray] = None,
               percentile: float = 50.0, min_range: float = 0.0,
               max_range: float = float("inf")) -> list[TargetGeometry]:
    """`locate` for every target of a frame, with one undistortion call for all of them.

    Args:
        masks, boxes: one per target (None: not visible); the rest as `locate`.
    Returns:
        One TargetGeometry per target, in order.
    """
    centroids = [mask_centroid(m, b) if m is not None and b is not None else EMPTY.centroid
                 for m, b in zip(masks, boxes)]
    seen = [i for i, c in enumerate(centroids) if c.area > 0]
    out = [TargetGeometry(c) if c.area else EMPTY for c in centroids]
    if intrinsics is None or not seen:
        return out
    xy = undistort_points(intrinsics, np.array([[centroids[i].u, centroids[i].v] for i in seen]))
    for i, (x, y) in zip(seen, xy):
        ray = np.array([x, y, 1.0])
        ray /= np.linalg.norm(ray)
        position = None
        if depth_m is not None and depth_m.shape == masks[i].shape:
            position = mask_position(depth_m, masks[i], ray, percentile, min_range, max_range, boxes[i])
        out[i] = TargetGeometry(centroids[i], ray, position)
    return out


def locate(mask: Optional[np.ndarray], box: Optional[Sequence[int]], intrinsics: Optional[Intrinsics],
           depth_m: Optional[np.ndarray] = None, percentile: float = 50.0, min_range: float = 0.0,
           max_range: float = float("inf")) -> TargetGeometry:
    """Centroid, bearing and position of one target's mask on one frame.

    Args:
        mask: H x W bool or None (not visible). box: its inclusive (x0, y0, x1, y1) or None.
        intrinsics: the colour camera's, or None (no bearing, no position).
        depth_m: H x W float32 metres (invalid NaN) registered to the colour frame, or None.
        percentile, min_range, max_range: as mask_position.
    """
    if mask is None or box is None:
        return EMPTY
    centroid = mask_centroid(mask, box)
    if centroid.area == 0:
        return EMPTY
    if intrinsics is None:
        return TargetGeometry(centroid)
    ray = bearing(intrinsics, centroid.u, centroid.v)
    if depth_m is None or depth_m.shape != mask.shape:
        return TargetGeometry(centroid, ray)
    return TargetGeometry(centroid, ray, mask_position(depth_m, mask, ray, percentile, min_range, max_range, box))
