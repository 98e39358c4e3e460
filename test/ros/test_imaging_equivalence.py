"""One picture, every encoding x transport: the engine receives the same bytes.

For every row of ``imaging.TRANSPORT_TABLE`` the same picture is built as a raw
sensor_msgs/Image (little- and big-endian, with row padding) and as the CompressedImage a
compressed_image_transport publisher would send (payload converted to the layout its
format names, then cv2.imencode), and decoded the two ways the engine gets frames: the
node (``frame_from_message`` on rclpy messages) and the evaluation's bag reader
(``bags.message_to_rgb`` on rosbags messages). The model input is the H x W x 3 uint8
RGB array they return.

- raw and png (8- and 16-bit): byte-identical, and equal to an expectation computed here
  without refseg_ros: RGB order, 16-bit values rounded to round(v / 257);
- jpeg (lossy): byte-identical to sending the JPEG's own decoded pixels raw, and close
  to the raw frame (a swapped channel order or a wrong layout would be far off).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from refseg_ros import imaging
from refseg_ros.eval import bags
from refseg_ros.ros.conversions import frame_from_message

RNG = np.random.default_rng(7)

# What each encoding is, written out here rather than read from refseg_ros.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1,
            "8UC3": 3, "8UC4": 4, "rgb16": 3, "bgr16": 3, "rgba16": 4, "bgra16": 4,
            "mono16": 1, "16UC1": 1, "16UC3": 3, "16UC4": 4}
BGR = {"bgr8", "bgra8", "bgr16", "bgra16"}
SIXTEEN = {"rgb16", "bgr16", "rgba16", "bgra16", "mono16", "16UC1", "16UC3", "16UC4"}
RAMP_TOP = 60000

ROWS = {row.encoding: row for row in imaging.TRANSPORT_TABLE}
CASES = [(row.encoding, transport, fmt)
         for row in imaging.TRANSPORT_TABLE for transport, fmt in row.transports.items()
         if transport != "raw"]


def case_id(case):
    encoding, transport, _ = case
    return f"{encoding}-{transport}"


# --- pictures and the expected model input, without refseg_ros ----------------------


def dtype_of(encoding: str) -> type:
    return np.uint16 if encoding in SIXTEEN else np.uint8


def shaped(values: np.ndarray, encoding: str, height: int, width: int) -> np.ndarray:
    c = CHANNELS[encoding]
    return values.reshape((height, width) if c == 1 else (height, width, c))


def noise(encoding: str, height: int = 13, width: int = 11) -> np.ndarray:
    top = np.iinfo(dtype_of(encoding)).max
    values = RNG.integers(0, top, size=height * width * CHANNELS[encoding], endpoint=True)
    return shaped(values.astype(dtype_of(encoding)), encoding, height, width)


def ramp(encoding: str) -> np.ndarray:
    """Every value 0..60000 (16-bit) or 0..255 (8-bit), spread over pixels and channels."""
    c = CHANNELS[encoding]
    top = RAMP_TOP if encoding in SIXTEEN else 255
    width = -(-(top + 1) // c)  # ceil: one row holds the whole ramp
    values = np.minimum(np.arange(width * c), top)
    return shaped(values.astype(dtype_of(encoding)), encoding, 1, width)


def smooth(encoding: str, height: int = 48, width: int = 64) -> np.ndarray:
    """Gradients that differ per channel: what JPEG keeps well, and shows a channel swap."""
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [xx / (width - 1), yy / (height - 1), 1 - (xx + yy) / (width + height - 2),
              np.full((height, width), 0.5)]
    top = np.iinfo(dtype_of(encoding)).max
    stack = np.stack(planes[: CHANNELS[encoding]], axis=2) * (0.8 * top) + 0.1 * top
    return shaped(np.rint(stack).astype(dtype_of(encoding)), encoding, height, width)


def expected_rgb(picture: np.ndarray, encoding: str) -> np.ndarray:
    """H x W x 3 uint8 RGB: channel order by encoding, alpha dropped, round(v / 257)."""
    p = picture.astype(np.float64)
    if CHANNELS[encoding] == 1:
        p = np.repeat(p[:, :, None], 3, 2)
    elif encoding in BGR:
        p = p[:, :, [2, 1, 0]]
    else:
        p = p[:, :, :3]
    if encoding in SIXTEEN:
        p = np.rint(p / 257)  # v / 257 is never halfway: 257 is odd
    return p.astype(np.uint8)


# --- messages ------------------------------------------------------------------------


def raw_fields(picture: np.ndarray, encoding: str, big: bool, pad: int) -> dict:
    h, w = picture.shape[:2]
    order = ">" if big else "<"
    rows = picture.astype(picture.dtype.newbyteorder(order)).reshape(h, -1).view(np.uint8)
    buf = np.full((h, rows.shape[1] + pad), 0xA5, np.uint8)
    buf[:, : rows.shape[1]] = rows
    return dict(height=h, width=w, encoding=encoding, is_bigendian=int(big),
                step=rows.shape[1] + pad, data=buf.tobytes())


def payload_name(fmt: str) -> str:
    """The layout a compressed_image_transport format says the codec was given."""
    head, _, tail = fmt.partition(";")
    named = tail.split("compressed", 1)[1].strip()
    return named or head.strip()


def to_payload(picture: np.ndarray, encoding: str, name: str) -> np.ndarray:
    """What the publisher hands cv2.imencode: the picture in layout ``name``."""
    if name == encoding:
        return picture
    assert name in ("bgr8", "bgr16") and CHANNELS[encoding] >= 3, (encoding, name)
    bgr = picture[:, :, :3] if encoding in BGR else picture[:, :, [2, 1, 0]]
    if name == "bgr8" and encoding in SIXTEEN:  # the publisher reduces 16 -> 8 itself
        bgr = np.rint(bgr / 257.0)
    return np.ascontiguousarray(bgr.astype(np.uint8 if name.endswith("8") else np.uint16))


def compress(payload: np.ndarray, codec: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if codec == "jpeg" else []
    ok, data = cv2.imencode(".jpg" if codec == "jpeg" else ".png", payload, params)
    assert ok
    return data.tobytes()


def bag_message(kind: str, **fields):
    types = bags.typestore().types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam")
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    return types[kind](header=header, **fields)


def model_inputs_raw(picture: np.ndarray, encoding: str) -> dict[str, np.ndarray]:
    """The engine's frame from the raw picture, by every raw route."""
    out = {}
    for big in (False, True):
        for pad in (0, 3):
            fields = raw_fields(picture, encoding, big, pad)
            tag = f"{'big' if big else 'little'}-endian, pad {pad}"
            out[f"node raw, {tag}"] = frame_from_message(Image(**fields))
            out[f"bag raw, {tag}"] = bags.message_to_rgb(bag_message(bags.IMAGE_TYPE, **fields),
                                                         bags.IMAGE_TYPE)
    return out


