"""Greedy decoding, and independent sampling when the recipe samples (one row per sample).

Per row: process the logits, take the argmax (or draw from the softmax), and once a row
has produced EOS it only writes padding. Same as the reference's `_sample` loop.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Search, candidates, draw, trim

TRACE_TOP = 5  # alternatives per row shown in a trace


class Greedy(Search):
    logprobs = False  # the reference processes raw logits when it does not beam-search

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params.get("n", 1))

    def init(self, device, seq_len):
        r = self.cfg.batch * self.rows
        return {
            "alive": torch.ones(r, dtype=torch.bool, device=device),
            "score": torch.zeros(r, dtype=torch.float32, device=device),
        }

    def step(self, t, scores, process, noise, seq, lim, hp, state):
        scores = process(scores, None)
        logp = torch.log_softmax(scores, dim=-1)
        if self.cfg.sampling:
            tok = draw(logp, noise[:, :1]).squeeze(1)  # a draw from softmax(logp)
        else:
            tok = torch.argmax(scores, dim=-1)
        alive = state["alive"]
        tok = torch.where(alive, tok, torch.full_like(tok, self.cfg.pad))
        gained = logp.gather(1, tok[:, None]).squeeze(1)
        score = state["score"] + torch.where(alive, gained, torch.zeros_like(gained))
        ended = self.is_eos(tok)
        info = {}
        if self.cfg.trace:
            b, n = self.cfg.batch, self.rows
            top, idx = torch.topk(logp, TRACE_TOP)                      # [R, C]
            rows = torch.arange(b * n, device=tok.device)[:, None].expand_as(idx)
            kept = (idx == tok[:, None]) & alive[:, None]
            info = candidates(idx.view(b, -1), top.view(b, -1), rows.reshape(b, -1), kept.view(b, -1),
                              (self.is_eos(idx) & kept).view(b, -1))
        alive = alive & ~ended
        return tok, None, {"alive": alive, "score": score}, info

    def stop_rows(self, state, rows):
        return {**state, "alive": state["alive"] & ~rows}

    def done(self, state):
        return ~state["alive"].any()

    def finalize(self, state, seq, lim):
        p = int(lim["prompt"])
        ids = seq[:, p:].tolist()
        scores = state["score"].tolist()
        out = []
        for b in range(self.cfg.batch):
            rows = []
            for j in range(self.rows):
                r = b * self.rows + j
                kept, why = trim(ids[r], self.cfg.eos)
                rows.append((kept, scores[r], why))
            if not self.cfg.sampling:
                rows.sort(key=lambda x: -x[1])
            out.append(rows)
        return out


STRATEGY = Greedy
