"""refseg-eval commands that need no model, the ROS-free import rule, and the player."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from refseg_ros.eval import bags, cli, synthetic


def test_eval_imports_without_rclpy():
    code = textwrap.dedent("""
        import sys
        import refseg_ros.imaging
        import refseg_ros.runtime.parameters  # the parameter table: the eval's flags and the docs
        from refseg_ros.eval import (bags, builders, cli, live, metrics, node_outputs,
                                     nodeproc, outdir, plan, player, report, runner,
                                     scoring, sources, synthetic)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "torch", "sam2"))
        print(bad)
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_build_and_info(tmp_path, capsys):
    out = tmp_path / "syn"
    assert cli.main(["build", "synthetic", str(out), "--frames", "3", "--size", "40x30",
                     "--storage", "sqlite3"]) == 0
    assert (out / "syn.db3").exists()
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/camera/image_raw  sensor_msgs/msg/Image  3 msgs" in text
    assert "1=red disc" in text and "protocol: video" in text
    with bags.BagReader(out) as r:
        assert next(r.frames()).image.shape == (30, 40, 3)


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing")]) == cli.EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    cli.main(["build", "synthetic", str(tmp_path / "b"), "--frames", "2", "--size", "32x32"])
    capsys.readouterr()
    code = cli.main(["run", str(tmp_path / "b"), "--out", str(tmp_path / "o"),
                     "--camera-topic", "/nope"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT
    assert "'/nope'" in err and str(tmp_path / "b") in err and "/camera/image_raw" in err
    assert not (tmp_path / "o").exists()
    code = cli.main(["run", str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--prompt",
                     "caption"])
    assert code == cli.EXIT_BAD_INPUT
    assert "caption episodes need a text model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert cli.main(["build", "synthetic", str(tmp_path / "b")]) == cli.EXIT_BAD_INPUT
    assert "exists already" in capsys.readouterr().err


def test_bad_size_argument():
    with pytest.raises(SystemExit):
        cli.main(["build", "synthetic", "x", "--size", "big"])


SUBSCRIBER = textwrap.dedent("""
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("eval_player_test_sub")
    got = []
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/camera/image_raw", got.append, qos)
    clock = []
    node.create_subscription(Clock, "/clock", clock.append, qos)
    print("READY", flush=True)
    end = time.time() + float(sys.argv[1])
    while time.time() < end and len(got) < int(sys.argv[2]):
        rclpy.spin_once(node, timeout_sec=0.05)
    for m in got:
        print("MSG", m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.encoding,
              bytes(m.data).hex()[:64], flush=True)
    for c in clock:
        print("CLOCK", c.clock.sec * 10**9 + c.clock.nanosec, flush=True)
    print("DONE", len(got), flush=True)
""")


def start_subscriber(tmp_path, spawn_python):
    """The SUBSCRIBER process (60 s, 6 frames), once it says READY."""
    script = tmp_path / "sub.py"
    script.write_text(SUBSCRIBER)
    sub = spawn_python(str(script), "60", "6")
    for _ in range(300):
        if "READY" in sub.output() or sub.poll() is not None:
            break
        time.sleep(0.1)
    assert "READY" in sub.output(), sub.output()
    return sub


def test_player_publishes_bag_frames(tmp_path, spawn_python):
    """The player's raw CDR bytes arrive as real sensor_msgs/Image in another process,
    in order, with /clock following bag time."""
    bag = tmp_path / "bag"
    cli.main(["build", "synthetic", str(bag), "--frames", "6", "--size", "32x24"])
    sub = start_subscriber(tmp_path, spawn_python)
    player = spawn_python("-m", "refseg_ros.eval.cli", "play", str(bag), "--rate", "4",
                          "--topics", bags.CAMERA_TOPIC, "--wait-subscribers", "1",
                          "--start-delay", "0.5", "--clock")
    assert player.wait(timeout=90) == 0, player.output()
    assert "published 6 messages" in player.output()
    assert sub.wait(timeout=60) == 0, sub.output()
    lines = [ln.split() for ln in sub.output().splitlines() if ln.startswith("MSG")]
    with bags.BagReader(bag) as r:
        frames = list(r.frames())
    assert len(lines) == 6, sub.output()
    for (_, stamp, enc, data), f in zip(lines, frames):
        assert int(stamp) == f.stamp_ns and enc == "rgb8"
        assert data == f.image.tobytes().hex()[:64]
    assert np.diff([int(x[1]) for x in lines]).min() > 0  # in order
    clock = [int(ln.split()[1]) for ln in sub.output().splitlines() if ln.startswith("CLOCK")]
    assert clock and set(clock) <= {f.stamp_ns for f in frames}


# No package of this name exists anywhere, so rclpy cannot load the type.
CUSTOM_TYPE = "acme_test_msgs/msg/Blob"
CUSTOM_TOPIC = "/acme/blob"


def write_bag_with_custom_topic(path):
    """Six camera frames, and a custom-typed topic between them (its definition is in the
    bag, but no Python package of it exists)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("float64 weight\nstring note\n", CUSTOM_TYPE))
    seq = synthetic.generate(num_frames=6, height=24, width=32, seed=2)
    with bags.BagWriter(path) as w:
        for i in range(6):
            w.write_image(bags.CAMERA_TOPIC, seq.stamp_ns(i), seq.frames[i])
            blob = store.types[CUSTOM_TYPE](weight=float(i), note=f"blob {i}")
            w.write_message(CUSTOM_TOPIC, CUSTOM_TYPE, blob, seq.stamp_ns(i) + 1, store=store)
    return seq


def test_player_skips_a_topic_of_an_unknown_type(tmp_path, spawn_python):
    """The custom topic is skipped with one warning naming it and its type; the frames
    are still played and arrive."""
    bag = tmp_path / "bag"
    seq = write_bag_with_custom_topic(bag)
    sub = start_subscriber(tmp_path, spawn_python)
    player = spawn_python("-m", "refseg_ros.eval.cli", "play", str(bag), "--rate", "4",
                          "--wait-subscribers", "1", "--start-delay", "0.5")
    assert player.wait(timeout=90) == 0, player.output()
    out = player.output()
    assert "published 6 messages" in out
    warnings = [ln for ln in out.splitlines() if CUSTOM_TOPIC in ln]
    assert len(warnings) == 1, out
    assert warnings[0].startswith("WARNING ") and CUSTOM_TYPE in warnings[0]
    assert "skipping topic" in warnings[0]
    assert sub.wait(timeout=60) == 0, sub.output()
    stamps = [int(ln.split()[1]) for ln in sub.output().splitlines() if ln.startswith("MSG")]
    assert stamps == [seq.stamp_ns(i) for i in range(6)], sub.output()


def test_player_with_nothing_playable_fails_clearly(tmp_path, capsys, caplog):
    bag = tmp_path / "bag"
    write_bag_with_custom_topic(bag)
    code = cli.main(["play", str(bag), "--topics", CUSTOM_TOPIC])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT, err
    assert err.startswith(f"refseg-eval: error: bag {bag}: nothing to play"), err
    assert f"{CUSTOM_TOPIC} [{CUSTOM_TYPE}]" in err
    skipped = [r for r in caplog.records if CUSTOM_TOPIC in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelname == "WARNING"
