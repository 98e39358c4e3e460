"""The plain image-encoder pass on ONNX Runtime and OpenVINO (CPU) against torch: features,
tracked masks over a clip, the build cache (reuse; stale, corrupt and interrupted entries
rebuilt; superseded and unusable entries pruned), the parity gate (a wrong build is
refused), and the refusal of a backend that cannot run here (with and without the fallback).

Tolerances (stated once, here and in docs/ENGINE.md): every feature tensor within 1e-4
of the largest |value| of torch's (the build gate's fp32 bound; measured about 1e-6), and
the tracked masks over the clip at most MASK_PIXELS pixels apart in all (bench/encoder_backends.py
measured 0 at 512 and 1024).
Real models (hiera_t at 128, random weights), real runtimes; each module builds each
backend once into its own cache.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from support.clips import moving_shapes
from refseg_ros.engine import (EncoderBackendUnavailableError, EncoderParityError, EngineConfig, MaskPrompt,
                               SegmentationEngine)
from refseg_ros.engine import encoders
from refseg_ros.engine.encoders import exported, openvino_backend
from refseg_ros.engine.features import encode_image, encode_images

SIZE = 128
FRAMES = 8
TOL = encoders.TOLERANCES["fp32"]
MASK_PIXELS = 20  # of 3 targets x 8 frames x 128 x 128 = 393216 pixels
CPU_BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A weights cache of this module's own ($REFSEG_WEIGHTS), so builds start from nothing."""
    path = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFSEG_WEIGHTS", str(path))
        yield path


def _engine(backend: str, **extra) -> SegmentationEngine:
    return SegmentationEngine.from_config(EngineConfig(image_size=SIZE, device="cpu", seed=5,
                                                       encoder_backend=backend, **extra))


@pytest.fixture(scope="module")
def engines(cache):
    return {backend: _engine(backend) for backend in ("torch",) + CPU_BACKENDS}


def _images(count: int) -> torch.Tensor:
    frames, _ = moving_shapes(count, SIZE, seed=4)
    from refseg_ros.engine.frames import FramePreprocessor

    prep = FramePreprocessor(SIZE, torch.device("cpu"))
    return torch.cat([prep(f) for f in frames])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_features_match_torch_on_a_batch(engines, backend):
    """Three frames in one call (the export's batch axis is dynamic; the build checked
    two): every level, positional encoding and trunk map within the fp32 bound."""
    images = _images(3)
    with torch.inference_mode():
        reference = engines["torch"].encoder.encode(images)
        ours = engines[backend].encoder.encode(images)
    assert engines[backend].encoder.name == backend
    assert len(ours) == 3
    for ref, got in zip(reference, ours):
        assert got.feat_sizes == ref.feat_sizes
        for a, b in zip(ref.vision_feats + ref.vision_pos + ref.trunk, got.vision_feats + got.vision_pos + got.trunk):
            assert a.shape == b.shape
            assert _relative(a, b) <= TOL


def test_batched_torch_pass_equals_one_image_at_a_time(engines):
    model = engines["torch"].model
    images = _images(2)
    with torch.inference_mode():
        batch = encode_images(model, images)
        single = [encode_image(model, images[i:i + 1]) for i in range(2)]
    for a, b in zip(batch, single):
        for x, y in zip(a.vision_feats + a.trunk, b.vision_feats + b.trunk):
            assert torch.allclose(x, y, atol=1e-5, rtol=1e-5)


def _track(engine: SegmentationEngine, frames, masks) -> list[np.ndarray]:
    engine.reset()
    engine.add_stream("cam")
    for oid in (1, 2, 3):
        engine.add_target("cam", MaskPrompt(masks[0][oid]), target_id=oid)
    return [np.stack([t.mask for t in engine.step("cam", frame).targets]) for frame in frames]


@pytest.fixture(scope="module")
def clip():
    return moving_shapes(FRAMES, SIZE, seed=3)


@pytest.fixture(scope="module")
def torch_masks(engines, clip):
    return _track(engines["torch"], *clip)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_tracked_masks_match_torch_over_the_clip(engines, clip, torch_masks, backend):
    reference = torch_masks
    ours = _track(engines[backend], *clip)
    differing = sum(int((a != b).sum()) for a, b in zip(reference, ours))
    assert differing <= MASK_PIXELS
    assert sum(int(m.sum()) for m in reference) > 0  # something was tracked


def _build(model, backend="onnxruntime", **kwargs):
    lines: list[str] = []
    encoder = encoders.build_encoder(model, "sam2.1_hiera_t", backend, progress=lines.append, **kwargs)
    return encoder, lines


def _entry(cache, backend="onnxruntime"):
    found = [p for p in (cache / "encoders").iterdir() if f"-{backend}-" in p.name]
    assert len(found) == 1, found
    return found[0]


