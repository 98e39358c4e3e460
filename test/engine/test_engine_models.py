"""Every published SAM2 / SAM2.1 configuration builds, at another image size too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine
from refseg_ros.engine.model import MODEL_CONFIGS, build_model, config_path
from support.slow import slow_parity

# Parameter counts of the published checkpoints (millions).
PARAMS_M = {"t": 38.9, "s": 46.0, "b+": 80.8, "l": 224.4}


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_published_configs_build_at_a_smaller_image_size(name):
    model = build_model(name, image_size=256)
    assert model.image_size == 256
    assert model.sam_prompt_encoder.image_embedding_size == (16, 16)
    size = name.rsplit("_", 1)[1]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - PARAMS_M[size]) < 0.5, f"{name}: {params:.1f}M parameters"


def test_unknown_model_and_bad_image_size_are_refused():
    with pytest.raises(ValueError, match="unknown model 'sam3'"):
        config_path("sam3")
    with pytest.raises(ValueError, match="multiple of 64"):
        build_model("sam2.1_hiera_t", image_size=100)


def test_bf16_autocast_runs_through_the_same_api():
    engine = SegmentationEngine.from_config(EngineConfig(image_size=128, precision="bf16", device="cpu"))
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[20:50, 30:70] = True
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(mask))
    for _ in range(3):
        (result,) = engine.step("cam", frame).targets
        assert result.mask.shape == (96, 128)
        assert np.isfinite(result.score)
    memory = next(iter(engine._streams["cam"].targets.values())).memory
    assert all(e.maskmem_features.dtype == torch.bfloat16 for e in memory.recent)


@slow_parity
@pytest.mark.timeout(900)
def test_compiled_engine_matches_eager():
    """config.compile goes through torch.compile (inductor, CPU here) and changes no result."""

    def run(compile_: bool) -> list[torch.Tensor]:
        engine = SegmentationEngine.from_config(EngineConfig(image_size=128, device="cpu", compile=compile_))
        rng = np.random.default_rng(1)
        frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
        mask = np.zeros((96, 128), bool)
        mask[20:50, 30:70] = True
        engine.add_stream("cam")
        engine.add_target("cam", MaskPrompt(mask))
        engine.add_target("cam", MaskPrompt(~mask))
        return [r.low_res_logits for frame in frames for r in engine.step("cam", frame).targets]

    from torch._dynamo.utils import counters

    eager = run(False)
    counters.clear()
    compiled = run(True)
    assert counters["stats"]["unique_graphs"] >= 4, "the heavy modules were not compiled"
    assert len(compiled) == len(eager) == 8
    worst = max(float((a - b).abs().max()) for a, b in zip(eager, compiled))
    assert worst < 1e-4, worst
