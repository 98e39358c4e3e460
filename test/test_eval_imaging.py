"""sensor_msgs/Image fields <-> numpy: encodings, row padding, byte order, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refseg_ros import imaging

RNG = np.random.default_rng(0)

SHAPES = {
    "rgb8": ((5, 7, 3), np.uint8),
    "bgr8": ((5, 7, 3), np.uint8),
    "rgba8": ((5, 7, 4), np.uint8),
    "bgra8": ((5, 7, 4), np.uint8),
    "mono8": ((5, 7), np.uint8),
    "mono16": ((5, 7), np.uint16),
}


@pytest.mark.parametrize("encoding", sorted(SHAPES))
def test_round_trip(encoding):
    shape, dtype = SHAPES[encoding]
    arr = RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    fields = imaging.array_to_image_fields(arr, encoding)
    assert fields["step"] == shape[1] * (shape[2] if len(shape) == 3 else 1) * arr.itemsize
    back = imaging.image_to_array(**fields)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, arr)


def test_row_padding_is_skipped():
    arr = RNG.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
    step = 3 * 3 + 5  # 5 bytes of padding per row
    padded = np.full((4, step), 0xEE, np.uint8)
    padded[:, :9] = arr.reshape(4, 9)
    out = imaging.image_to_array("rgb8", 4, 3, step, False, padded.tobytes())
    np.testing.assert_array_equal(out, arr)


def test_big_endian_mono16():
    values = np.array([[1, 256, 0x1234]], dtype=np.uint16)
    data = values.astype(">u2").tobytes()
    out = imaging.image_to_array("mono16", 1, 3, 6, True, data)
    np.testing.assert_array_equal(out, values)
    little = imaging.image_to_array("mono16", 1, 3, 6, False, data)
    assert little[0, 1] == 1  # the same bytes read the other way round


def test_to_rgb8():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    assert imaging.to_rgb8(bgr, "bgr8")[0, 0].tolist() == [0, 0, 200]
    bgra = np.dstack([bgr, np.full((2, 2), 7, np.uint8)])
    assert imaging.to_rgb8(bgra, "bgra8")[0, 0].tolist() == [0, 0, 200]
    mono16 = np.full((2, 2), 65535, np.uint16)
    assert imaging.to_rgb8(mono16, "mono16")[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(encoding="yuv422", height=2, width=2, step=4), "unsupported image encoding"),
        (dict(encoding="rgb8", height=0, width=2, step=6), "zero size"),
        (dict(encoding="rgb8", height=2, width=2, step=5), "step 5 is shorter"),
        (dict(encoding="rgb8", height=3, width=2, step=6), "fewer than height"),
    ],
)
def test_bad_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        imaging.image_to_array(is_bigendian=False, data=bytes(12), **kwargs)


def test_array_must_fit_encoding():
    with pytest.raises(ValueError, match="does not fit encoding rgb8"):
        imaging.array_to_image_fields(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="dtype"):
        imaging.array_to_image_fields(np.zeros((2, 2), np.uint16), "mono8")
    with pytest.raises(ValueError, match="zero size"):
        imaging.array_to_image_fields(np.zeros((0, 2, 3), np.uint8), "rgb8")


def test_decode_compressed_png_is_exact_and_rgb():
    rgb = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(imaging.decode_compressed("png", png.tobytes()), rgb)


def test_decode_compressed_errors():
    with pytest.raises(ValueError, match="could not be decoded"):
        imaging.decode_compressed("jpeg", b"not an image")
    with pytest.raises(ValueError, match="no data"):
        imaging.decode_compressed("jpeg", b"")
    with pytest.raises(ValueError, match="depth"):
        imaging.decode_compressed("16UC1; compressedDepth", b"\x00" * 20)
