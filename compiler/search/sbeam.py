"""Stochastic beam search (Kool, van Hoof & Welling 2019, "Stochastic Beams and Where to
Find Them: The Gumbel-Top-k Trick for Sampling Sequences Without Replacement").

Every beam carries its log-probability phi (its score) and a perturbed key G (a Gumbel
with location phi, conditioned on the parent's G being the maximum over its subtree).
Children get G~ = phi_child + Gumbel(0,1), then are conditioned on max G~ = G_parent:
    G_child = -log(exp(-G_parent) - exp(-max G~) + exp(-G~_child)).
The K children with the largest G over all beams survive. A finished beam keeps itself as
its only child (padding, at no cost) with its G unchanged. The result is K distinct
sequences sampled without replacement from the (processed) sequence distribution, best
phi first. Under `temp 0` nothing is drawn and the key is phi itself: a beam search for
the K most likely sequences, finished ones kept in the beam.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Choice, Search, gumbel

INF = float("inf")


def _log1mexp(a):
    """log(1 - exp(a)) for a <= 0, stable at both ends."""
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def shift_gumbel(parent, g, z):
    """Condition Gumbels g (max z) to have max `parent` (Kool et al. 2019, appendix B)."""
    v = parent - g + _log1mexp(torch.clamp(g - z, max=0.0))
    return parent - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))


class StochasticBeam(Search):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])

    def first_scores(self, device):
        first = torch.full((self.cfg.batch, self.rows), -INF, device=device)
        first[:, 0] = 0.0  # one live beam per prompt at first, so the K do not start equal
        return first.view(-1)

    def init(self, device, seq_len):
        return {"key": self.first_scores(device)}

    def step(self, scores, at, state):
        b, k = self.cfg.batch, self.rows
        v = scores.shape[-1]
        lp = torch.log_softmax(at.process(scores, None), dim=-1).view(b, k, v)
        fin = ~at.alive.view(b, k, 1)
        pad = torch.arange(v, device=lp.device) == self.cfg.pad
        lp = torch.where(fin, torch.where(pad, 0.0, -INF), lp)  # a finished beam: itself
        phi = at.score.view(b, k, 1) + lp
        key = phi  # `temp 0` (argmax): no draw, the K most likely continuations
        if at.noise is not None:
            g = phi + gumbel(at.noise).view(b, k, v)
            parent = state["key"].view(b, k, 1)
            key = shift_gumbel(parent, g, g.max(-1, keepdim=True).values)
            key = torch.where(fin, torch.where(pad, parent, -INF), key)
        key = torch.where(torch.isfinite(phi), key, -INF)
        top, idx = torch.topk(key.view(b, k * v), k)
        parents = (idx // v + torch.arange(b, device=lp.device)[:, None] * k).reshape(-1)
        return Choice((idx % v).reshape(-1), parents, phi.view(b, k * v).gather(1, idx).reshape(-1),
                      {"key": top.reshape(-1)})


STRATEGY = StochasticBeam
