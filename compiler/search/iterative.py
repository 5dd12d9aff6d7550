"""Iterative beam search (Kulikov, Miller, Cho & Weston 2019, "Importance of Search and
Evaluation Strategies in Neural Dialogue Modeling", arXiv:1811.00907).

G passes of beam search, each of K/G beams; pass g discards any partial text too close to
one an earlier pass kept at the same length. What pass g may keep at length L depends only
on what passes 0..g-1 kept at length L, so the passes run side by side as the groups of a
group beam search (groups.py), with a hard rule in place of a penalty: a continuation of
length L that differs in fewer than min(distance, L) new tokens from a beam an earlier,
still searching group keeps at length L gets the reference's -1e9 filler score.
"""
from __future__ import annotations

import torch

from decode.compiler.search.groups import Groups
from decode.compiler.search.overlap import too_close

FILLER = 1.0e9  # what a discarded continuation loses: the reference's "very large negative"


class Iterative(Groups):
    modifier = "iterative"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.distance = int(cfg.modifiers[self.modifier]["distance"])

    def penalise(self, g, own, at, chosen, earlier, memo):
        if not earlier:
            return torch.zeros_like(chosen)[:, None, :]
        close = too_close(self.distance, at.t, own, earlier, at.prompt, chosen.shape[-1])
        return close.to(chosen.dtype) * FILLER


STRATEGY = Iterative


def wrap(strategy):
    """`iterative` turns a beam search into G passes searching side by side."""
    return Iterative
