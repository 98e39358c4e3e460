"""One camera's geometry: its intrinsics, and where its targets are on a frame (no ROS needed).

The camera's channel (refseg_ros.ros.camera) feeds a `Locator` the camera's calibration
when a CameraInfo arrives (`calibrate`) and, per frame, the results and the depth image
paired with the frame, decoded (`locate`); the locator turns each target's mask
into its centroid, bearing and 3D position (the maths: refseg_ros.runtime.geometry) and
says which problems with the calibration or the depth apply now.

Problems come back as notes, ``{kind: text or None}``: a text is a problem to report (once,
while it lasts), None a problem of that kind gone. Kinds: ``camera_info`` (a CameraInfo
refused), ``camera_info_size`` (calibrated for another image size), ``depth_decode``,
``depth_size`` (a depth image that cannot be scaled to the frame), ``depth_empty``.
"""

from __future__ import annotations

from typing import Callable, Hashable, Optional, Sequence

import numpy as np

from . import geometry
from ..engine import TargetResult

Notes = dict[str, Optional[str]]


class Locator:
    """The intrinsics of one camera (from its newest valid CameraInfo) and its targets'
    geometry per frame.

    `info_topic` and `depth_topic` name the camera's CameraInfo and depth topics in the
    notes. Not thread-safe on its own: `calibrate` may run beside `locate`, which reads
    the intrinsics once.
    """

    def __init__(self, info_topic: str = "", depth_topic: str = ""):
        self.info_topic, self.depth_topic = info_topic, depth_topic
        self.intrinsics: Optional[geometry.Intrinsics] = None
        self._calibration: Optional[Hashable] = None

    def reset(self) -> None:
        """Forget the calibration (deactivation: the next CameraInfo is read afresh)."""
        self.intrinsics = self._calibration = None

    def calibrate(self, calibration: Hashable, intrinsics: Callable[[], geometry.Intrinsics]) -> Notes:
        """Take a CameraInfo's calibration.

        `calibration`: the fields it is made from (CameraInfo comes with every frame: the
        same calibration again changes nothing and costs nothing); `intrinsics()` builds
        the intrinsics, raising ValueError for an invalid calibration, which is refused
        (bearing and position then stay unset until a valid one arrives).
        """
        if calibration == self._calibration:
            return {}
        self._calibration = calibration
        try:
            self.intrinsics = intrinsics()
        except ValueError as exc:
            self.intrinsics = None
            return {"camera_info": f"CameraInfo on {self.info_topic} refused: {exc}"}
        return {"camera_info": None}

    def locate(self, results: Sequence[TargetResult], height: int, width: int, depth: Optional[np.ndarray],
               percentile: float, min_range: float, max_range: float,
               depth_problem: Optional[str] = None) -> tuple[list[geometry.TargetGeometry], Notes]:
        """Every result's centroid, and its bearing and position where the intrinsics and a
        depth image allow, on a `height` x `width` frame.

        `depth`: the depth image paired with the frame, an H' x W' float array in metres, or
        None (none paired, or `depth_problem` says why the paired one could not be
        decoded). A depth image of another size is scaled to the frame by the intrinsics
        (geometry.fit_depth). The channel decodes it even when no target is visible, so
        that a bad depth stream is reported before it matters (0.4 ms at 640x480).
        `percentile`, `min_range`, `max_range` (metres): geometry.locate_all's.

        Returns:
            one TargetGeometry per result, in order, and the notes of this frame.
        """
        notes: Notes = {}
        intrinsics = self.intrinsics  # read once: a CameraInfo may come in meanwhile
        if intrinsics is not None and intrinsics.width and intrinsics.height \
                and (intrinsics.width, intrinsics.height) != (width, height):
            notes["camera_info_size"] = (f"CameraInfo on {self.info_topic} is for {intrinsics.width}x"
                                         f"{intrinsics.height} images, the frames are {width}x{height}: "
                                         f"no bearing or position")
            intrinsics = None
        else:
            notes["camera_info_size"] = None
        depth_m = None
        if depth_problem is not None:
            notes["depth_decode"] = f"depth on {self.depth_topic} not used: {depth_problem}"
        elif depth is not None:
            depth_m = self._fit(depth, height, width, intrinsics, notes)
        located = geometry.locate_all([r.mask for r in results], [r.box for r in results], intrinsics, depth_m,
                                      percentile, min_range, max_range)
        if depth_m is not None:
            if any(w.position is not None and w.position.valid_pixels for w in located):
                notes["depth_empty"] = None
            elif not np.any((depth_m >= min_range) & (depth_m <= max_range)):
                notes["depth_empty"] = (f"depth image on {self.depth_topic} has no valid pixel (all 0, NaN, inf "
                                        f"or outside [{min_range:g}, {max_range:g}] m): no position")
        return located, notes

    def _fit(self, depth: np.ndarray, height: int, width: int, intrinsics: Optional[geometry.Intrinsics],
             notes: Notes) -> Optional[np.ndarray]:
        """The depth image at the frame's size, or None (the note says why)."""
        try:
            if depth.shape != (height, width):
                if intrinsics is None:
                    raise ValueError(f"depth image is {depth.shape[1]}x{depth.shape[0]}, the colour frame "
                                     f"{width}x{height}, and no valid CameraInfo has arrived to scale it by")
                depth = geometry.fit_depth(depth, height, width)
        except ValueError as exc:
            notes["depth_size"] = f"depth on {self.depth_topic} not used: {exc}"
            return None
        notes["depth_decode"] = notes["depth_size"] = None
        return depth