def test_cache_is_reused_and_a_stale_or_corrupt_entry_is_rebuilt(engines, cache):
    """(An interrupted build, no manifest, is "not built": test_other_weights_get_their_own_entry.)"""
    model = engines["torch"].model
    _, lines = _build(model)
    assert lines == []  # the module's engine built it: used as it is
    entry = _entry(cache)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["parity"]["accepted"] is True and manifest["parity"]["ratio"] <= TOL

    onnx = entry / "encoder.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    onnx.write_bytes(bytes(data))
    encoder, lines = _build(model)
    assert "corrupt" in lines[0] and "accepted" in lines[-1]
    assert onnx.read_bytes() != bytes(data)

    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["key"]["versions"]["onnxruntime"] = "0.0.1"  # built by another version
    (entry / "manifest.json").write_text(json.dumps(manifest))
    _, lines = _build(model)
    assert "stale" in lines[0] and "accepted" in lines[-1]
    assert _entry(cache) == entry


def test_other_weights_get_their_own_entry(engines, cache):
    model = engines["torch"].model
    before = encoders.weights_digest(model)
    with torch.no_grad():
        model.image_encoder.neck.convs[0].conv.bias.add_(1.0)
    try:
        assert encoders.weights_digest(model) != before
        _, lines = _build(model)
        assert "not built" in lines[0] and "accepted" in lines[-1]
        assert len([p for p in (cache / "encoders").iterdir() if "-onnxruntime-" in p.name]) == 2
    finally:
        with torch.no_grad():
            model.image_encoder.neck.convs[0].conv.bias.sub_(1.0)


def test_parity_gate_refuses_a_wrong_build(engines, cache, monkeypatch):
    """An export that drops conv_s0 (a plausible converter mistake) loads and runs, and
    is refused; nothing is accepted into the cache."""
    model = engines["torch"].model
    original = exported.PlainPass.forward

    def without_conv_s0(self, images):
        outputs = list(original(self, images))
        outputs[0] = outputs[0] * 0.9
        return tuple(outputs)

    monkeypatch.setattr(exported.PlainPass, "forward", without_conv_s0)
    with torch.no_grad():
        model.image_encoder.neck.convs[0].conv.bias.add_(2.0)  # weights with no entry yet
    try:
        with pytest.raises(EncoderParityError, match="level0"):
            _build(model)
        assert not any((p / "manifest.json").exists() and "-onnxruntime-" in p.name
                       and json.loads((p / "manifest.json").read_text())["key"]["weights"]
                       == encoders.weights_digest(model) for p in (cache / "encoders").iterdir())
    finally:
        with torch.no_grad():
            model.image_encoder.neck.convs[0].conv.bias.sub_(2.0)


def test_openvino_in_its_default_precision_fails_the_fp32_gate(engines, cache, monkeypatch):
    """On a CPU with bf16 units OpenVINO runs an fp32 model in bf16 unless told: the gate
    catches it (this is why the backend always states its precision)."""
    import openvino

    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16 units: OpenVINO's default is fp32 here")
    model = engines["torch"].model
    monkeypatch.setitem(openvino_backend.HINTS, "fp32", "bf16")
    with torch.no_grad():
        model.image_encoder.neck.convs[1].conv.bias.add_(1.0)
    try:
        with pytest.raises(EncoderParityError, match="bound 0.0001 for fp32"):
            _build(model, backend="openvino")
    finally:
        with torch.no_grad():
            model.image_encoder.neck.convs[1].conv.bias.sub_(1.0)


def test_tensorrt_is_refused_here_with_its_reason(cache):
    with pytest.raises(EncoderBackendUnavailableError, match="TensorrtExecutionProvider"):
        _engine("tensorrt")


def test_fallback_runs_on_torch_and_says_why(cache):
    engine = _engine("tensorrt", encoder_backend_fallback=True)
    assert engine.encoder.name == "torch"
    assert "tensorrt refused" in engine.encoder_note and "TensorrtExecutionProvider" in engine.encoder_note


