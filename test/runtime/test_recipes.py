"""One recipe per reference mode, whichever path builds it.

For every name of the mode grammar (`runtime.recipes.MODES`), a reference target is
built through the node's path (the node's `Settings`, `open_for_node`, the registry's
teach, then add_view) and through the evaluation's (`refseg-eval run`'s arguments,
`EngineReplaySource.teach_reference`, as an episode teaches it), on the same engine, and
the engine's view of the target is compared: tracker (class and settings), proposers
(chain members, classes, settings), DBST triggers and encoder, the gate. Baseline
targets get two examples (the second pinned beside the first); TTGA and FSSAM targets
one (a second rebuilds the tracker through the same call as the first, and costs a
tuning or an FSSAM support pass more). `fssam+acquisition` is what the node makes of
`fssam` (test_the_grammar_names_each_recipe_once), so one case covers both on the
node's side.
Real models, small: SAM2.1 hiera_t at 256 (SAM 2.0 hiera_s at 512 for FSSAM, from the
shared FSSAM fixture's weights), a DINOv2 of width 32, a tiny Stable Diffusion pipeline.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from refseg_ros.engine import EngineConfig, SegmentationEngine
from refseg_ros.engine.proposer_chain import ProposerChain
from refseg_ros.eval import cli
from refseg_ros.eval.plan import TargetPrompt
from refseg_ros.eval.sources import EngineReplaySource
from refseg_ros.ros.params import PARAMETERS, Settings
from refseg_ros.runtime import recipes
from refseg_ros.runtime.registry import TargetRegistry
from refseg_ros.store import TaughtTarget
from support.shared_fixtures import fixtures_dir
from support.tiny_models import noise_reference, save_dinov2, save_tiny_pipeline

CAMERA = "/cam/image_raw"
# What both paths are given besides the mode (the evaluation's 1-of-1 gate for one-frame
# episodes is its own default; here both sides take the same value).
SHARED = {"ttga_steps": 1, "dbst_frames": 2, "dbst_lora_steps": 1, "acquisition_m": 1, "acquisition_k": 1}


def test_the_grammar_names_each_recipe_once():
    assert recipes.MODES == ("baseline", "dbst", "acquisition", "acquisition+dbst", "ttga", "ttga+dbst",
                             "ttga+acquisition", "ttga+acquisition+dbst", "fssam", "fssam+acquisition")
    assert [recipes.parse_mode(n).name for n in recipes.MODES] == list(recipes.MODES)
    assert recipes.parse_mode("cavsam") == recipes.parse_mode("ttga+dbst")
    assert recipes.parse_mode("cavsam+acquisition").name == "ttga+acquisition+dbst"
    # the node's parameter and refseg-eval take the same names
    assert PARAMETERS["reference_mode"].choices == recipes.NAMES
    run = next(a for a in cli._build_parser()._subparsers._group_actions[0].choices["run"]._actions
               if a.dest == "reference_mode")
    assert tuple(run.choices) == recipes.NAMES and run.default == PARAMETERS["reference_mode"].default
    for bad in ("fssam+dbst", "dbst+acquisition", "ttga+ttga", ""):
        with pytest.raises(ValueError, match="reference mode must be one of"):
            recipes.parse_mode(bad)
    # the node completes a mode from its models; the evaluation runs it as named
    node = Settings(reference_mode="ttga", dbst_pipeline="sd", dino_model="dino")
    assert recipes.for_node(node.reference(), node.acquisition(), node.transitions()).name == "ttga+acquisition+dbst"
    node = Settings(reference_mode="fssam")
    assert recipes.for_node(node.reference(), node.acquisition(), node.transitions()).name == "fssam+acquisition"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model folders both paths load: DINOv2, Stable Diffusion."""
    root = tmp_path_factory.mktemp("recipes")
    return {"dino": str(save_dinov2(root / "dino")), "sd": str(save_tiny_pipeline(root / "sd"))}


@pytest.fixture(scope="module")
def fssam_checkpoint(tmp_path_factory):
    """An FSSAM checkpoint file with the shared FSSAM fixture's weights."""
    folder = fixtures_dir("fssam")
    spec = importlib.util.spec_from_file_location("fssam_weights", folder / "weights.py")
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    shapes, _ = weights.load_keys_json(folder / "keys.json")
    path = tmp_path_factory.mktemp("fssam") / "fssam.pth"
    torch.save({"epoch": 1, "state_dict": weights.make_state_dict(shapes, 0), "optimizer": {}}, path)
    return str(path)


