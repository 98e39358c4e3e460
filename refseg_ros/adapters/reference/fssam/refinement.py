"""FSSAM's Iterative Memory Refinement (rule `v1`, the released setting, 3 iterations).

Paper: Xu et al. (ICML 2025), Iterative Memory Refinement. The query-Disc memory (encoded
from the discriminative prior) is pulled towards the query-FG memory where both the
support and the current Disc memory agree with a query-FG position. On the memory grid
(h x w = S/16), with P(a, b, m) = min-max(cos(a, masked_average(b, m))) per shot, averaged
over shots:
    qs = P(qry_fg, support, support_mask)                         (once)
    each iteration:
        qq   = P(qry_fg, qry_disc, prior_disc)
        w    = max(qq + (qs - 1), 0)                              (v1: w is not normalised)
        qry_disc   <- qry_fg * w + qry_disc * (1 - w)
        prior_disc <- min-max(prior_fg * w + prior_disc * (1 - w))
The query-FG memory never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..prototypes import masked_average, min_max, normalised_similarity

NUM_ITERATIONS = 3


def memory_prior(query: torch.Tensor, memories: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """P(query, memories, masks): (1, C, h, w), (shots, C, h, w), (shots, 1, h, w) -> (1, 1, h, w).

    Per shot: min-max normalised cosine of every query position with the masked average
    of that shot's memory; then the mean over shots. Inputs are used as float32.
    """
    query = query.float()
    maps = [normalised_similarity(query, masked_average(memories[s:s + 1].float(), masks[s:s + 1]))
            for s in range(memories.shape[0])]
    return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1).mean(1, keepdim=True)


@dataclass
class RefinementTrace:
    """Every intermediate of the refinement, for parity checks.

    disc_memories[i], disc_priors[i]: state before iteration i+1 ([0] = input, [-1] = result),
    (1, C, h, w) and (1, 1, h, w). support_similarity: qs (1, 1, h, w).
    disc_similarities[i]: qq of iteration i+1 (1, 1, h, w).
    """

    disc_memories: list[torch.Tensor] = field(default_factory=list)
    disc_priors: list[torch.Tensor] = field(default_factory=list)
    support_similarity: torch.Tensor | None = None
    disc_similarities: list[torch.Tensor] = field(default_factory=list)


def refine_disc_memory(
    support_memories: torch.Tensor,
    support_masks: torch.Tensor,
    fg_memory: torch.Tensor,
    disc_memory: torch.Tensor,
    prior_fg: torch.Tensor,
    prior_disc: torch.Tensor,
    iterations: int = NUM_ITERATIONS,
) -> tuple[torch.Tensor, RefinementTrace]:
    """Refine the query-Disc memory.

    support_memories (shots, C, h, w) and fg_memory / disc_memory (1, C, h, w): SAM2
    memories (bf16 as encoded, or float32); support_masks (shots, 1, h, w), prior_fg /
    prior_disc (1, 1, h, w) float32, all on the memory grid. Returns the refined Disc
    memory (float32 after one or more iterations, the input unchanged after none) and the
    trace.
    """
    trace = RefinementTrace(disc_memories=[disc_memory], disc_priors=[prior_disc])
    if iterations <= 0:
        return disc_memory, trace
    qs = memory_prior(fg_memory, support_memories, support_masks)
    trace.support_similarity = qs
    fg = fg_memory.float()
    disc = disc_memory
    height = prior_fg.shape[-2]
    for _ in range(iterations):
        qq = memory_prior(fg_memory, disc, prior_disc)
        weight = (qq + (qs - 1.0)).clamp_min(0)
        disc = fg * weight + disc.float() * (1.0 - weight)
        mixed = prior_fg * weight + prior_disc * (1.0 - weight)
        prior_disc = min_max(mixed.flatten(2)).view(1, 1, height, -1)
        trace.disc_similarities.append(qq)
        trace.disc_memories.append(disc)
        trace.disc_priors.append(prior_disc)
    return disc, trace
