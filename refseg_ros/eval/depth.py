"""Depth and CameraInfo in evaluation bags, and the position error of the targets.

A bag may hold, beside its camera frames and ground-truth label maps:

- an aligned depth image per frame (``sensor_msgs/msg/Image``, 32FC1 metres or 16UC1
  millimetres, registered to the camera, stamped like its frame) on :data:`DEPTH_TOPIC`;
- the camera's ``sensor_msgs/msg/CameraInfo`` on :data:`CAMERA_INFO_TOPIC` (the first
  valid one is used).

When it holds both, the report adds each scored (frame, target) pair's position error:
the distance in metres between the target's 3D point computed from the predicted mask
and the one computed from the ground-truth mask, both with the node's rule
(refseg_ros.runtime.geometry: the median of the mask's valid depths on the ray through
its centroid) on the same depth image. In the synthetic scene (``refseg-eval build
synthetic --depth``) every object is a flat card facing the camera, so the ground-truth
point is exact: the card's depth on the ray through the visible part's centroid.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from refseg_ros.eval import bags
from refseg_ros.runtime import geometry

DEPTH_TOPIC = "/camera/depth/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
#: A depth image pairs with the frame whose stamp lies within this, nanoseconds.
STAMP_TOLERANCE_NS = 20_000_000


def depth_message(depth_m: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A rosbags 32FC1 Image of H x W metres (little endian, no row padding)."""
    arr = np.ascontiguousarray(depth_m, "<f4")
    if arr.ndim != 2:
        raise ValueError(f"a depth image must be 2-D, got shape {arr.shape}")
    t = bags.typestore().types[bags.IMAGE_TYPE]
    return t(header=bags._header(stamp_ns, frame_id), height=arr.shape[0], width=arr.shape[1],
             encoding="32FC1", is_bigendian=0, step=arr.shape[1] * 4,
             data=np.frombuffer(arr.tobytes(), np.uint8))


