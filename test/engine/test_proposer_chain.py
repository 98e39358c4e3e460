"""Several proposers on one target (refseg_ros.engine.proposer_chain.ProposerChain).

The merge rules with small proposers written here against the seam (`seams.Proposer`),
then a reference target with both real proposers in the engine: the DINOv2 prior
(acquisition, a tiny random DINOv2) and the diffusion transition frames (DBST, the tiny
Stable Diffusion pipeline, N = 3). SAM2 is sam2_hiera_t at 256 with random weights, its
object head set to say "present".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.engine import EngineConfig, MaskPrompt, PointsPrompt, SegmentationEngine, TargetState
from refseg_ros.engine.memory import MemoryEntry
from refseg_ros.engine.proposer_chain import ProposerChain
from refseg_ros.engine.seams import Seed
from support.tiny_models import present_sam, save_dinov2, save_tiny_pipeline

HEIGHT, WIDTH = 96, 128
N = 3


class NotHere:
    """A non-Seed answer (as `seams.Absent`): the target is not in view."""

    def __init__(self, reason: str = ""):
        self.reason = reason


class Scripted:
    """A proposer that answers from a script, one answer a frame (None when it runs out)."""

    def __init__(self, *answers, gates: bool = False, fail_on_close: bool = False):
        self.answers = list(answers)
        self.gates_output = gates
        self.fail_on_close = fail_on_close
        self.asked: list[int] = []
        self.closed = False

    def propose(self, model, features, frame, index, state, box):
        self.asked.append(index)
        return self.answers.pop(0) if self.answers else None

    def close(self) -> None:
        self.closed = True
        if self.fail_on_close:
            raise RuntimeError("close failed")


def _entries(tag: float, n: int = 2) -> list[MemoryEntry]:
    return [MemoryEntry(k, torch.full((1, 4), tag), torch.full((1, 2, 2, 2), tag), torch.zeros(1, 2, 2, 2))
            for k in range(n)]


def _click(x: float) -> PointsPrompt:
    return PointsPrompt(np.array([[x, 1.0]], np.float32), np.array([1], np.int64))


def _ask(chain: ProposerChain, index: int, state: TargetState = TargetState.TRACKED):
    return chain.propose(None, None, np.zeros((4, 4, 3), np.uint8), index, state, None)


def test_prompts_memories_and_reasons_merge_in_member_order():
    a_memories, c_memories = _entries(1.0), _entries(3.0, 1)
    a = Scripted(Seed(memories=a_memories, reason="bridge"))
    b = Scripted(Seed(_click(5.0), "found"))
    c = Scripted(Seed(_click(9.0), "found too", memories=c_memories), Seed(_click(7.0), "late"))
    chain = ProposerChain([a, b, c])
    assert chain.gates_output is False
    seed = _ask(chain, 0)
    assert isinstance(seed, Seed) and float(seed.prompt.points[0, 0]) == 5.0  # the first prompt given
    assert seed.memories == a_memories + c_memories  # everyone's memories, member order
    assert seed.reason == "bridge; found; found too"
    # the second frame: c's prompt alone (its dropped prompt's reason went with it before)
    seed = _ask(chain, 1)
    assert float(seed.prompt.points[0, 0]) == 7.0 and seed.memories == [] and seed.reason == "late"
    assert _ask(chain, 2) is None  # nothing said: nothing to return
    assert a.asked == b.asked == c.asked == [0, 1, 2]  # every member, every frame


def test_a_new_set_of_memories_replaces_its_own_members_only():
    first, second, third = _entries(1.0), _entries(2.0), _entries(3.0)
    a = Scripted(Seed(memories=first, reason="a1"), None, Seed(memories=third, reason="a2"))
    b = Scripted(None, Seed(memories=second, reason="b1"))
    chain = ProposerChain([a, b])
    assert _ask(chain, 0).memories == first
    assert _ask(chain, 1).memories == first + second  # the engine replaces the set: a's stays in it
    assert _ask(chain, 2).memories == third + second


def test_an_absence_wins_over_memories_but_not_over_a_prompt():
    memories = _entries(1.0)
    bridge = Scripted(Seed(memories=memories, reason="bridge"), None, None)
    watcher = Scripted(NotHere("gone"), NotHere("still gone"), None, NotHere("gone again"))
    finder = Scripted(None, None, None, Seed(_click(4.0), "found"))
    chain = ProposerChain([watcher, bridge, finder])
    verdict = _ask(chain, 0)
    assert isinstance(verdict, NotHere) and verdict.reason == "gone"  # returned as it is
    assert _ask(chain, 1).reason == "still gone"
    seed = _ask(chain, 2)  # nobody objects: the memories given under the absence come now
    assert seed.memories == memories and seed.reason == "bridge" and seed.prompt is None
    seed = _ask(chain, 3)  # a prompt is a finding on this frame: it beats the absence
    assert isinstance(seed, Seed) and float(seed.prompt.points[0, 0]) == 4.0 and seed.reason == "found"


def test_a_gating_member_holds_memories_back_while_the_target_is_searched_for():
    memories = _entries(1.0)
    bridge = Scripted(Seed(memories=memories, reason="bridge"))
    finder = Scripted(None, None, Seed(_click(2.0), "found"), gates=True)
    chain = ProposerChain([finder, bridge])
    assert chain.gates_output is True
    # a memories-only seed would let the engine track (and publish) the target from memory
    assert _ask(chain, 0, TargetState.ACQUIRING) is None
    assert _ask(chain, 1, TargetState.LOST) is None
    seed = _ask(chain, 2, TargetState.LOST)  # the finding brings them
    assert float(seed.prompt.points[0, 0]) == 2.0 and seed.memories == memories and seed.reason == "bridge; found"
    # once tracked, memories go at once
    later = _entries(5.0)
    bridge.answers.append(Seed(memories=later))
    assert _ask(chain, 3, TargetState.TRACKED).memories == later


def test_close_closes_every_member_and_raises_the_first_error():
    a, b, c = Scripted(fail_on_close=True), Scripted(fail_on_close=True), Scripted()
    chain = ProposerChain([a, b, c])
    with pytest.raises(RuntimeError, match="close failed"):
        chain.close()
    assert a.closed and b.closed and c.closed
    with pytest.raises(ValueError):
        ProposerChain([])


# --------------------------------------------------------------------- in the engine
@pytest.fixture(scope="module")
def sam():
    return present_sam()


@pytest.fixture(scope="module")
def transitions(sam, tmp_path_factory):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft", reason="the DBST LoRA needs peft (requirements: peft)")
    from refseg_ros.adapters.reference.cavsam.dbst import TransitionConfig, TransitionGenerator, load_pipeline
    from refseg_ros.adapters.reference.cavsam.dbst_proposer import TransitionService

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on two busy cores make each tiny UNet pass far slower
    pipeline = load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("chain") / "tiny_sd"), "cpu")
    generator = TransitionGenerator(pipeline, TransitionConfig(frames=N, inversion_steps=4, lora_steps=2,
                                                               lora_rank=4))
    with TransitionService(generator, sam, autocast=None, synchronous=True) as service:
        yield service
    torch.set_num_threads(before)


def _scene(with_object: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey noise, with a red 40 x 48 block when `with_object`."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    if with_object:
        mask[28:68, 40:88] = True
        image[mask] = (220, 30, 30)
    return image, mask


def _engine(sam) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=256, device="cpu"),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


def _seeded(step) -> list[str]:
    return [e for e in step.events if "seeded" in e]


def test_a_reference_target_gets_the_priors_seed_and_the_transition_memories(sam, transitions, tmp_path):
    from refseg_ros.adapters.reference.prior.acquisition import AcquirerConfig
    from refseg_ros.adapters.reference.prior.acquisition_proposer import AcquisitionService
    from refseg_ros.adapters.reference.prior.candidates import ScoringRules
    from refseg_ros.adapters.reference.prior.dino_encoder import DinoEncoder

    # Random weights: the gate accepts the prior's best click, whatever SAM2 draws there.
    rules = ScoringRules(require_point_inside=False, max_area_fraction=1.0)
    acquisition = AcquisitionService(DinoEncoder(save_dinov2(tmp_path / "dino")),
                                     AcquirerConfig(threshold=-1.0, m=1, window=1, rules=rules), synchronous=True)
    try:
        engine = _engine(sam)
        reference, mask = _scene(True, seed=1)
        tid = engine.add_target("cam", MaskPrompt(mask), image=reference)
        prior = acquisition.proposer(acquisition.prototypes([reference], [mask]))
        bridge = transitions.proposer(reference, mask, on=("taught",))
        engine.set_proposer("cam", tid, ProposerChain([prior, bridge]))
        step = engine.step("cam", _scene(True, seed=2)[0])
        memory = engine._stream("cam").targets[tid].memory
        # both on the first frame: the transitions below the reference, the prior's click on frame 0
        assert sorted(memory.conditioning) == [-4, -3, -2, -1, 0]
        job = bridge.last_job
        assert job is not None and len(job.entries) == N
        for k, index in enumerate((-4, -3, -2)):
            assert memory.conditioning[index].maskmem_features is job.entries[k].maskmem_features
        assert prior.last_click is not None and engine._stream("cam").targets[tid].seeds.frames == [0]
        (event,) = _seeded(step)
        assert "found by its prior" in event and f"{N} transition frames" in event
        assert step.targets[0].state == TargetState.TRACKED and step.targets[0].mask.any()
    finally:
        acquisition.close()


def test_transition_memories_wait_while_a_gating_prior_withholds_the_target(sam, transitions):
    engine = _engine(sam)
    reference, mask = _scene(True, seed=1)
    tid = engine.add_target("cam", MaskPrompt(mask), image=reference)
    finder = Scripted(None, Seed(_click(60.0), "found"), gates=True)  # finds it on the second frame
    bridge = transitions.proposer(reference, mask, on=("taught",))
    engine.set_proposer("cam", tid, ProposerChain([finder, bridge]))
    memory = engine._stream("cam").targets[tid].memory
    first = engine.step("cam", _scene(False, seed=3)[0])
    assert bridge.last_job is not None  # the job ran on the first frame (synchronous) ...
    assert list(memory.conditioning) == [-1] and not _seeded(first)  # ... and its memories wait
    assert first.targets[0].state == TargetState.ACQUIRING and not first.targets[0].mask.any()
    second = engine.step("cam", _scene(True, seed=4)[0])
    assert sorted(memory.conditioning) == [-4, -3, -2, -1, 1]
    assert memory.conditioning[-4].maskmem_features is bridge.last_job.entries[0].maskmem_features
    (event,) = _seeded(second)
    assert f"{N} transition frames" in event and event.endswith("; found")
    assert second.targets[0].state == TargetState.TRACKED