def _engine(model: str, size: int) -> SegmentationEngine:
    torch.manual_seed(0)
    engine = SegmentationEngine.from_config(EngineConfig(model=model, image_size=size, device="cpu"))
    with torch.no_grad():  # "present" on every frame, as in the other reference tests
        engine.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    return engine


@pytest.fixture(scope="module")
def engines():
    torch.set_num_threads(1)
    return {"sam2": _engine("sam2.1_hiera_t", 256), "fssam": _engine("sam2_hiera_s", 512)}


def _examples(recipe: recipes.Recipe) -> list:
    """Two examples for baseline targets, one for the others (module docstring)."""
    return [noise_reference(seed=1), noise_reference(seed=2)][: 2 if recipe.tracker == "baseline" else 1]


def _models_for(recipe: recipes.Recipe, models: dict) -> dict:
    """The model options a mode needs (the same on both paths): FSSAM's checkpoint, a
    DINOv2 unless FSSAM's own serves the prior, a diffusion pipeline."""
    return {"fssam_checkpoint": models.get("fssam", "") if recipe.tracker == "fssam" else "",
            "dino_model": models["dino"] if recipe.acquisition and recipe.tracker != "fssam" else "",
            "dbst_pipeline": models["sd"] if recipe.dbst else ""}


def _member(proposer, target) -> dict:
    """One proposer as the engine holds it: class and settings."""
    out = {"class": type(proposer).__name__, "gates_output": getattr(proposer, "gates_output", False)}
    if hasattr(proposer, "acquirer"):  # the prior
        service = proposer.service
        out.update(config=dataclasses.asdict(proposer.acquirer.config), watch=service.watch,
                   interval=service.worker.min_interval_s, input_size=service.encoder.input_size,
                   dino=service.encoder.model.config.to_dict()["hidden_size"],
                   prototypes=tuple(proposer.acquirer.prototypes.foreground.shape))
    if hasattr(proposer, "on"):  # the transition frames
        service = proposer.service
        out.update(on=tuple(proposer.on), through_tracker=proposer.encoder is not None
                   and proposer.encoder is target.tracker, encoder=type(proposer.encoder).__name__,
                   transition=dataclasses.asdict(service.generator.config),
                   keep_memory_when_absent=service.keep_memory_when_absent, max_obj_ptrs=service.max_obj_ptrs)
    return out


def composition(engine: SegmentationEngine, stream: str, target_id: int) -> dict:
    """What the engine received for a target: its tracker and proposers, with settings."""
    target = engine._stream(stream).targets[target_id]
    tracker = target.tracker
    out: dict = {"tracker": type(tracker).__name__, "pinned": len(target.memory.conditioning)}
    if hasattr(tracker, "job"):  # TTGA
        out.update(examples=len(tracker.examples), steps=tracker.job.tuner.steps,
                   keep_memory_when_absent=tracker.keep_memory_when_absent)
    if hasattr(tracker, "options"):  # FSSAM
        out.update(shots=tracker.shots, options=dataclasses.asdict(tracker.options))
    proposer = target.proposer
    members = proposer.members if isinstance(proposer, ProposerChain) else [proposer] if proposer else []
    out["proposers"] = [_member(m, target) for m in members]
    out["chain"] = isinstance(proposer, ProposerChain)
    return out


def node_path(engine: SegmentationEngine, mode: str, models: dict) -> tuple[str, dict]:
    """The node's way: its parameters, configure's `open_for_node`, the registry."""
    settings = Settings(cameras=[CAMERA], reference_mode=mode, **SHARED,
                        **_models_for(recipes.parse_mode(mode), models))
    settings.check()
    opened = recipes.open_for_node(settings.reference(), settings.acquisition(), settings.transitions(), engine)
    registry = TargetRegistry(engine, None, [CAMERA], reference=opened.setup)
    try:
        (image, mask), *views = _examples(opened.setup.recipe)
        tid = int(registry.teach(TaughtTarget(0, "mug", "reference", image=image, mask=mask)).split()[2])
        for view in views:
            registry.add_view(tid, *view)
        seen = composition(engine, CAMERA, tid)
        path = registry.statuses()[0].path or "baseline"
        registry.remove(tid)
    finally:
        registry.close()
    return path, seen


