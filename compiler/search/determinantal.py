"""`beam K | determinantal weight=W [n=2]`: determinantal beam search (Meister, Forster &
Cotterell 2021, "Determinantal Beam Search", ACL 2021).

Each step the 2K² best continuations (or drawn ones, when the recipe samples) form the pool,
and the beam's candidates are the greedy MAP of a determinantal point process over it: in
turn, the one adding most to  sum of scores + W·log det(S_Y)  joins Y, S the cosine
similarity of the candidates' n-gram counts (overlap.py). The first K of them that do not end
go on, those ending among the first K are offered to the pool of finished hypotheses, as
in beam search; scores are the plain beam scores. W = 0 is beam search.
"""
from __future__ import annotations

import torch

from decode.compiler.search.beam import Beam
from decode.compiler.search.overlap import greedy_map, ngram_kernel
from decode.runtime.errors import ModelError


class Determinantal(Beam):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.n = int(cfg.modifiers["determinantal"]["n"])
        if cfg.vocab ** self.n >= 2 ** 63:  # an n-gram's id must be exact in int64
            raise ModelError(f"determinantal n={self.n}: {self.n}-grams of this model's {cfg.vocab} tokens "
                             "cannot be told apart in 64 bits; use a smaller n")

    def hyper(self):
        return {**super().hyper(), "weight": float(self.cfg.modifiers["determinantal"]["weight"])}

    def survivors(self, top, k):  # the first k of the set, in the order it was built, that did not end
        nxt = torch.sort(torch.isinf(top).to(torch.int8), dim=1, stable=True).indices[:, :k]
        return top.gather(1, nxt), nxt

    def candidates(self, scores, n, u, at=None):
        b, k, size = self.cfg.batch, self.rows, min(scores.shape[1], 2 * self.rows ** 2)
        s, idx = super().candidates(scores, size, u)                          # the pool [B, M]
        v = scores.shape[1] // k
        sim = ngram_kernel(self.n, at.seq.view(b, k, -1), idx // v,
                           idx % v, at.prompt, at.t, v)
        pos = greedy_map(s, sim, at.hp["weight"], n)
        return s.gather(1, pos), idx.gather(1, pos)


STRATEGY = Determinantal


def wrap(strategy):
    """`determinantal` modifies a beam search."""
    return Determinantal
