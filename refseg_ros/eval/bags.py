"""rosbag2 bags for evaluation: write and read camera frames, ground truth, captions and
references, in MCAP or sqlite3 storage, without a ROS install.

Layout of an evaluation bag (topic names are defaults; every reader call takes a topic):

- camera frames: ``sensor_msgs/msg/Image`` (or ``CompressedImage``) on :data:`CAMERA_TOPIC`;
- ground truth: ``sensor_msgs/msg/Image`` label maps (mono8, or mono16 beyond 255 objects;
  0 background, k object k) on :data:`GROUND_TRUTH_TOPIC`, stamped like their frame;
- references: ``refseg_ros/msg/ReferenceTarget`` on :data:`REFERENCE_TOPIC`;
- captions: ``std_msgs/msg/String`` on :data:`CAPTION_TOPIC`;
- labels of the ground-truth ids and the protocol in ``metadata.yaml``'s ``custom_data``.

Bags are written with the ``rosbags`` library (version 9 metadata by default, as ROS 2
Jazzy and Kilted write it; version 8 for older tools) into a hidden sibling directory
that is renamed into place when complete, so an interrupted write never leaves
something that looks like a bag. Every error raised for a bad bag is a
:class:`BagError` naming the file and, where it applies, the topic.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from refseg_ros import imaging

CAMERA_TOPIC = "/camera/image_raw"
GROUND_TRUTH_TOPIC = "/camera/ground_truth"
REFERENCE_TOPIC = "/refseg/reference"
CAPTION_TOPIC = "/refseg/caption"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
STRING_TYPE = "std_msgs/msg/String"
REFERENCE_TYPE = "refseg_ros/msg/ReferenceTarget"

#: custom_data keys written by :class:`BagWriter`.
OBJECTS_KEY = "refseg.objects"  # JSON {"<id>": "<label>"}
PROTOCOL_KEY = "refseg.protocol"  # "video" or "one-shot"
FORMAT_KEY = "refseg.format"
IGNORE_KEY = "refseg.ignore_label"  # ground-truth value scored by nobody (e.g. "255")

STORAGES = ("mcap", "sqlite3")

# The message definition, kept here so that an installed package (which has no msg/
# folder) can still write and read references; a test checks it against msg/.
REFERENCE_TARGET_MSG = """\
# Teach by example: an image, a mask of the object in it, and a label.
std_msgs/Header header
# 0 asks the node to assign a new id; a known id replaces that target's reference
# (unless add_view).
uint32 target_id
# true: one more example of the known reference target target_id (k-shot); the target
# keeps its earlier examples and what it has tracked so far. label and camera are unused.
bool add_view
string label
# Camera (image topic) the target applies to; empty applies it to every camera.
string camera
sensor_msgs/Image image
# mono8 (or 8UC1), same size as image; nonzero pixels belong to the object.
sensor_msgs/Image mask
"""


class BagError(ValueError):
    """A bag that cannot be used as asked: missing, corrupt, or not holding what is needed."""


def _repo_msg_file() -> Optional[Path]:
    path = Path(__file__).resolve().parents[2] / "msg" / "ReferenceTarget.msg"
    return path if path.is_file() else None


def reference_msg_text() -> str:
    """The ReferenceTarget definition: the source tree's msg file when present."""
    path = _repo_msg_file()
    return path.read_text() if path else REFERENCE_TARGET_MSG


