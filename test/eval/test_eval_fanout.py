"""``refseg-eval run INDEX``: a benchmark's sequences in one process or fanned out on Ray.

A miniature benchmark (6 synthetic bags, 3 frames of 64x48, the real model with random
weights at image size 128 on the CPU) runs once in this process (``--workers 1``) and
once on 3 Ray workers of a local runtime started once for the module: per-sequence
results must be the same bit for bit, and so must the benchmark's numbers. A worker
killed in the middle of a sequence is brought back by Ray and the sequence counted once;
a finished run is not redone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from refseg_ros.eval import builders, cli, fanout, outdir
from refseg_ros.eval.importers.index import write_index
from refseg_ros.runtime.threads import plan_threads

needs_ray = pytest.mark.skipif(not fanout.ray_available(),
                               reason="Ray is not installed (pip install .[cluster])")

SEQUENCES = [f"seq{k}" for k in range(6)]
FRAMES = 3
MODEL = ["--image-size", "128", "--device", "cpu"]
PROTOCOL = {"name": "miniature", "prompt": "first-frame-gt", "overlaps": "label-map",
            "scored_frames": "all but each object's first", "summary": "mean-over-objects"}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini_benchmark")
    entries = []
    for k, name in enumerate(SEQUENCES):
        builders.synthetic_to_bag(root / "bags" / name, num_frames=FRAMES, height=48, width=64,
                                  seed=k)
        entries.append({"name": name, "path": f"bags/{name}", "storage": "mcap",
                        "frames": FRAMES})
    return write_index(root, "miniature", PROTOCOL, entries)


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for the module, with room for 3 workers of the default
    thread count (the cores less one)."""
    ray = fanout.start_local_runtime(num_cpus=3 * plan_threads(0).intra_op)
    yield ray
    ray.shutdown()


def run(index: Path, out: Path, *extra: str) -> int:
    return cli.main(["run", str(index), "--out", str(out), *MODEL, *extra])


