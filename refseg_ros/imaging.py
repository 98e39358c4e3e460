"""Raw image buffers (sensor_msgs/Image fields, compressed bytes) <-> numpy arrays.

ROS-free on purpose: the node, the bag reader and the tests all convert images the
same way, and none of them can rely on cv_bridge (not installable for ROS 2 without a
ROS install, and the PyPI one ignores row padding). The rules follow the message's
definition: ``step`` is the length of one row in bytes (it may include padding),
``is_bigendian`` says how multi-byte channels are stored, and ``encoding`` names the
channel layout.

One picture reaches the engine as the same H x W x 3 uint8 RGB array whatever its
encoding and transport: compressed payloads are decoded with their real depth and
channels, then raw and compressed pixels alike pass through :func:`to_rgb8` (one 16 -> 8
bit rule, :func:`u16_to_u8`). :data:`TRANSPORT_TABLE` lists every supported encoding x
transport and what holds for each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodingInfo:
    """Channel count, per-channel dtype and colour order of one encoding.

    ``bgr`` is true where the first three channels are blue, green, red; every other
    colour encoding, the generic ``8UC3``/``8UC4``/``16UC3``/``16UC4`` included, is taken
    as red, green, blue (alpha, when there is one, is the fourth channel).
    """

    channels: int
    dtype: np.dtype
    bgr: bool = False


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)

ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(3, _U8),
    "bgr8": EncodingInfo(3, _U8, bgr=True),
    "rgba8": EncodingInfo(4, _U8),
    "bgra8": EncodingInfo(4, _U8, bgr=True),
    "mono8": EncodingInfo(1, _U8),
    "rgb16": EncodingInfo(3, _U16),
    "bgr16": EncodingInfo(3, _U16, bgr=True),
    "rgba16": EncodingInfo(4, _U16),
    "bgra16": EncodingInfo(4, _U16, bgr=True),
    "mono16": EncodingInfo(1, _U16),
    # OpenCV-style names that cameras and mask publishers also use.
    "8UC1": EncodingInfo(1, _U8),
    "8UC3": EncodingInfo(3, _U8),
    "8UC4": EncodingInfo(4, _U8),
    "16UC1": EncodingInfo(1, _U16),
    "16UC3": EncodingInfo(3, _U16),
    "16UC4": EncodingInfo(4, _U16),
}


def encoding_info(encoding: str) -> EncodingInfo:
    """Look an encoding up, naming the supported ones when it is unknown."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        known = ", ".join(sorted(ENCODINGS))
        raise ValueError(f"unsupported image encoding {encoding!r} (supported: {known})") from None


def image_to_array(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: int | bool,
    data: bytes | bytearray | memoryview | np.ndarray,
) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into a fresh array.

    Returns H x W for one-channel encodings and H x W x C otherwise, in the
    encoding's own channel order and in native byte order. The result owns its
    memory, so the message buffer can be released.
    """
    info = encoding_info(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image of zero size ({width}x{height}, encoding {encoding})")
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is shorter than one row of {width} {encoding} pixels "
            f"({row_bytes} bytes)"
        )
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buf = buf.reshape(-1).view(np.uint8)
    if buf.size < height * step:
        raise ValueError(
            f"image data holds {buf.size} bytes, fewer than height*step = {height}*{step} "
            f"= {height * step}"
        )
    rows = buf[: height * step].reshape(height, step)[:, :row_bytes]
    dtype = info.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(dtype).astype(info.dtype.newbyteorder("="))
    if info.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, info.channels)


def array_to_image_fields(array: np.ndarray, encoding: str) -> dict[str, object]:
    """Pack an array into sensor_msgs/Image fields without row padding.

    The array must match the encoding (dtype and channel count); nothing is converted
    silently, so a BGR array cannot be published as rgb8 by accident of shape alone.
    """
    info = encoding_info(encoding)
    arr = np.asarray(array)
    if arr.ndim == 3 and info.channels == 1 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if arr.ndim != expected_ndim or (expected_ndim == 3 and arr.shape[2] != info.channels):
        raise ValueError(
            f"array of shape {arr.shape} does not fit encoding {encoding} "
            f"({info.channels} channel{'s' if info.channels > 1 else ''})"
        )
    if arr.dtype != info.dtype:
        raise ValueError(f"array of dtype {arr.dtype} does not fit encoding {encoding} "
                         f"(needs {info.dtype})")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image of zero size ({width}x{height}, encoding {encoding})")
    big = sys.byteorder == "big"
    arr = np.ascontiguousarray(arr)
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": int(big),
        "step": int(width * info.channels * info.dtype.itemsize),
        "data": arr.tobytes(),
    }


def u16_to_u8(values: np.ndarray) -> np.ndarray:
    """The one 16 -> 8 bit rule, for every encoding and transport: the nearest 8-bit value.

    ``round(v / 257) = (v + 128) // 257`` (257 is odd, so there is never a tie), on an
    array of any shape with values in 0..65535; returns uint8 of the same shape. ``257 *
    k`` maps back to ``k`` (the inverse of widening 8 bits to 16 by ``* 257``), and every
    output value but 0 and 255 gathers 257 inputs (0 and 255: 129 each).
    """
    return ((np.asarray(values).astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image to H x W x 3 uint8 RGB, the engine's frame format.

    ``array`` is H x W (or H x W x 1) for one-channel encodings and H x W x C
    otherwise, of the encoding's dtype (uint8 or uint16), in its channel order; for a
    four-channel encoding, H x W x 3 (alpha already dropped) is accepted too. 16-bit
    values go through :func:`u16_to_u8` (rounding v / 257); alpha is dropped; one
    channel is repeated three times. Raw and compressed images both end here, so one
    picture gives the same bytes whatever its transport (see :data:`TRANSPORT_TABLE`).
    """
    info = encoding_info(encoding)
    arr = np.asarray(array)
    if arr.dtype != info.dtype:
        raise ValueError(f"array of dtype {arr.dtype} does not fit encoding {encoding} "
                         f"(needs {info.dtype})")
    if info.channels == 1:
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim != 2:
            raise ValueError(f"array of shape {arr.shape} does not fit encoding {encoding} "
                             f"(1 channel)")
    elif arr.ndim != 3 or not 3 <= arr.shape[2] <= info.channels:
        raise ValueError(f"array of shape {arr.shape} does not fit encoding {encoding} "
                         f"({info.channels} channels)")
    if info.channels == 1:
        if info.dtype == _U16:
            arr = u16_to_u8(arr)
        return np.repeat(arr[:, :, None], 3, 2)
    if info.dtype == _U16:
        arr = u16_to_u8(arr[:, :, :3])  # before reordering: faster on contiguous memory
    return np.ascontiguousarray(arr[:, :, 2::-1] if info.bgr else arr[:, :, :3])