def eval_path(engine: SegmentationEngine, mode: str, models: dict) -> tuple[str, dict]:
    """The evaluation's way: refseg-eval run's arguments, the offline source."""
    options = dict(SHARED, **_models_for(recipes.parse_mode(mode), models))
    argv = ["run", "bag", "--out", "out", "--reference-mode", mode]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    source = EngineReplaySource(cli.engine_settings(cli._build_parser().parse_args(argv)), engine)
    stream = "eval-episode-0"
    engine.add_stream(stream)
    try:
        examples, engine_to_gt = {}, {}
        for image, mask in _examples(source.settings.recipe()):
            prompt = TargetPrompt(1, "mug", 0, mask, image)
            tid = source.teach_reference(engine, stream, prompt, examples, engine_to_gt)
            engine_to_gt[tid] = prompt.target_id
        seen = composition(engine, stream, tid)
    finally:
        engine.remove_stream(stream)
        source.reference_adapters().services.close()
    return source.reference_adapters().recipe.name, seen


@pytest.mark.parametrize("mode", [m for m in recipes.MODES if m != "fssam+acquisition"])
def test_node_and_evaluation_build_the_same_target(mode, models, engines, request):
    recipe = recipes.parse_mode(mode)
    if recipe.tracker == "fssam":
        models = dict(models, fssam=request.getfixturevalue("fssam_checkpoint"))
    engine = engines["fssam" if recipe.tracker == "fssam" else "sam2"]
    # The one completion the node makes with no dino_model or dbst_pipeline set: FSSAM's
    # own DINOv2 gates FSSAM targets (plain fssam is the evaluation's, for FSSAM's figures).
    node_mode = "fssam+acquisition" if mode == "fssam" else mode
    evaluated_name, evaluated = eval_path(engine, node_mode, models)
    node_name, built = node_path(engine, mode, models)
    assert node_name == evaluated_name == node_mode
    assert built == evaluated
    assert evaluated["tracker"] == {"baseline": "NoneType", "ttga": "TtgaTracker", "fssam": "FssamTracker"}[
        recipe.tracker]
    kinds = [m["class"] for m in evaluated["proposers"]]
    assert kinds == ["ReferenceAcquisition"] * (recipe.acquisition or mode == "fssam") + ["DbstProposer"] * recipe.dbst
    if recipe.dbst:
        assert evaluated["proposers"][-1]["on"] == ("taught", "lost")
        assert evaluated["proposers"][-1]["through_tracker"] == (recipe.tracker == "ttga")
    if mode == "fssam":  # as named, the evaluation's FSSAM has no gate
        name, alone = eval_path(engine, mode, models)
        assert name == "fssam" and alone["proposers"] == [] and alone["tracker"] == "FssamTracker"


@pytest.mark.parametrize("mode", recipes.NAMES)
def test_the_live_node_is_given_the_evaluated_recipe(mode, tmp_path):
    """`--mode live` starts the node with the recipe's parameters: the node then asks for
    the recipe the offline replay runs (plain fssam excepted: the node gates it)."""
    argv = ["run", "bag", "--out", "out", "--reference-mode", mode, "--dino-model", "dino", "--dbst-pipeline",
            "sd", "--fssam-checkpoint", "f.pth", "--dbst-on", "lost", "--ttga-steps", "3"]
    settings = cli.engine_settings(cli._build_parser().parse_args(argv))
    parameters = settings.reference_parameters()
    node = Settings(cameras=[CAMERA], **parameters)
    node.check()
    asked = recipes.for_node(node.reference(), node.acquisition(), node.transitions())
    offline = settings.recipe()
    assert asked == (dataclasses.replace(offline, acquisition=True) if mode == "fssam" else offline)
    assert offline.dbst_on == (("lost",) if offline.dbst else ()) and parameters["reference_mode"] == offline.name
    assert ("dbst_pipeline" in parameters) == offline.dbst and ("dino_model" in parameters) == offline.acquisition
    assert offline == recipes.parse_mode(recipes.ALIASES.get(mode, mode), ("lost",))
    assert settings.as_dict().get("reference_mode", "baseline") == offline.name  # run.json: the canonical name