def model_inputs_compressed(fmt: str, data: bytes) -> dict[str, np.ndarray]:
    """The engine's frame from one CompressedImage, by the node and by the bag reader."""
    return {
        f"node {fmt!r}": frame_from_message(CompressedImage(format=fmt, data=data)),
        f"bag {fmt!r}": bags.message_to_rgb(
            bag_message(bags.COMPRESSED_TYPE, format=fmt, data=data), bags.COMPRESSED_TYPE),
    }


def assert_all_equal(frames: dict[str, np.ndarray], want: np.ndarray) -> None:
    assert want.dtype == np.uint8 and want.ndim == 3 and want.shape[2] == 3
    for route, got in frames.items():
        assert got.dtype == np.uint8 and got.shape == want.shape, (route, got.dtype, got.shape)
        if not np.array_equal(got, want):
            bad = np.any(got != want, axis=2)
            raise AssertionError(f"{route}: {bad.sum()} of {bad.size} pixels differ from the "
                                 f"expected model input ({100 * bad.mean():.1f} %)")


# --- the table ----------------------------------------------------------------------


def test_table_covers_every_encoding_and_transport():
    assert sorted(ROWS) == sorted(imaging.ENCODINGS) == sorted(CHANNELS)
    assert len(ROWS) == len(imaging.TRANSPORT_TABLE)
    for encoding, row in ROWS.items():
        transports = set(row.transports)
        png = "png16" if encoding in SIXTEEN else "png8"
        assert {"raw", png} <= transports <= {"raw", "jpeg", png}, encoding
        # JPEG is 8-bit: of the 16-bit encodings only the colour ones (rgb16, bgra16, ...)
        # go, reduced to bgr8 by the publisher.
        no_jpeg = {"mono16", "16UC1", "16UC3", "16UC4"}
        assert ("jpeg" in transports) == (encoding not in no_jpeg), encoding


@pytest.mark.parametrize("encoding", sorted(CHANNELS))
@pytest.mark.parametrize("make", [noise, ramp, smooth], ids=lambda f: f.__name__)
def test_raw_routes_agree(encoding, make):
    picture = make(encoding)
    assert_all_equal(model_inputs_raw(picture, encoding), expected_rgb(picture, encoding))


