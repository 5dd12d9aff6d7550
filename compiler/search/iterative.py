"""Iterative beam search (Kulikov, Miller, Cho & Weston 2019, "Importance of Search and
Evaluation Strategies in Neural Dialogue Modeling", arXiv:1811.00907).

G passes of beam search, each of K/G beams; pass g discards any partial text too close to
one an earlier pass kept at the same length. What pass g may keep at length L depends only
on what passes 0..g-1 kept at length L, so the passes run side by side as the groups of
diverse beam search (diverse.py), with a hard rule in place of the penalty: a continuation
of length L that differs in fewer than min(distance, L) new tokens from a beam an earlier,
still searching group keeps at length L gets the -1e9 filler score.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import NEG
from decode.compiler.search.diverse import Diverse


class Iterative(Diverse):
    modifier = "iterative"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kind = "iterative"
        self.distance = int(cfg.modifiers["iterative"]["distance"])

    def hyper(self):
        return {"lenpen": float(self.cfg.params.get("lenpen", 1.0))}

    def penalise(self, t, own, lim, hp, chosen, picks, earlier, until):
        if not earlier:
            return torch.zeros_like(chosen)[:, None, :]
        close = too_close(self.distance, t, own, earlier, lim["prompt"], chosen.shape[-1])
        return close.to(chosen.dtype) * -NEG


def too_close(distance: int, t, own, earlier, prompt, v: int) -> torch.Tensor:
    """[B, R, V] bool: continuing row r of `own` [B, R, S] with token x gives a text of
    L = t + 1 new tokens that differs in fewer than min(distance, L) positions from one of
    the rows of `earlier` (after their choice at this step) whose group is still searching."""
    rows = torch.cat([x for x, _ in earlier], 1)                                  # [B, E, S]
    per = rows.shape[1] // len(earlier)
    searching = torch.cat([a[:, None].expand(-1, per) for _, a in earlier], 1)     # [B, E]
    slots = torch.arange(own.shape[-1], device=own.device)
    before = (slots >= prompt) & (slots < prompt + t)                             # first t new tokens
    differ = ((own[:, :, None, :] != rows[:, None, :, :]) & before).sum(-1)       # [B, R, E]
    need = torch.clamp(t + 1, max=distance)
    last = rows.gather(2, (prompt + t).expand(rows.shape[0], rows.shape[1], 1)).squeeze(2)   # [B, E]
    any_token = ((differ + 1 < need) & searching[:, None, :]).any(-1)             # [B, R]
    same_token = ((differ < need) & searching[:, None, :]).to(torch.float32)       # [B, R, E]
    b, r, e = same_token.shape
    hit = torch.zeros(b, r, v, device=own.device).scatter_add(2, last[:, None, :].expand(b, r, e), same_token)
    return any_token[..., None] | (hit > 0)


STRATEGY = Iterative


def wrap(strategy):
    """`iterative` turns a beam search into G passes searching side by side."""
    return Iterative