@pytest.fixture(scope="module")
def one_worker(index, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "out"
    assert run(index, out, "--workers", "1") == 0
    return out


def worker_lines(err: str) -> dict[str, int]:
    """Sequence name -> worker pid, from the progress lines on stderr."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"\] (\S+) finished in [0-9.]+ s \(pid (\d+)", err)}


def masks_of(out: Path, name: str) -> list[tuple[int, dict[str, dict]]]:
    """Per frame, every target's mask digest, area, the model's float score and state."""
    records = outdir.RunDirectory(out / "sequences" / name).read_results()
    return [(r["frame"], r["targets"]) for r in records]


def scores_of(out: Path, name: str) -> dict:
    rep = json.loads((out / "sequences" / name / "report.json").read_text())
    return {"summary": rep["summary"], "per_target": rep["per_target"], "frames": rep["frames"]}


def merged(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def rows_without_timing(rep: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("step_")} for r in rep["sequences"]]


@needs_ray
def test_three_ray_workers_give_the_results_of_one_process(index, one_worker, ray_runtime,
                                                           tmp_path, capfd):
    # The local runtime is confined to this machine: its node address is the loopback one.
    assert [n["NodeManagerAddress"] for n in ray_runtime.nodes()] == ["127.0.0.1"]
    capfd.readouterr()
    out = tmp_path / "three"
    assert run(index, out, "--workers", "3") == 0
    captured = capfd.readouterr()
    pids = worker_lines(captured.err)
    assert sorted(pids) == SEQUENCES, captured.err
    # Three worker processes, none of them this one; each ran its sequences with the model
    # it loaded once (6 sequences, at most 3 processes).
    info = merged(out)["info"]["run"]
    assert info["runtime"] == "ray (local)" and info["workers"] == 3
    worker_pids = {w["pid"] for w in info["workers_info"]}
    assert len(worker_pids) == 3 and os.getpid() not in worker_pids
    assert set(pids.values()) <= worker_pids and len(set(pids.values())) >= 2
    assert {w["threads"] for w in info["workers_info"]} == {plan_threads(0).intra_op}

    for name in SEQUENCES:
        assert len(masks_of(out, name)) == FRAMES
        assert masks_of(out, name) == masks_of(one_worker, name), name
        assert json.dumps(scores_of(out, name)) == json.dumps(scores_of(one_worker, name)), name
    one, three = merged(one_worker), merged(out)
    assert three["summary"] == one["summary"]
    assert three["summary"]["objects"] == 3 * len(SEQUENCES)
    assert rows_without_timing(three) == rows_without_timing(one)
    assert [r["name"] for r in three["sequences"]] == SEQUENCES
    assert one["info"]["run"]["runtime"] == "in-process"
    for plot in ("jf_per_sequence.png", "latency_per_sequence.png", "latency.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    assert "| [seq0](sequences/seq0/report.md) |" in (out / "report.md").read_text()
    assert (out / outdir.COMPLETE).exists()


@needs_ray
def test_a_killed_worker_is_restarted_and_its_sequence_counted_once(index, one_worker,
                                                                     ray_runtime, tmp_path,
                                                                     capfd, monkeypatch):
    out = tmp_path / "killed"
    monkeypatch.setenv(fanout.KILL_ENV, "seq2:2")  # exit after seq2's second frame
    capfd.readouterr()
    assert run(index, out, "--workers", "3") == 0
    err = capfd.readouterr().err
    marker = out / "sequences" / "seq2.killed"
    killed_pid = int(marker.read_text())
    pids = worker_lines(err)
    assert sorted(pids) == SEQUENCES, err
    assert pids["seq2"] != killed_pid  # finished by the restarted worker
    assert re.search(r"seq2 finished in [0-9.]+ s \(pid \d+, resumed: 2 stored frames "
                     r"reproduced\)", err), err
    report = json.loads((out / "sequences" / "seq2" / "report.json").read_text())
    assert report["info"]["resumed"]["frames_verified"] == 2
    assert report["info"]["resumed"]["frames_replaced"] == 0
    # Every frame once, and the numbers of the uninterrupted run.
    assert [f for f, _ in masks_of(out, "seq2")] == list(range(FRAMES))
    assert masks_of(out, "seq2") == masks_of(one_worker, "seq2")
    rep = merged(out)
    assert [r["name"] for r in rep["sequences"]] == SEQUENCES
    assert rep["summary"] == merged(one_worker)["summary"]


@needs_ray
def test_a_finished_run_is_not_redone(index, one_worker, ray_runtime, capsys):
    before = {p: p.stat().st_mtime_ns for p in one_worker.rglob("*") if p.is_file()}
    assert run(index, one_worker, "--workers", "3") == 0
    text = capsys.readouterr().out
    assert "already complete" in text and "nothing to do" in text and "6 sequences" in text
    assert {p: p.stat().st_mtime_ns for p in one_worker.rglob("*") if p.is_file()} == before

    # One sequence unfinished: only that one runs again (here on the module's runtime
    # named by its address, as a cluster is), then the report is merged anew.
    (one_worker / "sequences" / "seq4" / outdir.COMPLETE).unlink()
    summary = merged(one_worker)["summary"]
    address = ray_runtime.get_runtime_context().gcs_address
    assert run(index, one_worker, "--address", address) == 0
    captured = capsys.readouterr()
    assert "5 of 6 sequences are finished already; 1 to run" in captured.err
    assert list(worker_lines(captured.err)) == ["seq4"]
    run_info = merged(one_worker)["info"]["run"]
    assert run_info["runtime"] == f"ray ({address})" and run_info["workers"] == 1
    assert run_info["sequences_run"] == 1 and run_info["sequences_reused"] == 5
    assert (one_worker / outdir.COMPLETE).exists()
    assert merged(one_worker)["summary"] == summary
    assert masks_of(one_worker, "seq4")[-1][0] == FRAMES - 1


def test_without_ray_more_workers_say_what_to_install(index, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fanout, "ray_available", lambda: False)
    assert run(index, tmp_path / "o", "--workers", "2") == cli.EXIT_BAD_INPUT
    assert "pip install .[cluster]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    bag = index.parent / "bags" / "seq0"
    assert cli.main(["run", str(bag), "--out", str(tmp_path / "b"), "--workers", "2"]) == \
        cli.EXIT_BAD_INPUT
    assert "apply to a benchmark index" in capsys.readouterr().err
    monkeypatch.setattr(fanout, "ray_available", lambda: True)
    assert run(index, tmp_path / "o", "--overlaps", "keep") == cli.EXIT_BAD_INPUT
    assert "--overlaps label-map" in capsys.readouterr().err


def test_the_fanout_module_imports_without_torch_ray_or_rclpy():
    code = ("import sys\nfrom refseg_ros.eval import cli, fanout\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'torch', 'sam2', 'ray'))\nassert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