@pytest.mark.parametrize("case", [c for c in CASES if c[1] != "jpeg"], ids=case_id)
@pytest.mark.parametrize("make", [noise, ramp], ids=lambda f: f.__name__)
def test_png_gives_the_raw_model_input(case, make):
    encoding, transport, fmt = case
    picture = make(encoding)
    name = payload_name(fmt)
    payload = to_payload(picture, encoding, name)
    assert (payload.dtype == np.uint16) == (transport == "png16")
    frames = model_inputs_raw(picture, encoding)
    frames.update(model_inputs_compressed(fmt, compress(payload, "png")))
    assert_all_equal(frames, expected_rgb(picture, encoding))


@pytest.mark.parametrize("case", [c for c in CASES if c[1] == "jpeg"], ids=case_id)
def test_jpeg_gives_its_decoded_pixels_and_stays_close(case):
    encoding, _, fmt = case
    picture = smooth(encoding)
    name = payload_name(fmt)
    data = compress(to_payload(picture, encoding, name), "jpeg")
    # The same JPEG bytes decoded here, then sent raw in the payload's layout (a JPEG
    # has no alpha: a four-channel layout comes back with three).
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    raw_name = {"8UC4": "8UC3"}.get(name, name)
    assert decoded.shape[2:] == ((CHANNELS[raw_name],) if CHANNELS[raw_name] > 1 else ())
    want = expected_rgb(decoded, raw_name)
    frames = model_inputs_compressed(fmt, data)
    frames.update(model_inputs_raw(decoded, raw_name))
    assert_all_equal(frames, want)
    # Lossy, so only close to the raw picture's frame; a channel swap would be ~60 off.
    error = np.abs(want.astype(int) - expected_rgb(picture, encoding)).mean(axis=(0, 1))
    assert error.max() < 2.0, (fmt, error)


# --- the cases that started it --------------------------------------------------------


PNG16_FORMATS = ["16UC1; png compressed ", "mono16; png compressed ", "png"]


@pytest.mark.parametrize("fmt", PNG16_FORMATS)
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_one_pixel_of_256(encoding, fmt):
    """round(256 / 257) = 1 by every route (it was 0 raw and 1 compressed)."""
    picture = np.array([[256]], np.uint16)
    frames = model_inputs_raw(picture, encoding)
    frames.update(model_inputs_compressed(fmt, compress(picture, "png")))
    assert_all_equal(frames, np.ones((1, 1, 3), np.uint8))


@pytest.mark.parametrize("fmt", PNG16_FORMATS)
def test_ramp_to_60000(fmt):
    """0..60000 as mono16: raw and 16-bit png equal at every pixel."""
    picture = ramp("mono16")
    assert picture.shape == (1, RAMP_TOP + 1) and picture.max() == RAMP_TOP
    frames = model_inputs_raw(picture, "mono16")
    frames.update(model_inputs_compressed(fmt, compress(picture, "png")))
    want = expected_rgb(picture, "mono16")
    assert want[0, 256, 0] == 1 and want[0, 385, 0] == 1 and want[0, 386, 0] == 2
    assert_all_equal(frames, want)


@pytest.mark.parametrize("layout", ["mono8", "bgr8", "bgra8", "mono16", "bgr16", "bgra16"])
@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "weird; png compressed"])
def test_formats_that_name_no_fitting_layout_read_opencv_order(fmt, layout):
    """Plain ``png`` (and names that do not fit the payload): OpenCV's mono/BGR(A)."""
    picture = noise(layout)
    frames = model_inputs_compressed(fmt, compress(picture, "png"))
    frames.update(model_inputs_raw(picture, layout))
    assert_all_equal(frames, expected_rgb(picture, layout))


def test_compressed_depth_is_refused():
    header = bytes(12)  # compressedDepth puts a depth-quantisation header before the PNG
    data = header + compress(np.array([[256]], np.uint16), "png")
    for fmt in ("16UC1; compressedDepth", "32FC1; compressedDepth png"):
        with pytest.raises(ValueError, match="compressed depth images .* are not supported"):
            frame_from_message(CompressedImage(format=fmt, data=data))
        with pytest.raises(ValueError, match="compressed depth"):
            bags.message_to_rgb(bag_message(bags.COMPRESSED_TYPE, format=fmt, data=data),
                                bags.COMPRESSED_TYPE)
