"""The diffusion-based semantic transition (refseg_ros.adapters.reference.cavsam.dbst) on a tiny
random-weight Stable Diffusion pipeline, saved to a folder and loaded through
`load_pipeline` (the real loading path; built by `support.tiny_models.save_tiny_pipeline`). Nothing is
downloaded.

The tiny pipeline: a UNet2DConditionModel with block channels (8, 16) and cross-attention
in its first down / last up block and its mid block, an AutoencoderKL with two blocks (scale
factor 2, 4 latent channels), a one-layer CLIPTextModel with a hand-written letter
vocabulary, and Stable Diffusion's DDIM scheduler settings; images are 32 x 32 pixels and
latents 4 x 16 x 16. One transition set of 9 frames costs about 4 s on one busy CPU core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft", reason="the DBST LoRA needs peft (requirements: peft)")

from support.tiny_models import save_tiny_pipeline  # noqa: E402
from refseg_ros.adapters.reference.cavsam import dbst  # noqa: E402
from refseg_ros.adapters.reference.cavsam.dbst import (  # noqa: E402
    TransitionConfig, TransitionGenerator, adain, blend_lora, interpolate_latents, load_pipeline, slerp,
    transition_alphas)
from refseg_ros.adapters.reference.cavsam.dbst_inversion import DdimSchedule, ddim_invert, ddim_sample  # noqa: E402
from refseg_ros.adapters.reference.cavsam.dbst_lora import lora_delta  # noqa: E402

# A few LoRA steps at a high rate: enough for the fits to move the tiny UNet's output.
FAST = dict(lora_steps=4, lora_lr=5e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # test/adapters/conftest.py


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("dbst") / "tiny_sd")


@pytest.fixture(scope="module")
def pipeline(folder):
    return load_pipeline(folder, "cpu")


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    reference[5:20, 10:30] = (220, 40, 40)
    target = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    target[20:40, 5:25] = (40, 40, 220)
    return reference, target


@pytest.fixture(scope="module")
def frames_seed0(pipeline, images) -> list[np.ndarray]:
    return TransitionGenerator(pipeline, TransitionConfig(seed=0, **FAST)).generate(*images)


def test_load_pipeline_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_sd21"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_pipeline(missing)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json") as info:
        load_pipeline(empty)
    assert str(empty) in str(info.value)


def test_generate_gives_n_frames_of_the_target_size(pipeline, images, frames_seed0):
    reference, target = images
    assert len(frames_seed0) == 9
    for frame in frames_seed0:
        assert frame.shape == target.shape and frame.dtype == np.uint8
    # The frames move along the transition: neighbours differ, and so do both ends.
    assert all(not np.array_equal(a, b) for a, b in zip(frames_seed0, frames_seed0[1:]))
    frames = TransitionGenerator(pipeline, TransitionConfig(frames=3, **FAST)).generate(reference, target)
    assert len(frames) == 3 and all(f.shape == (48, 40, 3) for f in frames)


def test_same_seed_same_frames_other_seed_other_frames(pipeline, images, frames_seed0):
    again = TransitionGenerator(pipeline, TransitionConfig(seed=0, **FAST)).generate(*images)
    assert all(np.array_equal(a, b) for a, b in zip(frames_seed0, again))
    other = TransitionGenerator(pipeline, TransitionConfig(seed=1, **FAST)).generate(*images)
    assert not any(np.array_equal(a, b) for a, b in zip(frames_seed0, other))


def test_reference_fit_is_cached_without_changing_frames(pipeline, images, frames_seed0):
    generator = TransitionGenerator(pipeline, TransitionConfig(seed=0, **FAST))
    first = generator.fit_reference(images[0])
    assert generator.fit_reference(images[0].copy()) is first
    assert generator.fit_reference(images[1]) is not first
    generator.clear_cache()
    frames = generator.generate(*images)  # fits the reference afresh, then reuses it
    frames_cached = generator.generate(*images)
    assert all(np.array_equal(a, b) for a, b in zip(frames_seed0, frames))
    assert all(np.array_equal(a, b) for a, b in zip(frames_seed0, frames_cached))


def test_pipeline_unet_is_unchanged_between_calls(folder, images):
    pipeline = load_pipeline(folder)
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    text = torch.randn(1, 77, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = pipeline.unet(latent, 500, encoder_hidden_states=text).sample
    TransitionGenerator(pipeline, TransitionConfig(frames=2, inversion_steps=4, **FAST)).generate(*images)
    with torch.no_grad():
        after = pipeline.unet(latent, 500, encoder_hidden_states=text).sample
    assert torch.equal(before, after)


def test_end_latents_reproduce_the_inverted_inputs(pipeline, images):
    generator = TransitionGenerator(pipeline, TransitionConfig(**FAST))
    first, second = generator.fit(images[0], dbst.REFERENCE), generator.fit(images[1], dbst.CURRENT)
    assert first.latent.shape == second.latent.shape == (1, 4, 16, 16)
    assert not torch.allclose(first.latent, second.latent)
    assert (interpolate_latents(first.latent, second.latent, 0.0) - first.latent).abs().max() < 1e-5
    assert (interpolate_latents(first.latent, second.latent, 1.0) - second.latent).abs().max() < 1e-5
    middle = interpolate_latents(first.latent, second.latent, 0.5)
    assert (middle - first.latent).abs().max() > 1e-2 and (middle - second.latent).abs().max() > 1e-2
    # AdaIN: the middle latent's per-channel spread is the mean of the two inputs' spreads
    spread = [z.double().reshape(4, -1).std(1, unbiased=False) for z in (first.latent, second.latent, middle)]
    assert torch.allclose(spread[2], 0.5 * (spread[0] + spread[1]), rtol=1e-4)
    # slerp alone is exact at its ends
    assert torch.equal(slerp(first.latent, second.latent, 0.0), first.latent)
    assert torch.equal(slerp(first.latent, second.latent, 1.0), second.latent)


def test_slerp_of_identical_latents_is_the_latent_and_keeps_the_norm():
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for alpha in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert torch.allclose(slerp(z, z.clone(), alpha), z, atol=1e-6, rtol=0)
    # Two orthogonal unit vectors: the spherical midpoint has norm 1 (a linear one 1/sqrt(2)).
    a = torch.zeros(1, 4, 2, 2)
    b = torch.zeros(1, 4, 2, 2)
    a.view(-1)[0], b.view(-1)[1] = 1.0, 1.0
    mid = slerp(a, b, 0.5)
    assert abs(float(mid.norm()) - 1.0) < 1e-6
    assert torch.allclose(mid.view(-1)[:2], torch.full((2,), 2 ** -0.5))
    with pytest.raises(ValueError):
        slerp(a, torch.zeros(1, 4, 2, 3), 0.5)


def test_adain_gives_the_interpolated_channel_statistics():
    gen = torch.Generator().manual_seed(1)
    first = torch.randn(1, 4, 8, 8, generator=gen) * 2.0 + 1.0
    second = torch.randn(1, 4, 8, 8, generator=gen) * 0.5 - 3.0
    latent = torch.randn(1, 4, 8, 8, generator=gen) * 7.0 + 5.0
    alpha = 0.3
    out = adain(latent, first, second, alpha, eps=0.0)

    def stats(x):
        flat = x.double().reshape(4, -1)
        return flat.mean(1), flat.std(1, unbiased=False)

    (m0, s0), (m1, s1), (m, s) = stats(first), stats(second), stats(out)
    assert torch.allclose(m, (1 - alpha) * m0 + alpha * m1, atol=1e-5)
    assert torch.allclose(s, (1 - alpha) * s0 + alpha * s1, atol=1e-5)
    assert (adain(first, first, second, 0.0) - first).abs().max() < 1e-5
    assert (adain(second, first, second, 1.0) - second).abs().max() < 1e-5


def test_blend_lora_ends_equal_each_lora(pipeline, images):
    generator = TransitionGenerator(pipeline, TransitionConfig(**FAST))
    ref, cur = generator.fit(images[0], dbst.REFERENCE).lora, generator.fit(images[1], dbst.CURRENT).lora
    assert len(ref) > 0 and set(ref) == set(cur)
    # both fits moved their adapter away from the shared start (B = 0), differently
    assert all(float(d.abs().max()) > 0 for d in lora_delta(ref).values())
    assert any(not torch.equal(ref[k], cur[k]) for k in ref)
    at0, at1, mid = blend_lora(ref, cur, 0.0), blend_lora(ref, cur, 1.0), blend_lora(ref, cur, 0.5)
    for name in ref:
        assert torch.equal(at0[name], ref[name]) and torch.equal(at1[name], cur[name])
        assert torch.allclose(mid[name], 0.5 * (ref[name] + cur[name]), atol=1e-7)
    untrained = TransitionGenerator(pipeline, TransitionConfig(lora_steps=0)).fit(images[0]).lora
    assert all(float(d.abs().max()) == 0 for d in lora_delta(untrained).values())
    with pytest.raises(KeyError):
        blend_lora(ref, {k: v for k, v in list(cur.items())[1:]}, 0.5)


class _ConstantUnet:
    """A stand-in UNet whose noise estimate is one fixed tensor whatever the input."""

    def __init__(self, eps: torch.Tensor):
        self.eps = eps

    def __call__(self, latent, t, encoder_hidden_states=None):
        return type("Out", (), {"sample": self.eps.expand_as(latent)})()


def test_ddim_inversion_and_sampling_are_inverse_updates(pipeline):
    schedule = DdimSchedule.from_scheduler_config(pipeline.scheduler.config, 20)
    assert len(schedule.timesteps) == 20 and schedule.timesteps[0] > schedule.timesteps[-1]
    gen = torch.Generator().manual_seed(2)
    clean = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    unet = _ConstantUnet(torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64))
    text = torch.zeros(1, 77, 16, dtype=torch.float64)
    noise = ddim_invert(unet, clean, text, schedule)
    assert (noise - clean).abs().max() > 0.5
    back = ddim_sample(unet, noise, text, schedule)
    assert (back - clean).abs().max() < 1e-9
    # The inverted latent is where DDIM's closed form puts it for a constant estimate.
    a_t, a_0 = schedule.levels[0], schedule.levels[-1]
    x0 = (clean - (1 - a_0) ** 0.5 * unet.eps) / a_0 ** 0.5
    assert torch.allclose(noise, a_t ** 0.5 * x0 + (1 - a_t) ** 0.5 * unet.eps, atol=1e-9)


def test_alphas_config_and_bad_inputs(pipeline):
    assert transition_alphas(TransitionConfig()) == pytest.approx(list(np.linspace(0.2, 0.8, 9)))
    assert transition_alphas(TransitionConfig(frames=1)) == pytest.approx([0.5])
    for bad in (dict(frames=0), dict(alpha_min=0.9, alpha_max=0.1), dict(inversion_steps=0), dict(lora_rank=0),
                dict(guidance_scale=0.5)):
        with pytest.raises(ValueError):
            TransitionConfig(**bad)
    generator = TransitionGenerator(pipeline, TransitionConfig(**FAST))
    good = np.zeros((8, 8, 3), np.uint8)
    for bad_image in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)):
        with pytest.raises(ValueError):
            generator.generate(good, bad_image)
    with pytest.raises(ValueError, match="rank"):
        TransitionGenerator(pipeline, TransitionConfig(lora_rank=8, **FAST))