@lru_cache(maxsize=1)
def typestore() -> Any:
    """A ROS 2 Kilted typestore that also knows ``refseg_ros/msg/ReferenceTarget``.

    sensor_msgs/Image and std_msgs/String are the same from Humble to Kilted, so the
    bags read in any of those distributions.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(reference_msg_text(), REFERENCE_TYPE))
    return store


def _stamp(stamp_ns: int) -> Any:
    t = typestore().types["builtin_interfaces/msg/Time"]
    return t(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _header(stamp_ns: int, frame_id: str) -> Any:
    return typestore().types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_message(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """A rosbags sensor_msgs/Image holding ``array``."""
    fields = imaging.array_to_image_fields(array, encoding)
    data = np.frombuffer(fields.pop("data"), dtype=np.uint8)
    return typestore().types[IMAGE_TYPE](header=_header(stamp_ns, frame_id), data=data, **fields)


def label_map_encoding(label_map: np.ndarray) -> tuple[np.ndarray, str]:
    """mono8 when every id fits in a byte, mono16 otherwise."""
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise ValueError(f"a label map must be 2-D, got shape {lm.shape}")
    if lm.size and int(lm.max()) > 255:
        return lm.astype(np.uint16), "mono16"
    return lm.astype(np.uint8), "mono8"


def message_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """Decode an Image or CompressedImage message to H x W x 3 uint8 RGB."""
    if msgtype == COMPRESSED_TYPE:
        return imaging.decode_compressed(msg.format, msg.data)
    arr = imaging.image_to_array(msg.encoding, msg.height, msg.width, msg.step,
                                 msg.is_bigendian, msg.data)
    return imaging.to_rgb8(arr, msg.encoding)


def message_to_labels(msg: Any) -> np.ndarray:
    """Decode a mono8/mono16 label-map Image (also 8UC1/16UC1) to a 2-D integer array."""
    arr = imaging.image_to_array(msg.encoding, msg.height, msg.width, msg.step,
                                 msg.is_bigendian, msg.data)
    if arr.ndim != 2:
        raise ValueError(f"a label map must have one channel, got encoding {msg.encoding!r}")
    return arr


# --- writing -------------------------------------------------------------------------


class BagWriter:
    """Write an evaluation bag; use as a context manager.

    The bag is assembled in a hidden directory beside ``path`` and moved into place by
    :meth:`close`; on an exception nothing is left at ``path``.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", version: int = 9,
                 overwrite: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if version not in (8, 9):
            raise ValueError(f"bag metadata version must be 8 or 9, got {version}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists already (pass overwrite=True to replace it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._overwrite = overwrite
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self._tmpdir / self.path.name, version=version,
                                  storage_plugin=plugin)
            self._writer.set_custom_data(FORMAT_KEY, "1")
            self._writer.open()
        except BaseException:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            raise
        self._connections: dict[str, Any] = {}
        self._closed = False

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def set_objects(self, labels: dict[int, str]) -> None:
        """Record the label of each ground-truth id."""
        text = json.dumps({str(k): v for k, v in labels.items()})
        self._writer.set_custom_data(OBJECTS_KEY, text)

    def set_ignore_label(self, value: int) -> None:
        """Ground-truth pixels of this value are left out of every score (PASCAL's 255)."""
        self._writer.set_custom_data(IGNORE_KEY, str(int(value)))

    def set_protocol(self, protocol: str) -> None:
        """'video' (a sequence) or 'one-shot' (independent reference/query episodes)."""
        if protocol not in ("video", "one-shot"):
            raise ValueError(f"protocol must be 'video' or 'one-shot', got {protocol!r}")
        self._writer.set_custom_data(PROTOCOL_KEY, protocol)

    def _connection(self, topic: str, msgtype: str, store: Any = None) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=store or typestore())
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} already carries {conn.msgtype}, not {msgtype}")
        return conn

    def write_message(self, topic: str, msgtype: str, msg: Any, log_time_ns: int,
                      store: Any = None) -> None:
        """Serialise and append any message of the typestore (``store``: another rosbags
        typestore that defines ``msgtype``, for types :func:`typestore` lacks).

        Raises:
            ValueError: the topic already carries another type.
        """
        store = store or typestore()
        raw = store.serialize_cdr(msg, msgtype)
        self._writer.write(self._connection(topic, msgtype, store), int(log_time_ns), raw)

    def write_image(self, topic: str, stamp_ns: int, image: np.ndarray, encoding: str = "rgb8",
                    frame_id: str = "camera") -> None:
        """A camera frame (header stamp and log time both ``stamp_ns``)."""
        self.write_message(topic, IMAGE_TYPE, image_message(image, encoding, stamp_ns, frame_id),
                           stamp_ns)

    def write_label_map(self, topic: str, stamp_ns: int, label_map: np.ndarray,
                        frame_id: str = "camera") -> None:
        """Ground truth for the frame with the same stamp."""
        lm, encoding = label_map_encoding(label_map)
        self.write_image(topic, stamp_ns, lm, encoding, frame_id)

    def write_caption(self, topic: str, stamp_ns: int, text: str) -> None:
        self.write_message(topic, STRING_TYPE, typestore().types[STRING_TYPE](data=text), stamp_ns)

    def write_reference(self, topic: str, stamp_ns: int, target_id: int, label: str,
                        image: np.ndarray, mask: np.ndarray, camera: str = "",
                        frame_id: str = "reference", add_view: bool = False) -> None:
        """A teach-by-example reference: RGB image plus mono8 mask (255 = object);
        ``add_view`` marks one more example of an earlier reference's target."""
        image = np.asarray(image)
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"reference mask {mask.shape} and image {image.shape[:2]} differ "
                             "in size")
        store = typestore()
        msg = store.types[REFERENCE_TYPE](
            header=_header(stamp_ns, frame_id),
            target_id=int(target_id),
            add_view=bool(add_view),
            label=label,
            camera=camera,
            image=image_message(image, "rgb8", stamp_ns, frame_id),
            mask=image_message(np.where(mask != 0, 255, 0).astype(np.uint8), "mono8", stamp_ns,
                               frame_id),
        )
        self.write_message(topic, REFERENCE_TYPE, msg, stamp_ns)

    def close(self) -> Path:
        """Finish the bag (metadata.yaml) and move it into place."""
        if self._closed:
            return self.path
        self._writer.close()
        self._closed = True
        if self.path.exists() and self._overwrite:
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        (self._tmpdir / self.path.name).rename(self.path)
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the bag is discarded anyway
            pass
        shutil.rmtree(self._tmpdir, ignore_errors=True)


