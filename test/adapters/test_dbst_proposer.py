"""DBST transition frames as conditioning memories of a reference target
(refseg_ros.adapters.reference.cavsam.dbst_proposer) in the engine.

The diffusion side is the tiny random-weight Stable Diffusion pipeline of
`support.tiny_models.save_tiny_pipeline` (32 x 32 pixels, N = 3 transition frames, a few steps:
under a second a job); SAM2 is sam2_hiera_t at 256 with random weights, its object head
set to say "present" (or "absent", to force a loss). Jobs that must still be running
while frames are stepped wait on a gate in the generator, so the order of events does
not depend on timing.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft", reason="the DBST LoRA needs peft (requirements: peft)")

from support.tiny_models import noise_reference, present_sam, save_tiny_pipeline, say_present  # noqa: E402
from refseg_ros.adapters.reference.cavsam.dbst import TransitionConfig, TransitionGenerator, load_pipeline  # noqa: E402
from refseg_ros.adapters.reference.cavsam.dbst_proposer import TransitionService  # noqa: E402
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine, TargetState  # noqa: E402

HEIGHT, WIDTH = 96, 128
N = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # test/adapters/conftest.py


@pytest.fixture(scope="module")
def sam():
    model = present_sam()
    return model


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    pipeline = load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("dbst") / "tiny_sd"), "cpu")
    return TransitionGenerator(pipeline, TransitionConfig(frames=N, inversion_steps=4, lora_steps=2, lora_lr=5e-3))


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    return noise_reference(HEIGHT, WIDTH)


def _frames(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(n)]


def _engine(sam, **config) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=256, device="cpu", **config),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


class Gated:
    """A generator whose calls wait for `open()` (one call per open); `entered` gets the
    call number as each call starts; the first `fail` calls raise after their gate."""

    def __init__(self, inner, fail: int = 0, gated: bool = True):
        self.inner, self.fail, self.gated = inner, fail, gated
        self.calls = 0
        self.entered: queue.Queue[int] = queue.Queue()
        self._gate = threading.Semaphore(0)

    def open(self) -> None:
        self._gate.release()

    def generate(self, reference, current):
        self.calls += 1
        self.entered.put(self.calls)
        if self.gated:
            assert self._gate.acquire(timeout=120), "the test never opened the gate"
        if self.calls <= self.fail:
            raise RuntimeError("diffusion failed")
        return self.inner.generate(reference, current)


def _memory(engine, tid):
    return engine._stream("cam").targets[tid].memory


def _result(step, tid):
    return next(r for r in step.targets if r.target_id == tid)


def _gap(step, a, b) -> float:
    return float((_result(step, a).low_res_logits - _result(step, b).low_res_logits).abs().max())


def _seeded(step) -> list[str]:
    return [e for e in step.events if "seeded" in e]


def test_jobs_pin_transition_memories_before_the_reference_while_frames_flow(sam, generator, reference):
    image, mask = reference
    engine = _engine(sam, occlusion_patience=1)
    tid = engine.add_target("cam", MaskPrompt(mask), image=image, label="dbst")
    twin = engine.add_target("cam", MaskPrompt(mask), image=image, label="plain")  # the same target without DBST
    gated = Gated(generator)
    frames = iter(_frames(16))
    with TransitionService(gated, sam, engine.preprocess, autocast=None) as service:
        proposer = service.proposer(image, mask)
        engine.set_proposer("cam", tid, proposer)
        memory = _memory(engine, tid)
        assert list(memory.conditioning) == [-1]

        # taught: the first frame starts a job; frames keep flowing while it is held
        first = engine.step("cam", next(frames))
        assert gated.entered.get(timeout=30) == 1
        for _ in range(3):
            step = engine.step("cam", next(frames))
            assert not _seeded(step) and _result(step, tid).state == TargetState.TRACKED
            assert _gap(step, tid, twin) < 1e-5  # nothing pinned yet: the twin's output
        assert proposer.running and service.worker.finished(proposer.key) == 0
        assert list(memory.conditioning) == [-1] and not _seeded(first)

        gated.open()
        assert proposer.wait(timeout=60)
        step = engine.step("cam", next(frames))
        assert _seeded(step) and f"seeded: {N} transition frames from the reference to frame 0 (taught" \
            in _seeded(step)[0]
        job = proposer.last_job
        assert job.trigger == "taught" and job.index == 0 and len(job.frames) == N and job.video.kept == [1, 2, 3]
        assert sorted(memory.conditioning) == [-4, -3, -2, -1]  # N entries just below the reference
        assert [e.frame_index for e in job.entries] == [1, 2, 3]  # t_1 .. t_N of the pseudo video
        for k, index in enumerate(range(-N - 1, -1)):  # in order: t_1 oldest
            pinned = memory.conditioning[index]
            assert pinned.maskmem_features is job.entries[k].maskmem_features
            assert pinned.obj_ptr is job.entries[k].obj_ptr
        assert not torch.equal(job.entries[0].maskmem_features, job.entries[-1].maskmem_features)
        assert _gap(step, tid, twin) > 1e-3  # the memories are attended to
        assert _gap(engine.step("cam", next(frames)), tid, twin) > 1e-3
        first_entries = [e.maskmem_features for e in job.entries]

        # lost: patience 1, two absent frames; the frame after starts a second job
        say_present(sam, present=False)
        try:
            states = [_result(engine.step("cam", next(frames)), tid).state for _ in range(2)]
        finally:
            say_present(sam, present=True)
        assert states == [TargetState.OCCLUDED, TargetState.LOST]
        engine.step("cam", next(frames))
        assert gated.entered.get(timeout=30) == 2 and proposer.jobs_started == 2
        assert not _seeded(engine.step("cam", next(frames)))  # still held: no seed, frames flow
        gated.open()
        assert proposer.wait(timeout=60)
        step = engine.step("cam", next(frames))
        assert _seeded(step) and "(lost;" in _seeded(step)[0]
        assert proposer.last_job.trigger == "lost"
        assert sorted(memory.conditioning) == [-4, -3, -2, -1]  # replaced: still 1 + N
        for k, index in enumerate(range(-N - 1, -1)):
            assert memory.conditioning[index].maskmem_features is proposer.last_job.entries[k].maskmem_features
            assert memory.conditioning[index].maskmem_features is not first_entries[k]
        assert gated.calls == 2 and proposer.jobs_started == 2  # no job without a trigger


def test_memories_are_what_the_engine_computes_on_the_frames_as_a_stream(sam, generator, reference):
    image, mask = reference
    engine = _engine(sam)
    tid = engine.add_target("cam", MaskPrompt(mask), image=image)
    with TransitionService(generator, sam, engine.preprocess, autocast=None) as service:
        proposer = service.proposer(image, mask, on=("taught",))
        engine.set_proposer("cam", tid, proposer)
        # the engine steps on while the job runs on the same model (no gate here)
        end = time.monotonic() + 120
        for frame in _frames(1000, seed=5):
            assert time.monotonic() < end, "no seed"
            if _seeded(engine.step("cam", frame)):
                break
        job = proposer.last_job
    assert len(job.entries) == N and len(job.frames) == N
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in job.frames)

    replay = _engine(sam)  # the reference as a target of a fresh stream, the transitions as its frames
    other = replay.add_target("cam", MaskPrompt(mask), image=image)
    memory = _memory(replay, other)
    reference_entry = memory.conditioning[-1]
    assert torch.allclose(job.video.reference.maskmem_features.float(), reference_entry.maskmem_features.float(),
                          atol=1e-5, rtol=0)
    for k, frame in enumerate(job.frames):
        replay.step("cam", frame)
        tracked = memory.recent[-1]
        assert tracked.frame_index == k
        ours = job.entries[k]
        assert ours.maskmem_features.shape == tracked.maskmem_features.shape
        assert (ours.maskmem_features.float() - tracked.maskmem_features.float()).abs().max() <= 1e-5
        assert (ours.maskmem_pos_enc.float() - tracked.maskmem_pos_enc.float()).abs().max() <= 1e-5
        assert (ours.obj_ptr.float() - tracked.obj_ptr.float()).abs().max() <= 1e-5
    # the transition frames are not the reference: each memory differs from the next
    assert not torch.equal(job.entries[0].obj_ptr, job.entries[1].obj_ptr)


def test_removing_the_target_cancels_its_job(sam, generator, reference):
    image, mask = reference
    engine = _engine(sam)
    tid = engine.add_target("cam", MaskPrompt(mask), image=image)
    gated = Gated(generator)
    service = TransitionService(gated, sam, engine.preprocess, autocast=None)
    try:
        proposer = service.proposer(image, mask, on=("taught",))
        engine.set_proposer("cam", tid, proposer)
        engine.step("cam", _frames(1)[0])
        assert gated.entered.get(timeout=30) == 1
        engine.remove_target("cam", tid)
        gated.open()
        end = time.monotonic() + 60
        while service.cancelled == 0:
            assert time.monotonic() < end, "the job was not cancelled"
            time.sleep(0.01)
        assert proposer.wait(timeout=60)
        assert service.worker.poll(proposer.key) is None and service.worker.finished(proposer.key) == 0
        assert proposer.key not in service._contexts and proposer.last_job is None
    finally:
        assert service.close(timeout=60)


def test_a_failing_generator_gives_no_seed_and_the_worker_goes_on(sam, generator, reference):
    image, mask = reference
    engine = _engine(sam)
    first = engine.add_target("cam", MaskPrompt(mask), image=image)
    failing = Gated(generator, fail=1, gated=False)
    with TransitionService(failing, sam, engine.preprocess, autocast=None) as service:
        broken = service.proposer(image, mask)
        engine.set_proposer("cam", first, broken)
        frames = iter(_frames(6, seed=7))
        engine.step("cam", next(frames))
        assert broken.wait(timeout=60)
        step = engine.step("cam", next(frames))
        assert not _seeded(step)
        assert isinstance(broken.last_error, RuntimeError) and broken.last_job is None and not broken.running
        assert service.worker.errors(broken.key) == 1
        assert list(_memory(engine, first).conditioning) == [-1]
        # the same worker serves the next target
        second = engine.add_target("cam", MaskPrompt(mask), image=image)
        working = service.proposer(image, mask)
        engine.set_proposer("cam", second, working)
        engine.step("cam", next(frames))
        assert working.wait(timeout=60)
        step = engine.step("cam", next(frames))
        assert len(_seeded(step)) == 1 and f"target {second}" in _seeded(step)[0]
        assert len(_memory(engine, second).conditioning) == 1 + N
        assert list(_memory(engine, first).conditioning) == [-1]
        assert broken.jobs_started == 1 and failing.calls == 2  # a failed job is not retried on its own


def test_synchronous_mode_seeds_on_the_frame_the_job_started_on(sam, generator, reference):
    image, mask = reference
    engine = _engine(sam)
    tid = engine.add_target("cam", MaskPrompt(mask), image=image)
    with TransitionService(generator, sam, engine.preprocess, autocast=None, synchronous=True) as service:
        proposer = service.proposer(image, mask, on=("taught",))
        engine.set_proposer("cam", tid, proposer)
        step = engine.step("cam", _frames(1, seed=9)[0])
        assert len(_seeded(step)) == 1 and proposer.last_job.index == 0
        assert sorted(_memory(engine, tid).conditioning) == [-4, -3, -2, -1]


def test_bad_references_and_triggers_are_refused(sam, generator, reference):
    image, mask = reference
    with TransitionService(generator, sam, autocast=None) as service:
        with pytest.raises(ValueError, match="trigger"):
            service.proposer(image, mask, on=("taught", "occluded"))
        with pytest.raises(ValueError, match="does not match"):
            service.proposer(image, mask[:-1])
        with pytest.raises(ValueError, match="empty"):
            service.proposer(image, np.zeros_like(mask))
        with pytest.raises(ValueError):
            service.proposer(image.astype(np.float32), mask)
        assert service.proposer(image, mask, on=()).gates_output is False
