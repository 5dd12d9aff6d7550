"""`beam K | cluster C`: clustered beam search (Tam 2020, "Cluster-based beam search for
pointer-generator chatbot grounded by knowledge", Computer Speech & Language 64; Kriz,
Sedoc, Apidianaki, Zheng, Kumar, Miltsakaki & Callison-Burch 2019, "Complexity-Weighted Loss
and Diverse Reranking for Sentence Simplification", NAACL 2019).

Each step the 2K best continuations (or drawn ones, when the recipe samples) are clustered
by k-means (C clusters, a fixed number of iterations, _hidden.py) on their vectors: the last
hidden state of the row each continues and the token's output embedding, from the same
forward. The candidates are then taken round-robin: each cluster's best, the clusters in the
order of their bests, then each one's second, and so on; the first K of that order that do
not end go on, those ending among the first K are offered to the pool, as in beam search.
C = 1 is beam search.
"""
from __future__ import annotations

import torch

from decode.compiler.search._hidden import kmeans, round_robin, vectors
from decode.compiler.search.beam import Beam
from decode.compiler.search.determinantal import Determinantal


class Cluster(Beam):
    hidden = "cluster"
    survivors = Determinantal.survivors  # the first k, in the order chosen, that did not end

    def __init__(self, cfg):
        super().__init__(cfg)
        self.c = int(cfg.modifiers["cluster"]["c"])

    def candidates(self, scores, n, u, at=None):
        s, idx = super().candidates(scores, n, u)                              # [B, n] best first
        b, v = s.shape[0], scores.shape[1] // self.rows
        rows = idx // v + torch.arange(b, device=s.device)[:, None] * self.rows
        order = round_robin(kmeans(vectors(at, rows, idx % v), self.c), torch.isinf(s))
        return s.gather(1, order), idx.gather(1, order)


STRATEGY = Cluster


def wrap(strategy):
    """`cluster` modifies a beam search."""
    return Cluster