# --- reading -------------------------------------------------------------------------


@dataclass
class Frame:
    """One camera frame from a bag."""

    index: int  # position on the topic, from 0
    stamp_ns: int  # header stamp
    log_time_ns: int  # when the bag recorded it
    image: np.ndarray  # H x W x 3 uint8 RGB
    frame_id: str


@dataclass
class Reference:
    """A ReferenceTarget message."""

    stamp_ns: int
    target_id: int
    label: str
    camera: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W bool


@dataclass
class Caption:
    stamp_ns: int  # log time: std_msgs/String has no header
    text: str


#: The newest rosbag2 metadata version the rosbags reader accepts, and the compression it
#: decompresses; used only to explain a bag that rosbags has refused.
READABLE_METADATA_VERSION = 9
READABLE_COMPRESSION = "zstd"


def _rosbags_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rosbags")
    except PackageNotFoundError:
        return "(version unknown)"


def unsupported_reason(path: Path) -> Optional[str]:
    """Why rosbags cannot read the bag at ``path`` although it may be intact, or None.

    Looks at the file name and metadata.yaml only: a metadata version newer than
    :data:`READABLE_METADATA_VERSION`, compression other than zstd, a storage other than
    mcap or sqlite3, a serialisation other than CDR, no metadata.yaml, or a bare file that
    is neither .mcap nor .db3. Anything else (including metadata.yaml that is not YAML) is
    left to the caller's damage report.
    """
    if not path.is_dir():
        if path.suffix in (".mcap", ".db3"):
            return None
        return (f"bag {path} is not a rosbag2 bag: give its directory (with metadata.yaml) or "
                "a .mcap or .db3 file")
    meta_path = path / "metadata.yaml"
    if not meta_path.is_file():
        return (f"bag {path} cannot be opened: it has no metadata.yaml (not a rosbag2 bag, or "
                "a recording that stopped before writing it: `ros2 bag reindex` rebuilds it)")
    import yaml

    try:
        info = yaml.safe_load(meta_path.read_text())["rosbag2_bagfile_information"]
        version = info.get("version")
        storage = info.get("storage_identifier")
        mode = str(info.get("compression_mode") or "").lower()
        fmt = str(info.get("compression_format") or "")
        topics = [t["topic_metadata"] for t in info.get("topics_with_message_count") or []]
        formats = {str(t["name"]): str(t.get("serialization_format", "cdr")) for t in topics}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError,
            AttributeError):
        return None
    if isinstance(version, int) and version > READABLE_METADATA_VERSION:
        return (f"bag {path}: metadata version {version} is not supported (rosbags "
                f"{_rosbags_version()} reads up to {READABLE_METADATA_VERSION}); a newer "
                "rosbags may read it")
    if storage not in STORAGES:
        return (f"bag {path}: storage {storage!r} is not supported (rosbags reads "
                f"{' and '.join(STORAGES)})")
    if mode not in ("", "none") and fmt != READABLE_COMPRESSION:
        return (f"bag {path} is compressed ({fmt or 'no format named'}, per {mode}), which "
                f"rosbags cannot read (it reads {READABLE_COMPRESSION} only); decompress it "
                f"first with `ros2 bag convert --input {path} --output-options OPTIONS.yaml` "
                "(an output bag without compression)")
    other = {name: f for name, f in sorted(formats.items()) if f != "cdr"}
    if other:
        return "; ".join(f"bag {path}: topic {name} is serialised as {f!r}; only CDR is "
                         "supported" for name, f in other.items())
    return None


