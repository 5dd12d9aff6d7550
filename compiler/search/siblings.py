"""Beam search with diverse siblings (Li, Monroe & Jurafsky 2016, "A Simple, Fast Diverse
Decoding Algorithm for Neural Generation", arXiv:1611.08562).

The continuations of one beam are siblings. Each step they are ranked by processed
log-prob (rank 1 = the most likely) and each loses gamma·(rank - 1) before the beam search
picks its 2K continuations over all beams, so the survivors tend to come from different
parents. Everything else is `beam`: the finished pool, `early`, lenpen, beam sampling. The
penalised score is carried on, as fairseq's DiverseSiblingsSearch does.
"""
from __future__ import annotations

import torch

from decode.compiler.search.beam import Beam


class Siblings(Beam):
    def hyper(self):
        return {**super().hyper(), "gamma": float(self.cfg.modifiers["siblings"]["gamma"])}

    def rescore(self, acc, logp, hp):
        b, k = self.cfg.batch, self.rows
        # ranked by the log-prob itself: in beam score + log-prob a large penalty carried
        # from earlier steps would round the log-probs away, and tie every sibling
        per_beam = logp.reshape(b * k, -1)
        order = torch.argsort(per_beam, dim=-1, descending=True, stable=True)
        ranks = torch.arange(per_beam.shape[-1], device=acc.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(-1, order, ranks)  # 0 = best sibling
        penalty = (hp["gamma"] * rank.to(acc.dtype)).view(b, -1)
        return acc - penalty, penalty


STRATEGY = Siblings


def wrap(strategy):
    """`siblings` modifies a beam search."""
    return Siblings
