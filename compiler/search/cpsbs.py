"""`cpsbs K`: conditional Poisson stochastic beam search (Meister, Amini, Vieira & Cotterell
2021, "Conditional Poisson Stochastic Beam Search", EMNLP 2021).

Each step the K survivors are drawn without replacement from all K·V children of the beams
by the conditional Poisson design: a set S of K with probability proportional to the product
of its members' weights, the odds q/(1-q) of q, a child's sequence probability under the
processed distribution normalised over all K·V children (q at most 0.99): the weights of the
authors' code (rycolab/cpsbs: a softmax over the candidates, then the odds). A
finished beam is its own only child (padding, at no cost), as in `sbeam`. Each row carries
the log of the product over the steps of its conditional inclusion probabilities, the
paper's estimate of its inclusion probability (`inclusion` in the results; the estimator
weighs a returned sequence y by p(y) over it); `score` is the sequence's log-probability.
"""
from __future__ import annotations

import torch

from decode.compiler.search._poisson import draw
from decode.compiler.search.base import Choice, Search

LOG_099 = -0.01005033585350145  # log 0.99: the authors clip q there (their clip, on log q, never acts; q = 1 would give NaN)


class ConditionalPoisson(Search):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])

    def first_scores(self, device):  # one live beam per prompt at first, so the K do not start equal
        return torch.full((self.cfg.batch, self.rows), float("-inf"), device=device).index_fill(
            1, torch.tensor([0], device=device), 0.0).view(-1)

    def init(self, device, seq_len):
        return {"inclusion": torch.zeros(self.cfg.batch * self.rows, dtype=torch.float64, device=device)}

    def inclusion(self, state):
        return state["own"]["inclusion"]

    def step(self, scores, at, state):
        b, k, v = self.cfg.batch, self.rows, scores.shape[-1]
        lp = torch.log_softmax(at.process(scores, None), dim=-1).view(b, k, v)
        pad = torch.arange(v, device=lp.device) == self.cfg.pad
        lp = torch.where(~at.alive.view(b, k, 1), torch.where(pad, 0.0, float("-inf")), lp)  # finished: itself
        phi = (at.score.view(b, k, 1) + lp).view(b, k * v)
        q = torch.log_softmax(phi, 1).clamp(max=LOG_099)  # normalised over the K·V candidates
        pos, inclusion = draw(q - torch.log(-torch.expm1(q)), k, at.noise.view(b, k * v)[:, :k])  # odds
        parents = (pos // v + torch.arange(b, device=lp.device)[:, None] * k).reshape(-1)
        return Choice((pos % v).reshape(-1), parents, phi.gather(1, pos).reshape(-1),
                      {"inclusion": state["inclusion"][parents] + inclusion.reshape(-1)})


STRATEGY = ConditionalPoisson