class BagReader:
    """Read an evaluation bag (a rosbag2 directory, or a bare .mcap/.db3 file)."""

    def __init__(self, path: str | Path) -> None:
        """Open the bag.

        Raises:
            BagError: the bag does not exist; is of a kind rosbags cannot read (the
                reason alone, see :func:`unsupported_reason`); or cannot be opened
                otherwise (truncated or corrupt).
        """
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises several types for a damaged bag
            # Only once rosbags has refused the bag: a newer rosbags may read more.
            reason = unsupported_reason(self.path)
            if reason is not None:
                raise BagError(reason) from exc
            raise BagError(f"bag {self.path} cannot be opened (truncated or corrupt?): "
                           f"{exc}") from exc
        self.topics: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._conns: dict[str, list[Any]] = {}
        for conn in self._reader.connections:
            self.topics[conn.topic] = conn.msgtype
            self.counts[conn.topic] = self.counts.get(conn.topic, 0) + int(conn.msgcount)
            self._conns.setdefault(conn.topic, []).append(conn)

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()

    @property
    def custom_data(self) -> dict[str, str]:
        meta = getattr(self._reader.storage, "metadata", None)
        return dict(getattr(meta, "custom", None) or {})

    @property
    def protocol(self) -> str:
        """'video' unless the bag says it holds one-shot episodes."""
        return self.custom_data.get(PROTOCOL_KEY, "video")

    def ignore_label(self) -> Optional[int]:
        """The ground-truth value left out of scoring, if the bag names one."""
        raw = self.custom_data.get(IGNORE_KEY)
        try:
            return None if raw is None else int(raw)
        except ValueError:
            raise BagError(f"bag {self.path}: custom_data {IGNORE_KEY} is {raw!r}, not an "
                           "integer") from None

    def object_labels(self) -> dict[int, str]:
        """Labels of ground-truth ids recorded by the writer (may be empty)."""
        raw = self.custom_data.get(OBJECTS_KEY)
        if not raw:
            return {}
        try:
            return {int(k): str(v) for k, v in json.loads(raw).items()}
        except (ValueError, AttributeError) as exc:
            raise BagError(f"bag {self.path}: custom_data {OBJECTS_KEY} is not a JSON object "
                           f"of id -> label: {exc}") from exc

    def describe_topics(self) -> str:
        if not self.topics:
            return "the bag has no topics"
        return "topics in the bag: " + ", ".join(
            f"{t} [{self.topics[t]}, {self.counts.get(t, 0)} msgs]" for t in sorted(self.topics))

    def require_topic(self, topic: str, types: tuple[str, ...]) -> str:
        """The topic's type, or a BagError naming the file, the topic and what exists."""
        if topic not in self.topics:
            raise BagError(f"bag {self.path} has no topic {topic!r}; {self.describe_topics()}")
        msgtype = self.topics[topic]
        if msgtype not in types:
            raise BagError(f"topic {topic!r} in bag {self.path} carries {msgtype}, expected "
                           f"{' or '.join(types)}")
        return msgtype

    def messages(self, topic: str, types: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
        """(log time, deserialised message) in log-time order, damage reported as BagError."""
        msgtype = self.require_topic(topic, types)
        store = typestore()
        it = self._reader.messages(connections=self._conns[topic])
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(f"bag {self.path} is corrupt or truncated while reading topic "
                               f"{topic!r}: {exc}") from exc
            _, log_time, raw = item
            try:
                msg = store.deserialize_cdr(raw, msgtype)
            except Exception as exc:
                raise BagError(f"bag {self.path}: a {msgtype} message on topic {topic!r} at "
                               f"log time {log_time} cannot be decoded (corrupt?): {exc}"
                               ) from exc
            yield log_time, msg

    def raw_messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time, CDR bytes) of the given topics in log-time order.

        Unknown topics are reported at the call, before the first message is asked for.

        Raises:
            BagError: a topic the bag does not have (at the call); damage met while
                reading (during iteration).
        """
        self.check_topics(topics)
        return self._raw(list(topics))

    def check_topics(self, topics: Sequence[str]) -> None:
        """Raises BagError naming the first of ``topics`` the bag does not have."""
        for t in topics:
            if t not in self.topics:
                raise BagError(f"bag {self.path} has no topic {t!r}; {self.describe_topics()}")

    def _raw(self, topics: list[str]) -> Iterator[tuple[str, int, bytes]]:
        conns = [c for t in topics for c in self._conns[t]]
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_time, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(f"bag {self.path} is corrupt or truncated while reading topics "
                               f"{', '.join(topics)}: {exc}") from exc
            yield conn.topic, log_time, bytes(raw)

    def _decode(self, topic: str, stamp_ns: int, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ValueError as exc:
            raise BagError(f"bag {self.path}, topic {topic!r}, {what} at stamp {stamp_ns}: "
                           f"{exc}") from exc

    def frames(self, topic: str = CAMERA_TOPIC) -> Iterator[Frame]:
        """Camera frames in recording order, decoded to RGB."""
        types = (IMAGE_TYPE, COMPRESSED_TYPE)
        msgtype = self.require_topic(topic, types)
        for index, (log_time, msg) in enumerate(self.messages(topic, types)):
            stamp = stamp_to_ns(msg.header.stamp)
            image = self._decode(topic, stamp, "frame", message_to_rgb, msg, msgtype)
            yield Frame(index, stamp, log_time, image, msg.header.frame_id)

    def frame_sizes(self, topic: str = CAMERA_TOPIC) -> list[tuple[int, int, int]]:
        """(stamp, height, width) of every frame, without decoding raw pixels."""
        types = (IMAGE_TYPE, COMPRESSED_TYPE)
        msgtype = self.require_topic(topic, types)
        out = []
        for _, msg in self.messages(topic, types):
            stamp = stamp_to_ns(msg.header.stamp)
            if msgtype == COMPRESSED_TYPE:
                h, w = self._decode(topic, stamp, "frame", message_to_rgb, msg, msgtype).shape[:2]
            else:
                # Validate the buffer now, so that a damaged frame fails before any work.
                self._decode(topic, stamp, "frame", imaging.image_to_array, msg.encoding,
                             msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
                h, w = int(msg.height), int(msg.width)
            out.append((stamp, h, w))
        return out

    def label_maps(self, topic: str = GROUND_TRUTH_TOPIC) -> Iterator[tuple[int, np.ndarray]]:
        """(header stamp, label map) of every ground-truth message."""
        for _, msg in self.messages(topic, (IMAGE_TYPE,)):
            stamp = stamp_to_ns(msg.header.stamp)
            yield stamp, self._decode(topic, stamp, "ground truth", message_to_labels, msg)

    def references(self, topic: str = REFERENCE_TOPIC) -> Iterator[Reference]:
        for _, msg in self.messages(topic, (REFERENCE_TYPE,)):
            stamp = stamp_to_ns(msg.header.stamp)
            image = self._decode(topic, stamp, "reference image", message_to_rgb, msg.image,
                                 IMAGE_TYPE)
            mask = self._decode(topic, stamp, "reference mask", message_to_labels, msg.mask)
            if mask.shape != image.shape[:2]:
                raise BagError(f"bag {self.path}, topic {topic!r}: reference at stamp {stamp} "
                               f"has a {mask.shape[1]}x{mask.shape[0]} mask for a "
                               f"{image.shape[1]}x{image.shape[0]} image")
            yield Reference(stamp, int(msg.target_id), msg.label, msg.camera, image, mask != 0)

    def captions(self, topic: str = CAPTION_TOPIC) -> Iterator[Caption]:
        for log_time, msg in self.messages(topic, (STRING_TYPE,)):
            yield Caption(log_time, msg.data)


# --- checking a sequence before running anything on it ---------------------------------


@dataclass
class SequenceIndex:
    """What a video evaluation needs to know up front, gathered in one pass."""

    frame_stamps: list[int]
    frame_shape: dict[int, tuple[int, int]]  # stamp -> (height, width)
    gt_stamps: list[int]
    first_seen: dict[int, int]  # object id -> stamp of its first non-empty ground truth
    object_labels: dict[int, str]


def index_sequence(reader: BagReader, camera_topic: str = CAMERA_TOPIC,
                   gt_topic: str = GROUND_TRUTH_TOPIC) -> SequenceIndex:
    """Check that a bag can be evaluated and index it; every problem is a BagError.

    Checked: both topics exist, the camera topic has frames with distinct stamps, every
    ground-truth message matches a frame's stamp and size, and some ground truth exists.
    """
    sizes = reader.frame_sizes(camera_topic)
    if not sizes:
        raise BagError(f"bag {reader.path}: camera topic {camera_topic!r} has no frames")
    shape: dict[int, tuple[int, int]] = {}
    for stamp, h, w in sizes:
        if stamp in shape:
            raise BagError(f"bag {reader.path}: two frames on {camera_topic!r} share the header "
                           f"stamp {stamp}; frames are matched to ground truth by stamp")
        shape[stamp] = (h, w)
    reader.require_topic(gt_topic, (IMAGE_TYPE,))
    gt_stamps: list[int] = []
    first_seen: dict[int, int] = {}
    for stamp, lm in reader.label_maps(gt_topic):
        if stamp not in shape:
            raise BagError(f"bag {reader.path}: ground truth on {gt_topic!r} at stamp {stamp} "
                           f"has no frame with that stamp on {camera_topic!r}")
        if lm.shape != shape[stamp]:
            h, w = shape[stamp]
            raise BagError(f"bag {reader.path}: ground truth on {gt_topic!r} at stamp {stamp} "
                           f"is {lm.shape[1]}x{lm.shape[0]} but the frame on {camera_topic!r} "
                           f"is {w}x{h}")
        gt_stamps.append(stamp)
        for oid in np.unique(lm):
            if oid != 0:
                first_seen.setdefault(int(oid), stamp)
    if not gt_stamps:
        raise BagError(f"bag {reader.path}: ground-truth topic {gt_topic!r} has no messages")
    labels = reader.object_labels()
    object_labels = {oid: labels.get(oid, f"object {oid}") for oid in sorted(first_seen)}
    return SequenceIndex([s for s, _, _ in sizes], shape, gt_stamps, first_seen, object_labels)
