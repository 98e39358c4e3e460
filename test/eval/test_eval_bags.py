"""Evaluation bags: round trip in MCAP and sqlite3, metadata, and clear errors."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

from refseg_ros.eval import bags, synthetic
from support import REPO_ROOT



@pytest.fixture(scope="module")
def seq():
    return synthetic.generate(num_frames=6, height=48, width=64, seed=1)


def write_bag(path, seq, storage, gt_topic=bags.GROUND_TRUTH_TOPIC, frames=None, gt=None):
    frames = range(len(seq)) if frames is None else frames
    gt = frames if gt is None else gt
    with bags.BagWriter(path, storage=storage) as w:
        w.set_objects({o.object_id: o.label for o in seq.objects})
        for i in frames:
            w.write_image(bags.CAMERA_TOPIC, seq.stamp_ns(i), seq.frames[i])
            if i in gt:
                w.write_label_map(gt_topic, seq.stamp_ns(i), seq.label_map(i))
        ref = synthetic.render_reference(1, 40, 50, seed=1)
        w.write_reference(bags.REFERENCE_TOPIC, seq.stamp_ns(0) - 1000, 1, ref.label,
                          ref.image, ref.mask, camera="/camera/image_raw")
        w.write_caption(bags.CAPTION_TOPIC, seq.stamp_ns(0) - 500, "the red disc")
    return path


@pytest.mark.parametrize("storage, suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_round_trip(tmp_path, seq, storage, suffix):
    path = write_bag(tmp_path / "bag", seq, storage)
    files = sorted(p.name for p in path.iterdir())
    assert files == ["bag" + suffix, "metadata.yaml"]
    meta = (path / "metadata.yaml").read_text()
    assert "version: 9" in meta and f"storage_identifier: {storage}" in meta
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers

    with bags.BagReader(path) as r:
        assert r.topics == {
            bags.CAMERA_TOPIC: bags.IMAGE_TYPE,
            bags.GROUND_TRUTH_TOPIC: bags.IMAGE_TYPE,
            bags.REFERENCE_TOPIC: bags.REFERENCE_TYPE,
            bags.CAPTION_TOPIC: bags.STRING_TYPE,
        }
        assert r.object_labels() == {1: "red disc", 2: "blue square", 3: "green triangle"}
        frames = list(r.frames())
        assert [f.index for f in frames] == list(range(6))
        assert [f.stamp_ns for f in frames] == [seq.stamp_ns(i) for i in range(6)]
        for f in frames:
            assert f.image.dtype == np.uint8
            assert f.image.tobytes() == seq.frames[f.index].tobytes()
        gts = dict(r.label_maps())
        for i in range(6):
            assert gts[seq.stamp_ns(i)].tobytes() == seq.label_map(i).tobytes()
        (ref,) = list(r.references())
        want = synthetic.render_reference(1, 40, 50, seed=1)
        assert (ref.target_id, ref.label, ref.camera) == (1, "red disc", "/camera/image_raw")
        np.testing.assert_array_equal(ref.image, want.image)
        np.testing.assert_array_equal(ref.mask, want.mask)
        assert [c.text for c in r.captions()] == ["the red disc"]
        idx = bags.index_sequence(r)
        assert idx.first_seen == {1: seq.stamp_ns(0), 2: seq.stamp_ns(0), 3: seq.stamp_ns(0)}
        assert idx.frame_shape[seq.stamp_ns(3)] == (48, 64)


def test_metadata_version_8(tmp_path, seq):
    with bags.BagWriter(tmp_path / "b8", storage="sqlite3", version=8) as w:
        w.write_image(bags.CAMERA_TOPIC, 5, seq.frames[0])
    assert "version: 8" in (tmp_path / "b8" / "metadata.yaml").read_text()
    with bags.BagReader(tmp_path / "b8") as r:
        assert next(r.frames()).image.tobytes() == seq.frames[0].tobytes()


def test_reads_bare_storage_file(tmp_path, seq):
    path = write_bag(tmp_path / "bag", seq, "mcap")
    with bags.BagReader(path / "bag.mcap") as r:
        assert len(list(r.frames())) == 6


def test_other_encodings_and_padding_are_decoded(tmp_path, seq):
    bgr = np.ascontiguousarray(seq.frames[0][:, :, ::-1])
    with bags.BagWriter(tmp_path / "enc") as w:
        w.write_image("/bgr", 1, bgr, encoding="bgr8")
        msg = bags.image_message(seq.frames[0], "rgb8", 2, "cam")
        padded = np.zeros((48, 64 * 3 + 4), np.uint8)
        padded[:, : 64 * 3] = seq.frames[0].reshape(48, -1)
        msg.step, msg.data = 64 * 3 + 4, padded.reshape(-1)
        w.write_message("/padded", bags.IMAGE_TYPE, msg, 2)
        big = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20
        w.write_label_map("/gt16", 3, big)
    with bags.BagReader(tmp_path / "enc") as r:
        np.testing.assert_array_equal(next(r.frames("/bgr")).image, seq.frames[0])
        np.testing.assert_array_equal(next(r.frames("/padded")).image, seq.frames[0])
        ((_, lm),) = list(r.label_maps("/gt16"))
        assert lm.dtype == np.uint16
        np.testing.assert_array_equal(lm, big)


def test_embedded_reference_definition_matches_msg_file():
    assert (REPO_ROOT / "msg" / "ReferenceTarget.msg").read_text() == bags.REFERENCE_TARGET_MSG


def test_writer_leaves_nothing_on_error(tmp_path, seq):
    with pytest.raises(RuntimeError):
        with bags.BagWriter(tmp_path / "x") as w:
            w.write_image(bags.CAMERA_TOPIC, 1, seq.frames[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError):
        write_bag(tmp_path / "y", seq, "mcap")
        bags.BagWriter(tmp_path / "y")


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("storage, suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_truncated_bag(tmp_path, seq, storage, suffix):
    path = write_bag(tmp_path / "cut", seq, storage)
    data = path / ("cut" + suffix)
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size * 2 // 3)
    with pytest.raises(bags.BagError, match=r"cut.*(truncated|corrupt)"):
        with bags.BagReader(path) as r:
            bags.index_sequence(r)


def edit_metadata(bag, **changes):
    """Change top-level fields of a written bag's metadata.yaml, as another tool would
    have written them."""
    meta_path = bag / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["rosbag2_bagfile_information"].update(changes)
    meta_path.write_text(yaml.safe_dump(meta))
    return meta["rosbag2_bagfile_information"]


def zstd_compress_files(bag):
    """Turn a written bag into one recorded with ``--compression-mode file
    --compression-format zstd``: each storage file zstd-compressed, named ``*.zstd``."""
    try:
        from compression import zstd  # novermin (Python 3.14)
    except ImportError:
        from backports import zstd  # what rosbags uses before 3.14
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    names = []
    for name in info["relative_file_paths"]:
        plain = bag / name
        (bag / (name + ".zstd")).write_bytes(zstd.compress(plain.read_bytes()))
        plain.unlink()
        names.append(name + ".zstd")
    files = [dict(f, path=f["path"] + ".zstd") for f in info["files"]]
    edit_metadata(bag, relative_file_paths=names, files=files, compression_format="zstd",
                  compression_mode="FILE")
    return [bag / n for n in names]


def test_zstd_compressed_bag_is_read(tmp_path, seq):
    """rosbags decompresses zstd bags itself: they are read, not refused."""
    path = write_bag(tmp_path / "z", seq, "mcap")
    zstd_compress_files(path)
    with bags.BagReader(path) as r:
        frames = list(r.frames())
        bags.index_sequence(r)
    assert [f.image.tobytes() for f in frames] == [f.tobytes() for f in seq.frames]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_compressed_bag(tmp_path, seq, storage):
    path = write_bag(tmp_path / "cut", seq, storage)
    (data,) = zstd_compress_files(path)
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size * 2 // 3)
    with pytest.raises(bags.BagError, match=r"cut.*(truncated|corrupt)"):
        with bags.BagReader(path) as r:
            bags.index_sequence(r)


def test_newer_metadata_version_is_named_not_called_corrupt(tmp_path, seq):
    path = write_bag(tmp_path / "v10", seq, "mcap")
    edit_metadata(path, version=10)
    with pytest.raises(bags.BagError) as err:
        bags.BagReader(path)
    assert str(err.value) == (
        f"bag {path}: metadata version 10 is not supported (rosbags "
        f"{importlib.metadata.version('rosbags')} reads up to 9); a newer rosbags may "
        "read it")


@pytest.mark.parametrize("fmt, mode, said", [("lz4", "file", "lz4, per file"),
                                             ("lz4", "MESSAGE", "lz4, per message"),
                                             ("", "file", "no format named, per file")])
def test_compression_rosbags_cannot_read_is_named(tmp_path, seq, fmt, mode, said):
    path = write_bag(tmp_path / "comp", seq, "sqlite3")
    edit_metadata(path, compression_format=fmt, compression_mode=mode)
    with pytest.raises(bags.BagError) as err:
        bags.BagReader(path)
    assert str(err.value) == (
        f"bag {path} is compressed ({said}), which rosbags cannot read (it reads zstd "
        f"only); decompress it first with `ros2 bag convert --input {path} "
        "--output-options OPTIONS.yaml` (an output bag without compression)")


def test_storage_plugin_rosbags_cannot_read_is_named(tmp_path, seq):
    path = write_bag(tmp_path / "st", seq, "mcap")
    edit_metadata(path, storage_identifier="rosbag_v2")
    with pytest.raises(bags.BagError) as err:
        bags.BagReader(path)
    assert str(err.value) == (f"bag {path}: storage 'rosbag_v2' is not supported (rosbags "
                              "reads mcap and sqlite3)")


def test_serialization_format_rosbags_cannot_read_is_named(tmp_path, seq):
    path = write_bag(tmp_path / "ser", seq, "mcap")
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = meta["topics_with_message_count"]
    for t in topics:
        if t["topic_metadata"]["name"] == bags.CAPTION_TOPIC:
            t["topic_metadata"]["serialization_format"] = "json"
    edit_metadata(path, topics_with_message_count=topics)
    with pytest.raises(bags.BagError) as err:
        bags.BagReader(path)
    assert str(err.value) == (f"bag {path}: topic {bags.CAPTION_TOPIC} is serialised as "
                              "'json'; only CDR is supported")


def test_not_a_rosbag2_bag_is_named(tmp_path, seq):
    ros1 = tmp_path / "old.bag"
    ros1.write_bytes(b"#ROSBAG V2.0\n")
    with pytest.raises(bags.BagError) as err:
        bags.BagReader(ros1)
    assert str(err.value) == (f"bag {ros1} is not a rosbag2 bag: give its directory (with "
                              "metadata.yaml) or a .mcap or .db3 file")
    (tmp_path / "dir").mkdir()
    with pytest.raises(bags.BagError) as err:
        bags.BagReader(tmp_path / "dir")
    assert str(err.value) == (
        f"bag {tmp_path / 'dir'} cannot be opened: it has no metadata.yaml (not a rosbag2 "
        "bag, or a recording that stopped before writing it: `ros2 bag reindex` rebuilds it)")


def test_missing_topic_lists_topics(tmp_path, seq):
    path = write_bag(tmp_path / "bag", seq, "mcap")
    with bags.BagReader(path) as r:
        with pytest.raises(bags.BagError) as err:
            list(r.frames("/front/image"))
    msg = str(err.value)
    assert str(path) in msg and "'/front/image'" in msg
    assert bags.CAMERA_TOPIC in msg and bags.GROUND_TRUTH_TOPIC in msg


def test_wrong_topic_type(tmp_path, seq):
    path = write_bag(tmp_path / "bag", seq, "mcap")
    with bags.BagReader(path) as r:
        with pytest.raises(bags.BagError, match="carries std_msgs/msg/String"):
            list(r.frames(bags.CAPTION_TOPIC))


def test_ground_truth_of_another_size(tmp_path, seq):
    path = tmp_path / "bag"
    with bags.BagWriter(path) as w:
        for i in range(3):
            w.write_image(bags.CAMERA_TOPIC, seq.stamp_ns(i), seq.frames[i])
            w.write_label_map(bags.GROUND_TRUTH_TOPIC, seq.stamp_ns(i),
                              seq.label_map(i)[:40, :60])
    with bags.BagReader(path) as r, pytest.raises(bags.BagError) as err:
        bags.index_sequence(r)
    msg = str(err.value)
    assert str(path) in msg and bags.GROUND_TRUTH_TOPIC in msg
    assert "60x40" in msg and "64x48" in msg


def test_bag_with_no_frames(tmp_path, seq):
    path = tmp_path / "empty"
    with bags.BagWriter(path) as w:
        w._connection(bags.CAMERA_TOPIC, bags.IMAGE_TYPE)  # topic declared, never written
        w.write_label_map(bags.GROUND_TRUTH_TOPIC, 1, seq.label_map(0))
    with bags.BagReader(path) as r, pytest.raises(bags.BagError) as err:
        bags.index_sequence(r)
    assert str(path) in str(err.value) and f"{bags.CAMERA_TOPIC!r} has no frames" in str(err.value)


def test_ground_truth_without_matching_frame(tmp_path, seq):
    path = tmp_path / "bag"
    with bags.BagWriter(path) as w:
        w.write_image(bags.CAMERA_TOPIC, 10, seq.frames[0])
        w.write_label_map(bags.GROUND_TRUTH_TOPIC, 11, seq.label_map(0))
    with bags.BagReader(path) as r, pytest.raises(bags.BagError, match="no frame with that stamp"):
        bags.index_sequence(r)


def test_missing_bag_and_not_a_bag(tmp_path):
    with pytest.raises(bags.BagError, match="does not exist"):
        bags.BagReader(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(bags.BagError, match="cannot be opened"):
        bags.BagReader(tmp_path / "dir")


def test_compressed_camera_topic(tmp_path, seq):
    import cv2

    store = bags.typestore()
    with bags.BagWriter(tmp_path / "c") as w:
        for i in range(2):
            ok, png = cv2.imencode(".png", seq.frames[i][:, :, ::-1])
            msg = store.types[bags.COMPRESSED_TYPE](
                header=bags._header(seq.stamp_ns(i), "cam"), format="png",
                data=np.frombuffer(png.tobytes(), np.uint8))
            w.write_message("/camera/image_raw/compressed", bags.COMPRESSED_TYPE, msg,
                            seq.stamp_ns(i))
            w.write_label_map(bags.GROUND_TRUTH_TOPIC, seq.stamp_ns(i), seq.label_map(i))
    with bags.BagReader(tmp_path / "c") as r:
        frames = list(r.frames("/camera/image_raw/compressed"))
        idx = bags.index_sequence(r, "/camera/image_raw/compressed")
    assert [f.image.tobytes() for f in frames] == [seq.frames[i].tobytes() for i in range(2)]
    assert idx.frame_shape[seq.stamp_ns(1)] == (48, 64)


def test_type_hashes_match_the_generated_interfaces():
    """Bags name their types with the same RIHS01 hashes as the rosidl build, so
    ``ros2 bag`` and rclpy accept them. The generated descriptions are compared where
    they exist (the ROS wheels ship sensor_msgs'; the colcon build writes ours)."""
    import sys

    store = bags.typestore()
    pinned = {
        bags.IMAGE_TYPE:
            "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
        bags.REFERENCE_TYPE:
            "RIHS01_593ff2340d93c9cd41fe32cc7aff767cf6c58b0d2ba6285305902d4bab610c97",
    }
    for msgtype, want in pinned.items():
        pkg, _, name = msgtype.split("/")
        for share in (Path(sys.prefix) / "share", REPO_ROOT / "install" / "share"):
            desc = share / pkg / "msg" / f"{name}.json"
            if desc.is_file():
                import json

                want = json.loads(desc.read_text())["type_hashes"][0]["hash_string"]
        assert store.hash_rihs01(msgtype) == want, msgtype
