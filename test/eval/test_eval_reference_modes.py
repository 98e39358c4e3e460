"""One-shot episodes evaluated per reference mode and compared side by side: baseline
(pinned examples, SAM2 tracking), acquisition (a tiny random DINOv2 prior from a folder,
each proposal waited for offline), TTGA (2 tuning steps) and DBST (a tiny diffusion
pipeline, 2 transition frames), acquisition+dbst (both on each target), cavsam (TTGA
with 1 step + DBST through the tuned neck) and ttga+acquisition (the prior gating the
TTGA tracker). With the gate held shut, acquisition publishes no mask at all, with or
without the transition frames, and neither does TTGA under it; the baseline and TTGA
alone do. `refseg-eval compare` puts runs in one table.
"""

from __future__ import annotations

import json

import torch

from refseg_ros.eval import builders, cli, outdir, runner
from refseg_ros.eval.sources import EngineReplaySource, EngineSettings
from refseg_ros.runtime.acquisition import AcquisitionSettings
from refseg_ros.runtime.reference_modes import ReferenceSettings
from refseg_ros.runtime.transitions import TransitionSettings
from support.clips import write_fss_folder
from support.tiny_models import save_dinov2, save_tiny_pipeline, say_present

COMMON = ["--image-size", "256", "--device", "cpu", "--no-progress"]


def _present_engine():
    """The evaluation's engine with SAM2's object head saying "present" (random weights
    otherwise call every object absent, and no run would publish a mask)."""

    from refseg_ros.engine import EngineConfig, SegmentationEngine

    engine = SegmentationEngine.from_config(EngineConfig(model="sam2.1_hiera_t", image_size=256, device="cpu"))
    say_present(engine.model)
    return engine


def test_modes_side_by_side(tmp_path, capsys):
    write_fss_folder(tmp_path / "fss", pairs=2, seed=0, step=5)
    bag = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=1)
    dino = save_dinov2(tmp_path / "dino")
    engine = _present_engine()
    modes = {"baseline": EngineSettings(image_size=256, device="cpu"),
             "acquisition": EngineSettings(image_size=256, device="cpu", reference_mode="acquisition",
                                           acquisition=AcquisitionSettings(str(dino), acquisition_threshold=2.0,
                                                                           acquisition_m=1, acquisition_k=1))}
    modes["ttga"] = EngineSettings(image_size=256, device="cpu", reference_mode="ttga",
                                   fssam=ReferenceSettings("ttga", ttga_steps=2))
    torch.set_num_threads(1)
    modes["dbst"] = EngineSettings(image_size=256, device="cpu", reference_mode="dbst",
                                   transitions=TransitionSettings(str(save_tiny_pipeline(tmp_path / "sd")),
                                                                  "taught", 2, 1))
    modes["acquisition+dbst"] = EngineSettings(image_size=256, device="cpu", reference_mode="acquisition+dbst",
                                               acquisition=modes["acquisition"].acquisition,
                                               transitions=modes["dbst"].transitions)
    modes["cavsam"] = EngineSettings(image_size=256, device="cpu", reference_mode="cavsam",
                                     fssam=ReferenceSettings("ttga", ttga_steps=1),
                                     transitions=modes["dbst"].transitions)
    modes["ttga+acquisition"] = EngineSettings(image_size=256, device="cpu", reference_mode="ttga+acquisition",
                                               fssam=ReferenceSettings("ttga", ttga_steps=1),
                                               acquisition=modes["acquisition"].acquisition)
    published = {}
    for name, settings in modes.items():
        cfg = runner.RunConfig(bag=bag, out=tmp_path / name, progress=False, engine=settings)
        runner.evaluate(cfg, source=EngineReplaySource(settings, engine))
        run = outdir.RunDirectory(tmp_path / name)
        published[name] = sum(int(m.sum()) for r in run.read_results() for m in run.load_masks(r["frame"]).values())
    assert published["baseline"] > 0  # SAM2 tracks from the pinned reference
    assert published["acquisition"] == 0  # the prior never found it: no mask, ever
    run = json.loads((tmp_path / "acquisition" / "run.json").read_text())
    assert run["source"]["reference_mode"] == "acquisition"
    assert run["source"]["reference"]["dino_model"] == str(dino)

    assert cli.main(["compare", str(tmp_path / "baseline"), str(tmp_path / "acquisition"),
                     "--out", str(tmp_path / "modes.md")]) == 0
    table = capsys.readouterr().out
    assert "| acquisition | acquisition |" in table and "| baseline | baseline |" in table
    assert json.loads((tmp_path / "ttga" / "run.json").read_text())["source"]["reference_mode"] == "ttga"
    assert published["ttga"] > 0 and published["dbst"] > 0
    # the transition frames' memories never open the prior's gate: still no mask
    assert published["acquisition+dbst"] == 0
    both = json.loads((tmp_path / "acquisition+dbst" / "run.json").read_text())["source"]
    assert both["reference_mode"] == "acquisition+dbst"
    assert both["reference"]["dino_model"] == str(dino) and both["reference"]["dbst_frames"] == 2
    cavsam = json.loads((tmp_path / "cavsam" / "run.json").read_text())["source"]
    assert cavsam["reference_mode"] == "ttga+dbst" and published["cavsam"] > 0  # the alias's canonical name
    assert cavsam["reference"]["ttga_steps"] == 1 and cavsam["reference"]["dbst_frames"] == 2
    assert published["ttga+acquisition"] == 0  # the prior gates the TTGA tracker as it gates SAM2's
    gated = json.loads((tmp_path / "ttga+acquisition" / "run.json").read_text())["source"]["reference"]
    assert gated["ttga_steps"] == 1 and gated["dino_model"] == str(dino)
    table_rows = {line.split("|")[1].strip() for line in table.splitlines()[2:]}
    assert table_rows == {"baseline", "acquisition"}
    assert "false-positive rate" in table and (tmp_path / "modes.md").read_text().strip() == table.strip()
    miou = {n: json.loads((tmp_path / n / "report.json").read_text())["summary"]["miou"] for n in modes}
    assert miou["acquisition"] < miou["baseline"]


def test_a_missing_dino_folder_is_refused_before_writing(tmp_path, capsys):
    write_fss_folder(tmp_path / "fss", pairs=2, seed=0, step=5)
    bag = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=1)
    code = cli.main(["run", str(bag), "--out", str(tmp_path / "o"), "--reference-mode", "acquisition",
                     "--dino-model", str(tmp_path / "nope"), *COMMON])
    assert code == cli.EXIT_BAD_INPUT
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
