"""The conditional Poisson sampling design (Hájek 1964): K of N items, a set S drawn with
probability proportional to the product of its items' weights, for cpsbs.py.

With e_r(i) the elementary symmetric polynomial of degree r of the first i weights (e_0 = 1),
e_r(i) = e_r(i-1) + w_i·e_(r-1)(i-1): each degree is one cumulative sum of the one below,
so the whole table is K cumulative sums (log space, float64) and no loop over the items. The
largest item of S is i with probability w_i·e_(r-1)(i-1) / e_r(m) (r items still to draw
among the first m), whose cumulative sum over i is e_r(i) / e_r(m): each draw is one search
in a row of the table.
"""
from __future__ import annotations

import torch

FLOOR = -1.0e5  # the log-weight of an impossible item: drawn only when fewer than K are possible


def table(logw: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k+1, N+1] float64: log e_r(i), r = 0..k, i = 0..N, of weights exp(logw) [B, N]."""
    b, n = logw.shape
    rows = [logw.new_zeros(b, n + 1)]
    for _ in range(k):
        step = logw + rows[-1][:, :-1]                     # w_i·e_(r-1)(i-1), i = 1..N
        rows.append(torch.cat([logw.new_full((b, 1), float("-inf")), torch.logcumsumexp(step, 1)], 1))
    return torch.stack(rows, 1)


def draw(logp: torch.Tensor, k: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, k] of the items drawn, largest first, and their log inclusion
    probabilities [B, k]) for weights exp(logp) [B, N] (-inf: impossible), uniforms u [B, k]."""
    x = torch.where(torch.isfinite(logp), logp - logp.amax(1, keepdim=True), FLOOR).double()
    e, n = table(x, k), x.shape[1]
    tail = table(x.flip(1), k).flip(2)                       # log e_r of the items i+1..N, at i
    slots = torch.arange(n + 1, device=x.device)
    limit = torch.full_like(x[:, :1], n, dtype=torch.long)   # the items still allowed: 1..limit
    picks = []
    for r in range(k, 0, -1):
        row = e[:, r]
        target = torch.log(u[:, k - r:k - r + 1].double()) + row.gather(1, limit)
        found = torch.where((row >= target) & (slots >= 1), slots, n + 1).amin(1, keepdim=True)
        i = torch.minimum(found, limit)                       # (rounding at u near 1: the last allowed)
        picks.append(i - 1)
        limit = i - 1
    pos = torch.cat(picks, 1)
    # inclusion: w_i · sum_(a+b=k-1) e_a(items before i) e_b(items after i) / e_k(all)
    before = e[:, :k].gather(2, pos[:, None, :].expand(-1, k, -1))         # e_a(items before), a = 0..k-1
    after = tail[:, :k].gather(2, (pos + 1)[:, None, :].expand(-1, k, -1))  # e_b(items after), b = 0..k-1
    pair = torch.logsumexp(before + after.flip(1), 1)
    return pos, x.gather(1, pos) + pair - e[:, k, n:]
