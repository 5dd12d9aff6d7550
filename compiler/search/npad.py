"""`beam K | npad sigma=S`: noisy parallel approximate decoding (Cho 2016, "Noisy Parallel
Approximate Decoding for Conditional Recurrent Language Model", arXiv:1605.03835).

Each beam's last hidden state gets Gaussian noise before the output head: at step t (1 for
the first new token) each coordinate gains sigma_t·z, z standard normal, sigma_t = S / t (the
paper's annealing), drawn from the row's key (seeded, as sampling is). The logits, and so
the scores the search ranks and returns, are the noisy state's; everything else is `beam`.
S = 0 is beam search.
"""
from __future__ import annotations

import torch.nn.functional as F

from decode.compiler.search._hidden import gaussian
from decode.compiler.search.beam import Beam


class Npad(Beam):
    hidden = "npad"

    def hyper(self):
        return {**super().hyper(), "sigma": float(self.cfg.modifiers["npad"]["sigma"])}

    def before_head(self, keys, t, hp):
        sigma = hp["sigma"] / (t + 1).to(hp["sigma"].dtype)
        # rows past the keys' (cfg's unconditional rows, stacked under them) get no noise
        return lambda h: h + F.pad(sigma * gaussian(keys, t, h.shape[-1]), (0, 0, 0, h.shape[0] - keys.shape[0])).to(h.dtype)


STRATEGY = Npad


def wrap(strategy):
    """`npad` modifies a beam search."""
    return Npad