def test_a_runtime_that_is_not_installed_is_refused(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as without the package
    with pytest.raises(EncoderBackendUnavailableError, match="onnxruntime is not installed"):
        _engine("onnxruntime")


def test_bad_choices_are_value_errors(engines):
    model = engines["torch"].model
    with pytest.raises(ValueError, match="encoder_backend must be one of"):
        encoders.build_encoder(model, "sam2.1_hiera_t", "coreml")
    with pytest.raises(ValueError, match="torch follows"):
        encoders.build_encoder(model, "sam2.1_hiera_t", "torch", "bf16")
    with pytest.raises(EncoderBackendUnavailableError, match="runs fp32"):
        encoders.build_encoder(model, "sam2.1_hiera_t", "onnxruntime", "fp16")


def test_parameter_choices_are_the_engines():
    from refseg_ros.runtime.parameters import ENCODER_BACKENDS, ENCODER_PRECISIONS, PARAMETERS

    assert ENCODER_BACKENDS == encoders.BACKENDS and ENCODER_PRECISIONS == encoders.PRECISIONS
    assert PARAMETERS["encoder_backend"].default == EngineConfig().encoder_backend
    assert PARAMETERS["encoder_precision"].default == EngineConfig().encoder_precision
    assert PARAMETERS["encoder_backend_fallback"].default == EngineConfig().encoder_backend_fallback


def test_refseg_weights_builds_an_entry_ahead(engines, cache, capsys):
    """`refseg-weights --build-engine` makes (or finds) the entry an engine of the same
    options uses; a backend that cannot run here exits 1 with the reason."""
    from refseg_ros.engine.weights import main

    options = ["--image-size", str(SIZE), "--checkpoint", "none", "--seed", "5", "--dir", str(cache)]
    assert main(["--build-engine", "onnxruntime", *options]) == 0
    out, err = capsys.readouterr()
    assert "onnxruntime" in out and "ready" in out
    assert "building" not in err  # the module's engine built that very entry
    assert main(["--build-engine", "tensorrt", *options]) == 1
    assert "TensorrtExecutionProvider" in capsys.readouterr().err


def _fake_entry(cache, like: Path, name: str, **key_changes) -> Path:
    """A copy of entry `like`'s manifest in a new folder, its key changed (no files: the
    pruning reads manifests only)."""
    manifest = json.loads((like / "manifest.json").read_text())
    manifest["key"].update(key_changes)
    folder = cache / "encoders" / name
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_stale_builds_are_pruned_and_what_can_be_used_is_kept(engines, cache, capsys):
    """A build removes the entry it supersedes (same model, size, weights; other versions)
    and nothing else; `refseg-weights --prune-engines` removes every entry this install
    cannot use: other versions, an older format, an unaccepted build, a build cut short an
    hour ago; it keeps other weights' entries and a build that may be under way."""
    from refseg_ros.engine.weights import main

    model = engines["torch"].model
    _build(model)  # (the tests before may leave the weights a rounding away from the module's first build)
    ours = next(p for p in (cache / "encoders").iterdir()  # (a refused build leaves a folder without manifest)
                if "-onnxruntime-" in p.name and (p / "manifest.json").exists()
                and json.loads((p / "manifest.json").read_text())["key"]["weights"] == encoders.weights_digest(model))
    prefix = ours.name.rpartition("-")[0]
    old_version = _fake_entry(cache, ours, f"{prefix}-0000000000a1", versions={"onnxruntime": "0.0.1", "torch": "0"})
    other_weights = _fake_entry(cache, ours, f"{prefix}-0000000000a2", weights="0" * 64)
    other_weights_old = _fake_entry(cache, ours, f"{prefix}-0000000000a3", weights="0" * 64,
                                    versions={"onnxruntime": "0.0.1", "torch": "0"})

    (ours / "manifest.json").write_text("{}")  # unreadable as an entry: rebuilt
    _, lines = _build(model)
    assert "accepted" in lines[-2] and "removed 1 entry" in lines[-1] and old_version.name in lines[-1]
    assert not old_version.exists()
    assert other_weights.exists() and other_weights_old.exists() and (ours / "manifest.json").exists()

    older_format = _fake_entry(cache, ours, f"{prefix}-0000000000a4", format=0)
    unaccepted = _fake_entry(cache, ours, f"{prefix}-0000000000a5")
    manifest = json.loads((unaccepted / "manifest.json").read_text())
    manifest["parity"]["accepted"] = False
    (unaccepted / "manifest.json").write_text(json.dumps(manifest))
    cut_short, under_way = cache / "encoders" / f"{prefix}-0000000000a6", cache / "encoders" / f"{prefix}-0000000000a7"
    for folder in (cut_short, under_way):
        folder.mkdir()
        (folder / "encoder.onnx").write_bytes(b"\0" * 1000)
    hour_ago = time.time() - 3700
    os.utime(cut_short, (hour_ago, hour_ago))
    stale = {other_weights_old, older_format, unaccepted, cut_short}

    assert main(["--prune-engines", "--dry-run", "--dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert {line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith("would remove")} \
        == {p.name for p in stale}
    assert all(p.exists() for p in stale)
    assert main(["--prune-engines", "--dir", str(cache)]) == 0
    assert "4 stale build(s)" in capsys.readouterr().out
    assert not any(p.exists() for p in stale)
    assert other_weights.exists() and under_way.exists() and (ours / "manifest.json").exists()
    assert _build(model)[1] == []  # our entry is still used as it is
    for folder in (other_weights, under_way):
        shutil.rmtree(folder)
