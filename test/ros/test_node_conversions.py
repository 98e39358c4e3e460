"""Message <-> numpy conversions of the node, on real generated messages (no DDS)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from refseg_ros.engine import TargetResult, TargetState
from refseg_ros.msg import SegmentedObject
from refseg_ros.ros.conversions import (frame_from_message, image_message, mask_from_message,
                                        objects_message)
from refseg_ros.ros.qos import image_input_qos, output_qos, parse_reliability
from refseg_ros.runtime.render import label_image
from rclpy.qos import ReliabilityPolicy

RGB = np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8)


def raw(array: np.ndarray, encoding: str, step: int | None = None, big: bool = False) -> Image:
    h, w = array.shape[:2]
    row = array.reshape(h, -1).view(np.uint8)
    step = step or row.shape[1]
    buf = np.full((h, step), 7, np.uint8)
    buf[:, : row.shape[1]] = row
    return Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=int(big), data=buf.tobytes())


def test_padded_rows_decode_like_unpadded():
    assert np.array_equal(frame_from_message(raw(RGB, "rgb8", step=7 * 3 + 5)), RGB)
    assert np.array_equal(frame_from_message(raw(RGB, "rgb8")), RGB)


def test_bgr_and_mono_become_rgb():
    assert np.array_equal(frame_from_message(raw(RGB[:, :, ::-1].copy(), "bgr8")), RGB)
    mono = RGB[:, :, 0].copy()
    assert np.array_equal(frame_from_message(raw(mono, "mono8")), np.repeat(mono[:, :, None], 3, 2))
    big = (mono.astype(">u2") * 257)
    out = frame_from_message(raw(big, "mono16", big=True))
    assert np.array_equal(out[:, :, 0], mono)
    rgb16 = RGB.astype(np.uint16) * 257
    assert np.array_equal(frame_from_message(raw(rgb16, "rgb16")), RGB)
    assert np.array_equal(frame_from_message(raw(rgb16[:, :, ::-1].astype(">u2"), "bgr16", big=True)),
                          RGB)


def test_compressed_jpeg_and_png():
    png = cv2.imencode(".png", RGB[:, :, ::-1])[1].tobytes()
    assert np.array_equal(frame_from_message(CompressedImage(format="png", data=png)), RGB)
    big = np.kron(RGB, np.ones((8, 8, 1), np.uint8))
    jpg = cv2.imencode(".jpg", big[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out = frame_from_message(CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpg))
    assert out.shape == big.shape and np.abs(out.astype(int) - big).mean() < 8


def test_sixteen_bit_png_gives_the_raw_frame():
    """Same picture, raw mono16 or 16-bit png: the same frame (round(v / 257) both ways)."""
    mono16 = np.array([[256, 385, 386, 60000]], np.uint16)
    png = cv2.imencode(".png", mono16)[1].tobytes()
    want = frame_from_message(raw(mono16, "mono16"))
    assert want[0, :, 0].tolist() == [1, 1, 2, 233]
    for fmt in ("16UC1; png compressed ", "mono16; png compressed ", "png"):
        assert np.array_equal(frame_from_message(CompressedImage(format=fmt, data=png)), want)
    rgb16 = np.random.default_rng(1).integers(0, 65536, (5, 4, 3)).astype(np.uint16)
    png = cv2.imencode(".png", rgb16[:, :, ::-1])[1].tobytes()
    assert np.array_equal(
        frame_from_message(CompressedImage(format="rgb16; png compressed bgr16", data=png)),
        frame_from_message(raw(rgb16, "rgb16")))
    with pytest.raises(ValueError, match="compressed depth"):
        frame_from_message(CompressedImage(format="16UC1; compressedDepth", data=bytes(12) + png))


@pytest.mark.parametrize("msg,reason", [
    (Image(height=2, width=2, encoding="weird", step=6, data=bytes(12)), "unsupported image encoding"),
    (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(10)), r"fewer than height\*step"),
    (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "zero size"),
    (CompressedImage(format="jpeg", data=b""), "no data"),
    (CompressedImage(format="jpeg", data=b"garbage"), "could not be decoded"),
])
def test_bad_frames_raise_value_errors_that_say_why(msg, reason):
    with pytest.raises(ValueError, match=reason):
        frame_from_message(msg)


def test_masks():
    m = np.zeros((3, 4), np.uint8); m[1, 2] = 255
    assert mask_from_message(raw(m, "mono8")).tolist() == (m > 0).tolist()
    assert mask_from_message(raw(m, "8UC1", step=9)).sum() == 1
    with pytest.raises(ValueError, match="mask encoding must be one of"):
        mask_from_message(raw(RGB, "rgb8"))


def test_label_and_objects_messages_agree():
    h, w = 10, 12
    a = np.zeros((h, w), bool); a[1:4, 2:6] = True
    results = [TargetResult(5, "mug", a, 0.8, (2, 1, 5, 3), TargetState.TRACKED),
               TargetResult(6, "cup", np.zeros((h, w), bool), 0.1, None, TargetState.LOST)]
    lab = label_image(results, h, w)
    img = image_message(lab.labels, lab.encoding, Image().header)
    assert (img.width, img.height, img.step, img.encoding) == (w, h, 2 * w, "mono16")
    msg = objects_message(img.header, results, lab)
    first, second = msg.objects
    assert (first.target_id, first.label, first.mask_value, first.state) == (5, "mug", 5, SegmentedObject.STATE_TRACKED)
    assert (first.bbox.x_offset, first.bbox.y_offset, first.bbox.width, first.bbox.height) == (2, 1, 4, 3)
    assert (second.mask_value, second.state, second.bbox.width) == (0, SegmentedObject.STATE_LOST, 0)
    assert abs(first.score - 0.8) < 1e-6


def test_objects_carry_their_own_masks_when_asked():
    """Overlapping objects: the label image gives the shared pixels to the later object,
    the per-object masks keep both objects whole."""
    h, w = 8, 9
    a = np.zeros((h, w), bool); a[1:5, 1:5] = True
    b = np.zeros((h, w), bool); b[3:7, 3:7] = True
    results = [TargetResult(1, "a", a, 0.9, (1, 1, 4, 4), TargetState.TRACKED),
               TargetResult(2, "b", b, 0.9, (3, 3, 6, 6), TargetState.TRACKED),
               TargetResult(3, "c", np.zeros((h, w), bool), 0.0, None, TargetState.ACQUIRING)]
    lab = label_image(results, h, w)
    assert not objects_message(Image().header, results, lab).objects[0].mask.data
    msg = objects_message(Image().header, results, lab, with_masks=True)
    masks = [mask_from_message(o.mask) for o in msg.objects]
    assert masks[0].tolist() == a.tolist() and masks[1].tolist() == b.tolist()
    assert not masks[2].any() and masks[2].shape == (h, w)
    assert (lab.labels == 1).sum() < a.sum()  # the overlap went to target 2


def test_qos_by_mode_and_overrides():
    live = image_input_qos("live")
    assert live.reliability == ReliabilityPolicy.BEST_EFFORT and live.depth == 5
    replay = image_input_qos("replay")
    assert replay.reliability == ReliabilityPolicy.RELIABLE and replay.depth >= 100
    forced = image_input_qos("live", "reliable", 3)
    assert forced.reliability == ReliabilityPolicy.RELIABLE and forced.depth == 3
    assert output_qos("live").reliability == ReliabilityPolicy.RELIABLE
    with pytest.raises(ValueError, match="reliable or best_effort"):
        parse_reliability("sometimes")
