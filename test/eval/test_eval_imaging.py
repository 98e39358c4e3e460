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
    "rgb16": ((5, 7, 3), np.uint16),
    "bgr16": ((5, 7, 3), np.uint16),
    "rgba16": ((5, 7, 4), np.uint16),
    "bgra16": ((5, 7, 4), np.uint16),
    "8UC3": ((5, 7, 3), np.uint8),
    "16UC3": ((5, 7, 3), np.uint16),
    "16UC4": ((5, 7, 4), np.uint16),
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


def test_to_rgb8_sixteen_bits_round_v_over_257():
    """One 16 -> 8 bit rule: round(v / 257); k * 257 gives k back."""
    values = np.array([0, 128, 129, 256, 385, 386, 257 * 100, 65534, 65535], np.uint16)
    want = [0, 0, 1, 1, 1, 2, 100, 255, 255]
    assert imaging.to_rgb8(values[None], "mono16")[0, :, 0].tolist() == want
    every = imaging.u16_to_u8(np.arange(65536, dtype=np.uint16))
    assert every.dtype == np.uint8 and every.shape == (65536,)
    np.testing.assert_array_equal(every, np.rint(np.arange(65536) / 257))
    assert every[np.arange(256) * 257].tolist() == list(range(256))
    assert np.bincount(every).tolist() == [129] + [257] * 254 + [129]
    rgb = np.zeros((1, 1, 3), np.uint16)
    rgb[..., 0] = 65535  # red
    assert imaging.to_rgb8(rgb, "rgb16")[0, 0].tolist() == [255, 0, 0]
    assert imaging.to_rgb8(rgb[:, :, ::-1], "bgr16")[0, 0].tolist() == [255, 0, 0]
    bgra = np.dstack([rgb[:, :, ::-1], np.full((1, 1), 9, np.uint16)])
    assert imaging.to_rgb8(bgra, "bgra16")[0, 0].tolist() == [255, 0, 0]
    out = imaging.to_rgb8(np.full((3, 4, 4), 256, np.uint16), "16UC4")
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3) and out.flags.c_contiguous


def test_to_rgb8_refuses_arrays_that_do_not_fit():
    with pytest.raises(ValueError, match="needs uint16"):
        imaging.to_rgb8(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ValueError, match="does not fit encoding rgb8"):
        imaging.to_rgb8(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="does not fit encoding mono8"):
        imaging.to_rgb8(np.zeros((2, 2, 3), np.uint8), "mono8")


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


def test_decode_compressed_keeps_depth_and_channels():
    mono16 = np.array([[0, 256, 60000]], np.uint16)
    png = cv2.imencode(".png", mono16)[1].tobytes()
    for fmt, layout in [("16UC1; png compressed ", "16UC1"), ("mono16; png compressed ", "mono16"),
                        ("png", "mono16")]:
        pixels, got = imaging.decode_compressed_array(fmt, png)
        assert pixels.dtype == np.uint16 and got == layout
        np.testing.assert_array_equal(pixels, mono16)
        assert imaging.decode_compressed(fmt, png)[0, :, 0].tolist() == [0, 1, 233]
    bgra = RNG.integers(0, 65536, size=(3, 2, 4)).astype(np.uint16)
    png = cv2.imencode(".png", bgra)[1].tobytes()
    pixels, layout = imaging.decode_compressed_array("png", png)
    assert layout == "bgra16"
    np.testing.assert_array_equal(pixels, bgra)
    pixels, layout = imaging.decode_compressed_array("rgba16; png compressed bgr16",
                                                     cv2.imencode(".png", bgra[:, :, :3])[1])
    assert layout == "bgr16" and pixels.shape == (3, 2, 3)


def test_decode_compressed_errors():
    with pytest.raises(ValueError, match="could not be decoded"):
        imaging.decode_compressed("jpeg", b"not an image")
    with pytest.raises(ValueError, match="no data"):
        imaging.decode_compressed("jpeg", b"")
    with pytest.raises(ValueError, match="compressed depth images .* are not supported"):
        imaging.decode_compressed("16UC1; compressedDepth", b"\x00" * 20)
    with pytest.raises(ValueError, match="compressed depth"):
        imaging.decode_compressed_array("32FC1; compressedDepth png", b"\x00" * 20)


def test_image_files_follow_the_compressed_image_rule(tmp_path):
    """A 16-bit PNG file (taught with refseg-teach, or read by a bag builder) becomes the
    same model input as the same picture arriving as a raw mono16 Image."""
    import cv2

    from refseg_ros.eval.builders import read_rgb

    ramp = np.linspace(0, 60000, 64 * 48).astype(np.uint16).reshape(48, 64)
    cv2.imwrite(str(tmp_path / "ramp.png"), ramp)
    expected = imaging.to_rgb8(ramp, "mono16")
    assert np.array_equal(imaging.read_image_file(tmp_path / "ramp.png"), expected)
    assert np.array_equal(read_rgb(tmp_path / "ramp.png"), expected)
    with pytest.raises(ValueError, match="cannot read image .*missing.png"):
        imaging.read_image_file(tmp_path / "missing.png")
