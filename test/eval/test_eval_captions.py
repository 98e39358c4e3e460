"""Caption episodes in the evaluation: the synthetic bag's captions and a miniature
Ref-YouTube-VOS layout (one bag per expression), scored offline with the grounding path
(a tiny random-weight OWLv2 from a folder, waiting for each detection so that results do
not depend on timing), and live through the node.
"""

from __future__ import annotations

import json

import pytest

from refseg_ros.eval import bags, cli
from refseg_ros.eval.plan import PlanError, make_plan
from support.evaluation import make_ytvos_layout
from support.tiny_models import save_owlv2


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    return save_owlv2(tmp_path_factory.mktemp("owl") / "owlv2")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    bag = tmp_path_factory.mktemp("bags") / "synthetic"
    assert cli.main(["build", "synthetic", str(bag), "--frames", "4", "--size", "64x48"]) == 0
    return bag


def _run(bag, out, owl, *extra) -> dict:
    code = cli.main(["run", str(bag), "--out", str(out), "--prompt", "caption", "--model", "sam2.1_hiera_t",
                     "--image-size", "256", "--device", "cpu", "--grounding-model", str(owl),
                     "--grounding-threshold", "0.5", "--no-progress", *extra])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_plan_assigns_captions_to_objects(synthetic):
    with bags.BagReader(synthetic) as reader:
        plan = make_plan(reader, prompt="caption")
        captions = [c.text for c in reader.captions()]
        labels = reader.object_labels()
    prompts = plan.episodes[0].prompts
    assert [p.kind for p in prompts] == ["caption"] * len(captions)
    assert [p.caption for p in prompts] == captions
    assert [p.target_id for p in prompts] == sorted(labels)  # the builder's order
    assert all(p.mask is None for p in prompts)


def test_offline_caption_run_scores_every_caption_and_is_reproducible(synthetic, tmp_path, owl):
    first = _run(synthetic, tmp_path / "a", owl)
    second = _run(synthetic, tmp_path / "b", owl)
    per_target = first["per_target"]
    with bags.BagReader(synthetic) as reader:
        assert set(per_target) == {str(k) for k in reader.object_labels()}
    assert all(v["frames"] == 4 for v in per_target.values())
    assert first["summary"]["jf_mean"] == second["summary"]["jf_mean"]
    assert first["per_target"] == second["per_target"]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["source"]["text"]["grounding_model"] == str(owl)  # part of the run's identity


def test_refvos_miniature_runs_one_expression_per_bag(tmp_path, owl):
    exps = [{"exp": "a cat on the left", "obj_id": "1"}, {"exp": "the dog", "obj_id": "2"}]
    make_ytvos_layout(tmp_path / "ytvos", "train", exps)
    assert cli.main(["build", "ref-youtube-vos", str(tmp_path / "ytvos"), str(tmp_path / "idx"),
                     "--split", "train"]) == 0
    code = cli.main(["run", str(tmp_path / "idx"), "--out", str(tmp_path / "out"), "--model", "sam2.1_hiera_t",
                     "--image-size", "256", "--device", "cpu", "--grounding-model", str(owl),
                     "--grounding-threshold", "0.5", "--no-progress"])
    assert code == 0
    out = tmp_path / "out"
    for name in ("v1_0", "v1_1"):  # one bag per expression, its referred object scored as id 1
        data = json.loads((out / "sequences" / name / "report.json").read_text())
        assert set(data["per_target"]) == {"1"} and data["per_target"]["1"]["frames"] == 3
    merged = json.loads((out / "report.json").read_text())
    assert "jf_mean" in json.dumps(merged)  # the benchmark's summary over the expressions


def test_no_text_model_is_refused_before_anything_is_written(synthetic, tmp_path, capsys):
    code = cli.main(["run", str(synthetic), "--out", str(tmp_path / "o"), "--prompt", "caption",
                     "--grounding-model", str(tmp_path / "missing"), "--no-progress"])
    assert code == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "caption episodes need a text model" in err and "missing" in err
    assert not (tmp_path / "o").exists()


def test_one_shot_bags_take_no_captions(tmp_path):
    bag = tmp_path / "fss"
    with bags.BagWriter(bag) as writer:
        writer.set_protocol("one-shot")
    with bags.BagReader(bag) as reader, pytest.raises(PlanError, match="not captions"):
        make_plan(reader, prompt="caption")


def test_live_caption_run_through_the_node(synthetic, tmp_path, owl):
    """The node in replay mode, taught the bag's captions over AddTarget; grounding runs
    beside tracking there (results depend on timing, unlike offline), so the test checks
    that every caption is taught, tracked and scored on every frame."""
    report = _run(synthetic, tmp_path / "live", owl, "--mode", "live", "--startup-timeout", "240")
    with bags.BagReader(synthetic) as reader:
        assert set(report["per_target"]) == {str(k) for k in reader.object_labels()}
    assert all(v["frames"] == 4 for v in report["per_target"].values())
    run = json.loads((tmp_path / "live" / "run.json").read_text())
    assert run["source"]["text"]["grounding_model"] == str(owl)


@pytest.fixture(scope="module")
def samwise_files(tmp_path_factory):
    from support.tiny_models import save_roberta_tokenizer, tiny_samwise, write_samwise_checkpoint

    root = tmp_path_factory.mktemp("samwise")
    sam, adapter = tiny_samwise("sam2_hiera_t", 256)
    return write_samwise_checkpoint(root / "samwise.pth", sam, adapter), save_roberta_tokenizer(root / "tok")


@pytest.mark.parametrize("mode", ["clip", "causal"])
def test_offline_samwise_modes_score_every_frame(synthetic, tmp_path, samwise_files, mode):
    """SAMWISE offline, clip mode (clips of 3 over 4 frames: the last clip of 1 comes from
    the engine's flush at the episode's end) and causal mode: every caption scored on
    every frame, every frame recorded whole (late results merged before it is written)."""
    checkpoint, tokenizer = samwise_files
    args = ["run", str(synthetic), "--prompt", "caption", "--model", "sam2_hiera_t", "--image-size", "256",
            "--device", "cpu", "--samwise-checkpoint", str(checkpoint), "--samwise-tokenizer", str(tokenizer),
            "--text-window", "3", "--text-mode", mode, "--no-progress"]
    assert cli.main(args + ["--out", str(tmp_path / mode)]) == 0
    report = json.loads((tmp_path / mode / "report.json").read_text())
    with bags.BagReader(synthetic) as reader:
        assert set(report["per_target"]) == {str(k) for k in reader.object_labels()}
    assert all(v["frames"] == 4 for v in report["per_target"].values())
    from refseg_ros.eval import outdir

    run = outdir.RunDirectory(tmp_path / mode)
    records = run.read_results()
    assert len(records) == 4 and all(len(r["targets"]) == len(report["per_target"]) for r in records)
    run_info = json.loads((tmp_path / mode / "run.json").read_text())
    assert run_info["source"]["text"]["text_mode"] == mode
