"""Stochastic beam search (Kool, van Hoof & Welling 2019, "Stochastic Beams and Where to
Find Them: The Gumbel-Top-k Trick for Sampling Sequences Without Replacement").

Every beam carries its log-probability phi and a perturbed score G (a Gumbel with location
phi, conditioned on the parent's G being the maximum over its subtree). Children get
G~ = phi_child + Gumbel(0,1), and are then conditioned on max G~ = G_parent:
    G_child = -log(exp(-G_parent) - exp(-max G~) + exp(-G~_child)).
The K children with the largest G over all beams survive. A finished beam keeps itself as
its only child, with its G unchanged. The result is K distinct sequences sampled without
replacement from the (processed) sequence distribution; `score` is phi, the sequence's
log-probability, and `key` is G. Under `temp 0` nothing is drawn and the key is phi
itself: a beam search for the K most likely sequences, finished ones kept in the beam.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Search, candidates, gumbel

INF = float("inf")


def _log1mexp(a):
    """log(1 - exp(a)) for a <= 0, stable at both ends."""
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def shift_gumbel(parent, g, z):
    """Condition Gumbels g (max z) to have max `parent` (Kool et al. 2019, appendix B)."""
    v = parent - g + _log1mexp(torch.clamp(g - z, max=0.0))
    return parent - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))


class StochasticBeam(Search):
    logprobs = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])

    def init(self, device, seq_len):
        b, k = self.cfg.batch, self.rows
        first = torch.full((b, k), -INF, device=device)
        first[:, 0] = 0.0
        return {
            "phi": first.clone(), "key": first.clone(),
            "fin": torch.zeros(b, k, dtype=torch.bool, device=device),
            "len": torch.zeros(b, k, dtype=torch.long, device=device),
        }

    def step(self, t, scores, process, noise, seq, lim, hp, state):
        b, k = self.cfg.batch, self.rows
        v = scores.shape[-1]
        lp = torch.log_softmax(process(scores, None), dim=-1).view(b, k, v)
        fin = state["fin"]
        pad = torch.zeros(v, dtype=torch.bool, device=lp.device)
        pad[self.cfg.pad] = True
        # a finished beam has one child, itself (the pad token), at no cost
        lp = torch.where(fin[..., None], torch.where(pad, 0.0, -INF), lp)
        phi = state["phi"][..., None] + lp
        if noise is None:  # `temp 0` (argmax): no draw, the K most likely continuations
            key = phi
        else:
            g = phi + gumbel(noise).view(b, k, v)
            z = g.max(-1, keepdim=True).values
            parent_key = state["key"][..., None]
            key = shift_gumbel(parent_key, g, z)
            key = torch.where(fin[..., None], torch.where(pad, parent_key, -INF), key)
        key = torch.where(torch.isfinite(phi), key, -INF)
        top, idx = torch.topk(key.view(b, k * v), k)
        beam, tok = idx // v, idx % v
        parents = (beam + torch.arange(b, device=lp.device)[:, None] * k).reshape(-1)
        was_fin = fin.gather(1, beam)
        new = {
            "phi": phi.view(b, k * v).gather(1, idx),
            "key": top,
            "fin": was_fin | self.is_eos(tok),
            "len": state["len"].gather(1, beam) + (~was_fin).long(),
        }
        info = {}
        if self.cfg.trace:  # the K survivors; every other child was pruned
            info = candidates(tok, new["phi"], parents.view(b, k), torch.ones_like(was_fin), new["fin"])
        return tok.reshape(-1), parents, new, info

    def done(self, state):
        return state["fin"].all()

    def finalize(self, state, seq, lim):
        p = int(lim["prompt"])
        rows = seq.tolist()
        phi, key, lens = state["phi"].tolist(), state["key"].tolist(), state["len"].tolist()
        out = []
        for b in range(self.cfg.batch):
            res = []
            for j in range(self.rows):
                if key[b][j] == -INF:  # fewer than K distinct sequences exist
                    continue
                ids = rows[b * self.rows + j][p : p + lens[b][j]]
                res.append((ids, phi[b][j], "eos" if ids and ids[-1] in self.cfg.eos else "max"))
            res.sort(key=lambda x: -x[1])
            out.append(res)
        return out


STRATEGY = StochasticBeam