@dataclass(frozen=True)
class TransportRow:
    """How one encoding travels: raw, and the CompressedImage formats that carry it.

    ``jpeg`` and ``png`` are the ``format`` strings compressed_image_transport writes
    for an image of ``encoding`` (``"<encoding>; <codec> compressed <payload>"``, where
    ``<payload>`` names the layout it handed the codec: ``bgr8``/``bgr16`` for colour
    encodings, empty where the pixels go unconverted); ``None`` where that codec cannot
    carry the encoding (JPEG has no 16-bit mono). The payload layout is the one
    :func:`decode_compressed_array` reads back from the format.
    """

    encoding: str
    jpeg: str | None
    png: str | None

    @property
    def transports(self) -> dict[str, str | None]:
        """``{"raw": None, "jpeg": format, "png8" or "png16": format}``, codecs that
        cannot carry the encoding left out. png8/png16: the depth of the PNG payload."""
        out: dict[str, str | None] = {"raw": None}
        if self.jpeg is not None:
            out["jpeg"] = self.jpeg
        if self.png is not None:
            out["png16" if ENCODINGS[self.encoding].dtype == _U16 else "png8"] = self.png
        return out


#: Every supported encoding x transport. Each picture reaches the engine as
#: ``to_rgb8(pixels, layout)``: a raw Image with ``layout`` = its encoding; a
#: CompressedImage decoded with its real depth and channels (cv2.IMREAD_UNCHANGED: 1, 3 or
#: 4 channels, 8 or 16 bits, colour in OpenCV's BGR(A) order) and ``layout`` read from
#: its format. Hence, byte for byte:
#:
#: - raw and png (8- and 16-bit payloads) give the same H x W x 3 uint8 frame;
#: - jpeg is lossy: its frame is that of the decoded JPEG pixels sent raw in the payload
#:   layout, close to (not equal to) the raw frame; for a 16-bit colour encoding the
#:   publisher reduced the picture to bgr8 itself, before compressing.
#:
#: Formats without a ``;`` (plain ``jpeg``/``png``) are read as OpenCV's mono8/bgr8/
#: bgra8/mono16/bgr16/bgra16 by channel count and depth. ``compressedDepth`` (a depth
#: header before the PNG) is refused.
TRANSPORT_TABLE: tuple[TransportRow, ...] = (
    TransportRow("rgb8", "rgb8; jpeg compressed bgr8", "rgb8; png compressed bgr8"),
    TransportRow("bgr8", "bgr8; jpeg compressed bgr8", "bgr8; png compressed bgr8"),
    TransportRow("rgba8", "rgba8; jpeg compressed bgr8", "rgba8; png compressed bgr8"),
    TransportRow("bgra8", "bgra8; jpeg compressed bgr8", "bgra8; png compressed bgr8"),
    TransportRow("mono8", "mono8; jpeg compressed ", "mono8; png compressed "),
    TransportRow("8UC1", "8UC1; jpeg compressed ", "8UC1; png compressed "),
    TransportRow("8UC3", "8UC3; jpeg compressed ", "8UC3; png compressed "),
    TransportRow("8UC4", "8UC4; jpeg compressed ", "8UC4; png compressed "),
    TransportRow("rgb16", "rgb16; jpeg compressed bgr8", "rgb16; png compressed bgr16"),
    TransportRow("bgr16", "bgr16; jpeg compressed bgr8", "bgr16; png compressed bgr16"),
    TransportRow("rgba16", "rgba16; jpeg compressed bgr8", "rgba16; png compressed bgr16"),
    TransportRow("bgra16", "bgra16; jpeg compressed bgr8", "bgra16; png compressed bgr16"),
    TransportRow("mono16", None, "mono16; png compressed "),
    TransportRow("16UC1", None, "16UC1; png compressed "),
    TransportRow("16UC3", None, "16UC3; png compressed "),
    TransportRow("16UC4", None, "16UC4; png compressed "),
)

