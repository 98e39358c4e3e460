"""CAV-SAM in full on one reference target: TTGA (a per-target tuned neck,
refseg_ros.adapters.reference.cavsam.ttga) and DBST (diffusion transition frames as
conditioning memories, refseg_ros.adapters.reference.cavsam.dbst_proposer), the transition
frames encoded through the target's own neck.

sam2_hiera_t at 256 with random weights, its object head set to say "present"; a neck
tuned by one TTGA step on one view; the tiny Stable Diffusion pipeline (32 x 32, N = 3
transition frames). Expected memories come from the engine itself: the transition frames
stepped as a stream by a TTGA target with the same neck.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft", reason="the DBST LoRA needs peft (requirements: peft)")

from support.tiny_models import noise_reference, present_sam, save_tiny_pipeline  # noqa: E402
from refseg_ros.adapters.reference.cavsam.dbst import TransitionConfig, TransitionGenerator, load_pipeline  # noqa: E402
from refseg_ros.adapters.reference.cavsam.dbst_proposer import TransitionService  # noqa: E402
from refseg_ros.adapters.reference.cavsam.ttga import TtgaTracker, TtgaTuner  # noqa: E402
from refseg_ros.engine import EngineConfig, SegmentationEngine  # noqa: E402

HEIGHT, WIDTH = 96, 128
N = 3


@pytest.fixture(scope="module")
def sam():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on two busy cores make each tiny UNet pass far slower
    model = present_sam()
    yield model
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    return noise_reference(HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def service(sam, tmp_path_factory):
    pipeline = load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("cavsam") / "tiny_sd"), "cpu")
    generator = TransitionGenerator(pipeline, TransitionConfig(frames=N, inversion_steps=4, lora_steps=2,
                                                               lora_lr=5e-3))
    with TransitionService(generator, sam, autocast=None, synchronous=True) as service:
        yield service


@pytest.fixture(scope="module")
def tuned_neck(sam, reference):
    return TtgaTuner(sam, [reference], steps=1, views=1, seed=0, autocast=None).run().neck


def _engine(sam) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=256, device="cpu"),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


def _frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(n)]


def _gap(a, b) -> float:
    return max(float((a.maskmem_features.float() - b.maskmem_features.float()).abs().max()),
               float((a.maskmem_pos_enc.float() - b.maskmem_pos_enc.float()).abs().max()),
               float((a.obj_ptr.float() - b.obj_ptr.float()).abs().max()))


def _replayed(sam, reference, neck, frames):
    """The memories a TTGA target with `neck` writes when `frames` are its stream."""
    engine = _engine(sam)
    tid = engine.add_tracked_target("cam", TtgaTracker(sam, [reference], neck=neck, preprocess=engine.preprocess))
    memory = engine._stream("cam").targets[tid].memory
    out = []
    for k, frame in enumerate(frames):
        engine.step("cam", frame)
        assert memory.recent[-1].frame_index == k
        out.append(memory.recent[-1])
    return out


def test_a_ttga_target_pins_transition_memories_encoded_through_its_tuned_neck(sam, reference, service, tuned_neck):
    image, mask = reference
    engine = _engine(sam)
    tracker = TtgaTracker(sam, [reference], preprocess=engine.preprocess)  # untuned until the swap below
    tid = engine.add_tracked_target("cam", tracker, label="cavsam")
    proposer = service.proposer(image, mask, on=("taught",), encoder=tracker)
    engine.set_proposer("cam", tid, proposer)
    tracker.swap_neck(tuned_neck)  # TTGA's job finished: in use from the next frame
    frames = _frames(2, seed=3)
    step = engine.step("cam", frames[0])
    assert tracker.tuned and tracker.swaps == 1
    memory = engine._stream("cam").targets[tid].memory
    job = proposer.last_job
    assert job is not None and job.trigger == "taught" and len(job.entries) == N
    assert sorted(memory.conditioning) == [-4, -3, -2, -1]  # N transition entries below the reference
    for k, index in enumerate((-4, -3, -2)):
        assert memory.conditioning[index].maskmem_features is job.entries[k].maskmem_features
    assert any(f"seeded: {N} transition frames" in e for e in step.events)

    ours = _replayed(sam, reference, tuned_neck, job.frames)  # the target's own neck, as a stream
    for k in range(N):
        assert _gap(job.entries[k], ours[k]) <= 1e-5, k
    assert _gap(job.video.reference, memory.conditioning[-1]) <= 1e-5  # the reference, as TTGA pinned it
    shared = service.propagate(service.reference_entry(image, mask), job.frames)  # the shared neck
    assert min(_gap(job.entries[k], shared.entries[k]) for k in range(N)) > 1e-3  # a tuned neck shows

    after = engine.step("cam", frames[1])  # the target attends to them; no new job without a trigger
    assert proposer.jobs_started == 1 and not any("seeded" in e for e in after.events)


def test_transition_memories_are_rebuilt_when_a_tuned_neck_is_swapped_in(sam, reference, service, tuned_neck):
    image, mask = reference
    engine = _engine(sam)
    tracker = TtgaTracker(sam, [reference], preprocess=engine.preprocess)
    tid = engine.add_tracked_target("cam", tracker)
    proposer = service.proposer(image, mask, on=("taught",), encoder=tracker)
    engine.set_proposer("cam", tid, proposer)
    frames = _frames(3, seed=4)
    engine.step("cam", frames[0])  # untuned: the shared neck's memories, as TTGA's own before tuning
    first = proposer.last_job
    shared = service.propagate(service.reference_entry(image, mask), first.frames)
    assert all(_gap(first.entries[k], shared.entries[k]) <= 1e-5 for k in range(N))

    tracker.swap_neck(tuned_neck)
    step = engine.step("cam", frames[1])  # the swap happens in this frame's pass; the job follows it
    second = proposer.last_job
    assert proposer.jobs_started == 2 and second is not first and second.trigger == "tuned"
    assert any("(tuned;" in e for e in step.events)
    memory = engine._stream("cam").targets[tid].memory
    assert sorted(memory.conditioning) == [-4, -3, -2, -1]  # replaced, not added
    assert memory.conditioning[-4].maskmem_features is second.entries[0].maskmem_features
    ours = _replayed(sam, reference, tuned_neck, second.frames)
    assert all(_gap(second.entries[k], ours[k]) <= 1e-5 for k in range(N))
    engine.step("cam", frames[2])
    assert proposer.jobs_started == 2
