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
    rows = torch.cat([x for x, *_ in earlier], 1)                             # [B, E, S]
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
    rows = torch.cat([x for x, *_ in earlier], 1)                                  # [B, E, S]
    per = rows.shape[1] // len(earlier)
    searching = torch.cat([a[:, None].expand(-1, per) for _, a, *_ in earlier], 1)     # [B, E]
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



def ngram_kernel(n: int, rows: torch.Tensor, pa: torch.Tensor, tok: torch.Tensor, prompt, t, v: int) -> torch.Tensor:
    """[B, M, M] float64: the cosine similarity of the n-gram count vectors of M candidates'
    new texts, candidate (b, m) being beam pa[b, m] of `rows` [B, K, S] continued by tok[b, m]
    at step t. A text with no n-gram yet is like itself (1) and like no other (0). Exact and
    cheap: a candidate's n-grams are its beam's plus one, so (a + g)·(b + h) = a·b + a[h] +
    b[g] + [g = h] from the K beams' own counts."""
    b, k, _ = rows.shape
    m, span = pa.shape[1], torch.arange(n, device=tok.device)
    weights = v ** span.flip(0)                                                 # an n-gram's id, exact in int64
    ids = (rows.unfold(2, n, 1) * weights).sum(-1)                              # [B, K, W]
    start = torch.arange(ids.shape[2], device=tok.device)
    valid = (start >= prompt) & (start + n - 1 < prompt + t)                    # the beams' new n-grams
    slots = (prompt + t - n + 1 + span[:-1]).clamp(min=0)                       # a candidate's new n-gram
    new = (rows.gather(1, pa[..., None].expand(-1, -1, rows.shape[2]))[..., slots] * weights[:-1]).sum(-1)
    new = (new + tok * weights[-1]) if n > 1 else tok                           # [B, M]
    has = (t + 1 >= n).double()
    same = (ids[:, :, None, :, None] == ids[:, None, :, None, :]) & valid[:, None] & valid[None, :]
    beams = same.sum((3, 4)).double()                                           # [B, K, K]
    count = ((ids[:, :, None, :] == new[:, None, :, None]) & valid).sum(-1).double()  # [B, K, M]: a[h]
    pair = beams.gather(1, pa[..., None].expand(-1, -1, k)).gather(2, pa[:, None, :].expand(-1, m, -1))
    cross = count.gather(1, pa[..., None].expand(-1, -1, m))                    # [B, M, M]: a_c[h_d]
    dot = pair + has * (cross + cross.transpose(1, 2) + (new[:, :, None] == new[:, None, :]).double())
    norm = dot.diagonal(dim1=1, dim2=2).sqrt()
    cos = dot / (norm[:, :, None] * norm[:, None, :]).clamp(min=1e-300)
    eye = torch.eye(m, dtype=torch.bool, device=tok.device)
    return torch.where((norm[:, :, None] > 0) & (norm[:, None, :] > 0), cos, eye.double())


SMALL = 1e-30  # a candidate that adds nothing new to the set: det grows by this factor, not 0


def greedy_map(s: torch.Tensor, sim: torch.Tensor, w, n: int) -> torch.Tensor:
    """[B, n] positions in `s` [B, M]: n times, the candidate with the largest s + w·log d²
    joins, d² the factor by which det(sim) of those chosen grows with it (greedy MAP of a DPP
    by incremental Cholesky, Chen, Zhang & Zhou 2018). -inf scores join last, in order."""
    b, m = s.shape
    chol, d2 = sim.new_zeros(b, m, n), torch.ones_like(sim[:, 0])
    taken, order = torch.zeros_like(s, dtype=torch.bool), []
    for j in range(n):
        gain = torch.where(torch.isfinite(s), s + w * d2.clamp(min=SMALL).log(), -1e30)
        i = torch.where(taken, float("-inf"), gain).argmax(1, keepdim=True)
        ci, di = chol.gather(1, i[..., None].expand(-1, 1, n)), d2.gather(1, i)
        row = sim.gather(1, i[..., None].expand(-1, 1, m))[:, 0]
        e = torch.where(di > SMALL, (row - (chol * ci).sum(-1)) / di.clamp(min=SMALL).sqrt(), 0.0)
        chol = chol.index_copy(2, torch.tensor([j], device=s.device), e[..., None])
        d2, taken, order = d2 - e ** 2, taken.scatter(1, i, True), order + [i]
    return torch.cat(order, 1)
