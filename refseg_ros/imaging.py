"""Raw image buffers (sensor_msgs/Image fields, compressed bytes) <-> numpy arrays.

ROS-free on purpose: the node, the bag reader and the tests all convert images the
same way, and none of them can rely on cv_bridge (not installable for ROS 2 without a
ROS install, and the PyPI one ignores row padding). The rules follow the message's
definition: ``step`` is the length of one row in bytes (it may include padding),
``is_bigendian`` says how multi-byte channels are stored, and ``encoding`` names the
channel layout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodingInfo:
    """Channel count and per-channel dtype of one encoding."""

    channels: int
    dtype: np.dtype


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)

ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(3, _U8),
    "bgr8": EncodingInfo(3, _U8),
    "rgba8": EncodingInfo(4, _U8),
    "bgra8": EncodingInfo(4, _U8),
    "mono8": EncodingInfo(1, _U8),
    "mono16": EncodingInfo(1, _U16),
    # OpenCV-style names that cameras and mask publishers also use.
    "8UC1": EncodingInfo(1, _U8),
    "8UC3": EncodingInfo(3, _U8),
    "8UC4": EncodingInfo(4, _U8),
    "16UC1": EncodingInfo(1, _U16),
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


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image to H x W x 3 uint8 RGB, the engine's frame format.

    16-bit images are scaled by 1/257 (full range to full range); alpha is dropped.
    """
    info = encoding_info(encoding)
    arr = np.asarray(array)
    if info.dtype == _U16:
        arr = (arr.astype(np.uint32) // 257).astype(np.uint8)
    if info.channels == 1:
        return np.ascontiguousarray(np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, 2))
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def decode_compressed(format: str, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) into H x W x 3 uint8 RGB.

    ``format`` is only checked for the depth variant, whose payload carries an extra
    header that a plain image decoder cannot read; the codec itself is sniffed from
    the bytes, as image_transport's decoder does.
    """
    import cv2  # deferred: keeps `import refseg_ros.imaging` light

    if "compresseddepth" in format.lower().replace(" ", ""):
        raise ValueError(f"compressed depth images ({format!r}) are not supported")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buf = buf.reshape(-1).view(np.uint8)
    if buf.size == 0:
        raise ValueError(f"compressed image ({format!r}) has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ValueError(f"compressed image ({format!r}, {buf.size} bytes) could not be decoded")
    return np.ascontiguousarray(bgr[:, :, ::-1])
