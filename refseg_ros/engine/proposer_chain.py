"""Several proposers on one target (`seams.Proposer`), e.g. a reference target looked for
by its prior (acquisition, prompts) and bridged to the scene by diffusion transition
frames (DBST, memories).

`ProposerChain` asks every member on every frame, in its order, and merges their
answers into the one answer the engine takes. The rules, and why:

- prompt: the first member's (in order) that gave one; a later member's prompt on the
  same frame is dropped, with its reason, unless its seed also carried memories. A
  prompt lies on one frame and the engine pins one seed a frame; order is priority.
- memories: the engine pins a seed's memories replacing the previous set, so the chain
  keeps each member's latest set and, whenever one member gives a new set, hands over
  every member's latest set (member order, each oldest first): a member's new set
  replaces only its own earlier one, never another member's.
- reasons: those of the seeds used, joined with "; ", in member order.
- an answer that is neither a Seed nor None (`seams.Absent`, "the target is not
  here"): the chain returns the first such answer as it is, unless a member gave a
  prompt on that frame. A prompt is a finding on this very frame, which the engine
  decodes and SAM2's object head still judges; an absence verdict would throw that
  finding away, whereas a wrong prompt costs one seed. Memories given on a frame
  where an absence wins are not lost: they wait (with their reasons) and go with the
  chain's next seed.
- gates_output: True when any member gates. While the target is acquiring or lost, a
  seed with memories but no prompt would let the engine track the target (and
  publish its mask) from memory alone, which a gating member forbids; such memories
  wait too, and go with the seed that finds the target (the engine does not track a
  withheld target, so pinning them later changes no output).
- close(): closes every member, even when one raises; then raises the first error.

Not thread-safe, as its members: the engine calls it from one step at a time.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .features import FrameFeatures
from .memory import MemoryEntry
from .seams import Proposer, Seed
from .types import TargetState

__all__ = ["ProposerChain"]

_SEARCHING = (TargetState.ACQUIRING, TargetState.LOST)


class ProposerChain:
    """One `seams.Proposer` made of several (see the module docstring for the merge rules).

    members: the proposers, in priority order (the first one's prompt wins); the chain
    owns them (`close()` closes them). Raises ValueError when `members` is empty.
    """

    def __init__(self, members: Sequence[Proposer]):
        self.members: list[Proposer] = list(members)
        if not self.members:
            raise ValueError("a proposer chain needs at least one proposer")
        self.gates_output: bool = any(bool(m.gates_output) for m in self.members)
        self._latest: list[list[MemoryEntry]] = [[] for _ in self.members]  # each member's last set
        self._fresh = False  # a member gave memories the engine has not been handed yet
        self._waiting_reasons: list[str] = []  # reasons of those memories

    def propose(self, model: torch.nn.Module, features: FrameFeatures, frame: np.ndarray, index: int,
                state: TargetState, box: Optional[tuple[int, int, int, int]]) -> object:
        """Ask every member (arguments as `seams.Proposer.propose`) and merge their answers.

        Returns a `Seed`, None (nothing to say), or a member's non-Seed answer (e.g.
        `seams.Absent`) as it is.
        """
        answers = [m.propose(model, features, frame, index, state, box) for m in self.members]
        prompt = None
        reasons: list[str] = []
        verdict = None  # the first answer that is neither a Seed nor None
        for k, answer in enumerate(answers):
            if answer is None:
                continue
            if not isinstance(answer, Seed):
                verdict = answer if verdict is None else verdict
                continue
            used = False
            if answer.memories:
                self._latest[k] = list(answer.memories)
                self._fresh = used = True
            if answer.prompt is not None and prompt is None:
                prompt, used = answer.prompt, True
            if answer.reason and (used or answer.prompt is None):
                reasons.append(answer.reason)
        if prompt is None and (verdict is not None or (self.gates_output and state in _SEARCHING)):
            self._waiting_reasons += reasons  # memories and their reasons wait for the next seed
            return verdict
        reasons, self._waiting_reasons = self._waiting_reasons + reasons, []
        memories: list[MemoryEntry] = []
        if self._fresh:
            memories = [entry for entries in self._latest for entry in entries]
            self._fresh = False
        if prompt is None and not memories and not reasons:
            return None
        return Seed(prompt=prompt, reason="; ".join(reasons), memories=memories)

    def close(self) -> None:
        """Close every member (stop their background work); the first error, if any, is
        raised once all were asked."""
        error: Optional[BaseException] = None
        for member in self.members:
            try:
                member.close()
            except Exception as exc:  # the others must still stop
                error = error or exc
        self._latest = [[] for _ in self.members]
        if error is not None:
            raise error
