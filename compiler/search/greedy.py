"""Greedy decoding, and independent sampling when the recipe samples (one row per sample).

Per row: process the logits, take the argmax (or draw from the softmax); a row that has
produced EOS only writes padding (`Search`). Same as the reference's `_sample` loop.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Choice, Search


class Greedy(Search):
    logprobs = False  # the reference processes raw logits when it does not beam-search
    refills = True    # independent rows, no state: a row may take a new prompt mid-run

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params.get("n", 1))
        self.draws = cfg.sampling  # samples come back best first, each with its draw index

    def step(self, scores, at, state):
        x = at.process(scores, None)
        logp = torch.log_softmax(x, dim=-1)
        # argmax of the processed scores themselves: rounding in log_softmax could tie two
        tok = at.select(logp if self.cfg.sampling else x)[:, 0]
        return Choice(tok, None, at.score + logp.gather(1, tok[:, None]).squeeze(1))


STRATEGY = Greedy
