"""`beam K | npad sigma=S`: noisy parallel approximate decoding (Cho 2016, "Noisy Parallel
Approximate Decoding for Conditional Recurrent Language Model", arXiv:1605.03835).

K decoders per prompt run side by side and never meet, as the paper's N parallel decoders:
each row is greedy (a draw, when the recipe samples) under its own noisy distribution, and
the K results come back ranked by the noise-free score. At step t (1 for the first new
token) the row's last hidden state h (after the final norm) gains sigma_t·z, z standard
normal from the row's own key (seeded), sigma_t = S / t (the paper's annealing). The head W
is linear, so the noisy logits W(h + sigma_t·z) are Wh + sigma_t·Wz: the forward stays
noise-free, its logits give the score, and the noise costs one [R, dim] x [dim, V] product
with W, the price of a second output head. The score is the sum of log_softmax(Wh) at the
chosen tokens: the model's own log-probability of the sequence, noise-free and before the
recipe's logit stages (the stages, on the noisy logits, decide the token, not the score).
S = 0 is K copies of greedy decoding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from decode.compiler.search._hidden import gaussian
from decode.compiler.search.base import Choice, Search


class Npad(Search):
    hidden = "npad"   # it reads the output head, `at.head`
    logprobs = False  # as greedy decoding: the stages see the raw logits

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])
        self._returns = int(cfg.params.get("return") or self.rows)

    @property
    def returns(self):
        return self._returns

    def hyper(self):
        return {"sigma": float(self.cfg.modifiers["npad"]["sigma"])}

    def step(self, scores, at, state):
        sigma = at.hp["sigma"] / (at.t + 1).to(at.hp["sigma"].dtype)
        wz = F.linear(gaussian(at.keys, at.t, at.head.shape[1]).to(at.head.dtype), at.head).float()
        x = at.process(scores + sigma * wz, None)
        tok = at.select(torch.log_softmax(x, -1) if self.cfg.sampling else x)[:, 0]
        return Choice(tok, None, at.score + torch.log_softmax(scores, -1).gather(1, tok[:, None])[:, 0])

    def finalize(self, state, seq, lim):
        return [best[:self.returns] for best in super().finalize(state, seq, lim)]


STRATEGY = Npad


def wrap(strategy):
    """`npad` turns `beam K` into K independent noisy decoders."""
    return Npad