def camera_info_message(K: np.ndarray, width: int, height: int, stamp_ns: int,
                        frame_id: str = "camera", D: Optional[np.ndarray] = None,
                        distortion_model: str = "plumb_bob") -> Any:
    """A rosbags CameraInfo with K (3 x 3 pixels), D (default: 5 zeros), R = I, P = [K|0]."""
    store = bags.typestore()
    K = np.asarray(K, np.float64).reshape(3, 3)
    D = np.zeros(5) if D is None else np.asarray(D, np.float64)
    P = np.hstack([K, np.zeros((3, 1))])
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
    return store.types[CAMERA_INFO_TYPE](
        header=bags._header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model=distortion_model, d=D, k=K.reshape(-1), r=np.eye(3).reshape(-1),
        p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def write_depth(writer: bags.BagWriter, topic: str, stamp_ns: int, depth_m: np.ndarray,
                frame_id: str = "camera") -> None:
    """One aligned depth image (metres, NaN or 0 where unknown), stamped like its frame."""
    writer.write_message(topic, bags.IMAGE_TYPE, depth_message(depth_m, stamp_ns, frame_id), stamp_ns)


def write_camera_info(writer: bags.BagWriter, topic: str, stamp_ns: int, K: np.ndarray, width: int,
                      height: int, frame_id: str = "camera") -> None:
    writer.write_message(topic, CAMERA_INFO_TYPE, camera_info_message(K, width, height, stamp_ns, frame_id),
                         stamp_ns)


def has_depth(reader: bags.BagReader, depth_topic: str = DEPTH_TOPIC,
              info_topic: str = CAMERA_INFO_TOPIC) -> bool:
    """Whether the bag holds an Image depth topic and a CameraInfo topic."""
    return reader.topics.get(depth_topic) == bags.IMAGE_TYPE and reader.topics.get(info_topic) == CAMERA_INFO_TYPE


def read_intrinsics(reader: bags.BagReader, topic: str = CAMERA_INFO_TOPIC) -> geometry.Intrinsics:
    """The first valid CameraInfo of the bag.

    Raises:
        BagError: no valid CameraInfo on the topic (each refusal's reason is given).
    """
    reasons = []
    for _, msg in reader.messages(topic, (CAMERA_INFO_TYPE,)):
        try:
            return geometry.Intrinsics.from_fields(list(msg.k), list(msg.d), msg.width, msg.height,
                                                   msg.distortion_model)
        except ValueError as exc:
            reasons.append(str(exc))
    raise bags.BagError(f"bag {reader.path}: no valid CameraInfo on {topic!r}"
                        + (f" ({reasons[0]})" if reasons else ""))


def read_depths(reader: bags.BagReader, stamps: set[int], topic: str = DEPTH_TOPIC) -> dict[int, np.ndarray]:
    """Depth in metres (H x W float32, invalid NaN) of each wanted frame stamp, paired by
    the closest depth stamp within STAMP_TOLERANCE_NS."""
    wanted = sorted(stamps)
    out: dict[int, tuple[int, np.ndarray]] = {}
    for _, msg in reader.messages(topic, (bags.IMAGE_TYPE,)):
        stamp = bags.stamp_to_ns(msg.header.stamp)
        near = [s for s in wanted if abs(s - stamp) <= STAMP_TOLERANCE_NS]
        if not near:
            continue
        raw = geometry.depth_image_array(msg.encoding, msg.height, msg.width, msg.step,
                                         msg.is_bigendian, msg.data)
        depth = geometry.depth_to_metres(raw, msg.encoding)
        for s in near:
            if s not in out or abs(out[s][0] - s) > abs(stamp - s):
                out[s] = (stamp, depth)
    return {s: d for s, (_, d) in out.items()}


def position_errors(reader: bags.BagReader, run: Any, rows: list[dict[str, Any]], gt_topic: str,
                    depth_topic: str = DEPTH_TOPIC, info_topic: str = CAMERA_INFO_TOPIC,
                    percentile: float = 50.0) -> dict[str, Any]:
    """Add ``position_error_m`` to every scored row that has a ground-truth position and
    a predicted one, and return the summary numbers.

    Args:
        rows: scoring.Scores.rows (frame, stamp_ns, target_id, has_result, ...); changed
            in place: rows with a ground-truth position get ``position_error_m`` (None when
            the prediction has no position: an empty mask, or no valid depth under it).
        run: the run directory (predicted masks by frame).
    Returns:
        {"position_error_m_mean", "position_error_m_median", "position_error_m_max",
         "position_pairs" (rows with both positions), "position_missed" (ground truth
         located, prediction not)}.
    """
    intrinsics = read_intrinsics(reader, info_topic)
    depths = read_depths(reader, {int(r["stamp_ns"]) for r in rows}, depth_topic)
    gts = {s: lm for s, lm in reader.label_maps(gt_topic) if s in depths}
    loaded: dict[int, dict[int, np.ndarray]] = {}
    errors, missed = [], 0
    for r in rows:
        stamp = int(r["stamp_ns"])
        depth, lm = depths.get(stamp), gts.get(stamp)
        if depth is None or lm is None or depth.shape != lm.shape:
            continue
        truth = _point(lm == r["target_id"], intrinsics, depth, percentile)
        if truth is None:
            continue
        pred_mask = None
        if r.get("has_result"):
            frame = int(r["frame"])
            if frame not in loaded:
                loaded = {frame: run.load_masks(frame)}  # rows come frame by frame
            pred_mask = loaded[frame].get(r["target_id"])
        pred = _point(pred_mask, intrinsics, depth, percentile) if pred_mask is not None \
            and pred_mask.shape == lm.shape else None
        if pred is None:
            r["position_error_m"] = None
            missed += 1
            continue
        err = float(np.linalg.norm(pred - truth))
        r["position_error_m"] = err
        errors.append(err)
    return {"position_error_m_mean": float(np.mean(errors)) if errors else float("nan"),
            "position_error_m_median": float(np.median(errors)) if errors else float("nan"),
            "position_error_m_max": float(np.max(errors)) if errors else float("nan"),
            "position_pairs": len(errors), "position_missed": missed}


def _point(mask: Optional[np.ndarray], intrinsics: geometry.Intrinsics, depth: np.ndarray,
           percentile: float) -> Optional[np.ndarray]:
    if mask is None or not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    where = geometry.locate(mask, box, intrinsics, depth, percentile)
    return None if where.position is None else where.position.point
