"""`arith N`: arithmetic sampling (Vilnis, Zemlyanskiy, Murray, Passos & Sanghai 2023,
"Arithmetic Sampling: Parallel Diverse Decoding for Large Language Models", ICML 2023).

A prompt's N rows start from the evenly spaced codes i/N moved by one uniform offset
(mod 1). Each step a row takes the token whose interval of the processed distribution's CDF
holds its code, and the code becomes its position within that interval, rescaled to [0, 1).
Each row alone is ancestral sampling; the N rows read one lattice, so they split the
distribution's mass between them instead of drawing it independently. Codes are float64 and
finite: so that a code never runs out of bits, all N codes of a prompt move by one fresh
shared uniform (mod 1) every step, which keeps every code uniform given its prefix and the
codes of rows that share a prefix evenly spaced (the first step's move is the offset).
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Choice, Search


class Arith(Search):
    logprobs = False  # the stages see raw logits, as in sampling

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows, self.ranked = int(cfg.params["n"]), False  # samples come back in row order

    def init(self, device, seq_len):
        lattice = torch.arange(self.rows, dtype=torch.float64, device=device) / self.rows
        return {"code": lattice.repeat(self.cfg.batch)}

    def step(self, scores, at, state):
        b, n = self.cfg.batch, self.rows
        x = at.process(scores, None)
        p = torch.softmax(x.double(), dim=-1)
        shift = at.noise.view(b, n, -1)[:, :1, 0].double()                    # [B, 1]: one per prompt
        code = (state["code"].view(b, n) + shift).remainder(1.0).view(-1, 1)   # [R, 1]
        cdf = p.cumsum(-1) / p.sum(-1, keepdim=True)
        tok = (cdf <= code).sum(-1, keepdim=True).clamp(max=p.shape[-1] - 1)   # the interval holding it
        width = p.gather(1, tok) / p.sum(-1, keepdim=True)
        inside = ((code - (cdf.gather(1, tok) - width)) / width).clamp(0.0, 1.0 - 2.0**-53)
        logp = torch.log_softmax(x, dim=-1).gather(1, tok)[:, 0]
        return Choice(tok[:, 0], None, at.score + logp, {"code": inside[:, 0]})


STRATEGY = Arith
