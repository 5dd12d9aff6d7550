"""How close a group's continuations come to what earlier groups wrote: the counts of
diverse.py's `cumulative` and `ngram` kinds, and iterative.py's hard rule."""
from __future__ import annotations

import torch


def pick_counts(picks: torch.Tensor, v: int) -> torch.Tensor:
    """[B, V]: how often each token occurs in `picks` [B, N] (entries -1 are not counted)."""
    return torch.zeros(picks.shape[0], v, device=picks.device).scatter_add(
        1, picks.clamp(min=0), (picks >= 0).float())


def ngram_counts(n: int, t, own, earlier, until, prompt, v: int) -> torch.Tensor:
    """[B, R, V]: for each row of `own` [B, R, S] and token x, how often the n-gram (the row's
    last n-1 new tokens, x) occurs among the new tokens of the `earlier` groups' rows, leaving
    out what a group wrote after it finished (`until`). Zero while t < n - 1."""
    b, r, slots = own.shape
    if not earlier or n > slots:  # no n-gram fits in the sequence (`n=` may be any size)
        return torch.zeros(b, 1, v, device=own.device)
    rows = torch.cat([x for x, _ in earlier], 1)                             # [B, E, S]
    e = rows.shape[1]
    per = e // len(earlier)
    grams = rows.unfold(2, n, 1)                                             # [B, E, W, n]
    w = grams.shape[2]
    start = torch.arange(w, device=own.device)
    end = start + (n - 1)
    limit = prompt + until[:, : len(earlier)].repeat_interleave(per, 1)      # [B, E]
    valid = (start >= prompt) & (end <= prompt + t)
    valid = valid & (end[None, None, :] < limit[..., None]) & (t >= n - 1)    # [B, E, W]
    ctx_slots = (prompt + t - (n - 1) + torch.arange(n - 1, device=own.device)).clamp(min=0)
    ctx = own[:, :, ctx_slots]                                               # [B, R, n-1]
    match = (grams[:, None, :, :, : n - 1] == ctx[:, :, None, None, :]).all(-1) & valid[:, None]
    last = grams[..., n - 1].reshape(b, 1, e * w).expand(b, r, e * w)
    return torch.zeros(b, r, v, device=own.device).scatter_add(2, last, match.reshape(b, r, e * w).float())


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