#: The layout OpenCV decodes to, by (channels, dtype), where a format names none.
_OPENCV_LAYOUTS = {(1, _U8): "mono8", (3, _U8): "bgr8", (4, _U8): "bgra8",
                   (1, _U16): "mono16", (3, _U16): "bgr16", (4, _U16): "bgra16"}


def _fits(encoding: str, pixels: np.ndarray) -> bool:
    """Whether decoded pixels can be read in ``encoding``'s layout (a codec may have
    dropped the alpha channel of a four-channel encoding)."""
    info = ENCODINGS.get(encoding)
    if info is None or pixels.dtype != info.dtype:
        return False
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return channels == info.channels or (info.channels == 4 and channels == 3)


def compressed_layout(format: str, pixels: np.ndarray) -> str:
    """The encoding whose layout decoded CompressedImage pixels are in.

    ``format`` as compressed_image_transport writes it, ``"<encoding>; <codec> compressed
    [<payload>]"``: the payload encoding when named, else the image's own encoding
    (sent unconverted), whichever first fits the pixels' dtype and channels; otherwise
    (plain ``"jpeg"``, ``"png"``, or names that do not fit) OpenCV's layout by channel
    count and depth (mono/bgr/bgra, 8 or 16).
    """
    head, sep, tail = format.partition(";")
    candidates = []
    if sep:
        words = tail.split()
        if "compressed" in words:
            after = words[words.index("compressed") + 1:]
            if after:
                candidates.append(after[0])
        candidates.append(head.strip())
    for name in candidates:
        if _fits(name, pixels):
            return name
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return _OPENCV_LAYOUTS[(channels, np.dtype(pixels.dtype))]


def decode_compressed_array(format: str,
                            data: bytes | bytearray | memoryview | np.ndarray
                            ) -> tuple[np.ndarray, str]:
    """Decode a CompressedImage payload with its real depth and channels.

    Returns ``(pixels, layout)``: pixels H x W (one channel) or H x W x 3/4, uint8 or
    uint16, as the codec stores them (cv2.IMREAD_UNCHANGED: colour in BGR(A) order, no
    EXIF rotation, like compressed_image_transport's default), and the encoding name
    of their layout (:func:`compressed_layout`). ``format`` also refuses the depth
    variant, whose payload carries an extra header that an image decoder cannot read;
    the codec itself is sniffed from the bytes, as image_transport's decoder does.
    """
    import cv2  # deferred: keeps `import refseg_ros.imaging` light

    if "compresseddepth" in format.lower().replace(" ", ""):
        raise ValueError(f"compressed depth images ({format!r}) are not supported; "
                         f"publish the depth image raw or as 16-bit png")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buf = buf.reshape(-1).view(np.uint8)
    if buf.size == 0:
        raise ValueError(f"compressed image ({format!r}) has no data")
    pixels = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ValueError(f"compressed image ({format!r}, {buf.size} bytes) could not be decoded")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if (channels, np.dtype(pixels.dtype)) not in _OPENCV_LAYOUTS:
        raise ValueError(f"compressed image ({format!r}) decodes to {channels} channel(s) "
                         f"of {pixels.dtype}; supported: 1, 3 or 4 channels of uint8 or uint16")
    if pixels.ndim == 3 and channels == 1:
        pixels = pixels[:, :, 0]
    return pixels, compressed_layout(format, pixels)


def decode_compressed(format: str, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) into H x W x 3 uint8 RGB.

    :func:`decode_compressed_array`, then :func:`to_rgb8` exactly as for a raw Image,
    so that 16-bit PNGs keep their depth until the one 16 -> 8 bit rule
    (:func:`u16_to_u8`) and colour order follows the format (:data:`TRANSPORT_TABLE`).
    """
    pixels, layout = decode_compressed_array(format, data)
    return to_rgb8(pixels, layout)


def read_image_file(path: str | Path) -> np.ndarray:
    """An image file (PNG, JPEG, or anything OpenCV reads) as H x W x 3 uint8 RGB, by the
    same rule as a CompressedImage carrying its bytes, so a 16-bit PNG taught from a file
    reaches the model as it would from a camera.

    Raises:
        ValueError: the file cannot be read or decoded (the message names it).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc.strerror}") from None
    try:
        return decode_compressed(path.suffix.lstrip(".").lower(), data)
    except ValueError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
