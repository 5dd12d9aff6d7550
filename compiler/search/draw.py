"""Selection, the last link of the chain: argmax, or draws from the processed distribution.

`select` is what a search calls once the logit stages have run: the n best entries of a
row, or n draws without replacement (`draw`), according to whether the recipe samples.
"""
from __future__ import annotations

import torch


def select(scores: torch.Tensor, n: int, u: torch.Tensor | None) -> torch.Tensor:
    """[B, n] indices of `scores` [B, N]: the n largest (argmax for n = 1) when `u` is
    None, else n draws without replacement from softmax(scores) reading the uniforms
    u [B, >= n], in draw order."""
    if u is not None:
        return draw(scores, u[:, :n])
    if n == 1:
        return torch.argmax(scores, dim=-1, keepdim=True)
    return torch.topk(scores, n).indices


def gumbel(noise: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) draws from uniform(0, 1) draws (clamped away from 0 and 1)."""
    u = noise.clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


CHUNK = 256  # `draw` picks a chunk of this many scores first, then an entry in it


def draw(scores: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[B, n] indices drawn without replacement from softmax(scores) ([B, N]), in draw order.

    Successive sampling by inverse CDF, the distribution of the reference's
    `multinomial(softmax(scores), n)` and of Gumbel-top-k, reading n uniforms per row
    (u: [B, n] in (0, 1)) instead of N. The scores are cut into chunks of CHUNK; one pass
    over them gives each chunk's log-sum-exp. Draw j then takes u[:, j] of the mass not
    drawn yet: first a chunk (over the C = N / CHUNK chunk masses, relative to the largest),
    then an entry of that chunk (relative to the chunk's largest), whose chunk mass is then
    recomputed without it. Everything after the first pass is float64 and relative to a
    maximum, so nothing underflows that a draw could still reach (a cold `temp 0.01` draws
    its candidates in score order, as it should). When fewer than n entries are possible
    (-inf scores), the remaining draws take the lowest indices not drawn yet.
    """
    b, size = scores.shape
    n = u.shape[1]
    pad = -size % CHUNK
    x = scores.float()
    if pad:
        x = torch.nn.functional.pad(x, (0, pad), value=float("-inf"))
    x3 = x.view(b, -1, CHUNK)
    top = x3.amax(-1, keepdim=True)
    mass = torch.exp(x3 - top.clamp(min=-1e30)).sum(-1, dtype=torch.float64)
    logmass = mass.log() + top.squeeze(-1)                                # [B, C]; empty: -inf
    drawn = torch.full((b, n), -1, dtype=torch.long, device=scores.device)
    slots = torch.arange(n, device=scores.device)
    onehot = slots[:, None] == slots  # row j marks draw j: one compiled region serves every draw
    for j in range(n):
        logmass, drawn = _draw_one(x3, logmass, drawn, u, onehot[j])
    return drawn


def _last_positive(w: torch.Tensor) -> torch.Tensor:
    """[B, 1]: the last index with w > 0 (-1 if none)."""
    return torch.where(w > 0, torch.arange(w.shape[-1], device=w.device), -1).amax(-1, keepdim=True)


def _pick(w: torch.Tensor, u: torch.Tensor):
    """Inverse CDF over non-negative weights w [B, M] (float64) at u [B, 1] in [0, 1):
    (index [B, 1] with w > 0, the fraction of that entry's weight below the point)."""
    cum = w.cumsum(-1)
    target = u * cum[:, -1:]
    i = torch.minimum((cum <= target).sum(-1, keepdim=True), _last_positive(w))
    i = i.clamp(min=0)
    wi = w.gather(1, i)
    below = (target - (cum.gather(1, i) - wi)).clamp(min=0.0)
    return i, (below / torch.where(wi > 0, wi, 1.0)).clamp(max=1.0 - 2.0**-53)


def _draw_step(x3: torch.Tensor, logmass: torch.Tensor, drawn: torch.Tensor, u: torch.Tensor,
               slot: torch.Tensor):
    """The draw `slot` ([n] bool, one True) of `draw`: (chunk log-masses without the entry
    drawn, `drawn` with it written in its slot)."""
    b, _, size = x3.shape
    n = drawn.shape[1]
    dev = x3.device
    u = torch.where(slot, u, 0.0).sum(-1)  # this draw's uniform
    peak = logmass.amax(-1, keepdim=True)
    alive = peak > float("-inf")                                       # anything left to draw
    c, frac = _pick(torch.exp(logmass - torch.where(alive, peak, 0.0)), u[:, None].double())
    pos = c * size + torch.arange(size, device=dev)                    # [B, CHUNK] global indices
    taken = (pos[:, :, None] == drawn[:, None, :]).any(-1)
    chunk = x3.gather(1, c[:, :, None].expand(b, 1, size)).squeeze(1).double()
    row = torch.where(taken, float("-inf"), chunk)
    top = row.amax(-1, keepdim=True)
    w = torch.exp(row - torch.where(top > float("-inf"), top, 0.0))
    i, _ = _pick(w, frac)
    rest = torch.where(torch.arange(size, device=dev) == i, float("-inf"), row)  # the chunk without it
    top = rest.amax(-1, keepdim=True)
    left = torch.exp(rest - torch.where(top > float("-inf"), top, 0.0)).sum(-1, keepdim=True).log() + top
    logmass = logmass.scatter(1, c, torch.where(alive, left, logmass.gather(1, c)))
    # nothing possible left: the lowest index not drawn (one of 0..n)
    low = torch.arange(n + 1, device=dev)
    free = ~(low[None, :, None] == drawn[:, None, :]).any(-1)
    filler = torch.argmax(free.int(), -1, keepdim=True)
    idx = torch.where(alive, c * size + i, filler)
    return logmass, torch.where(slot, idx, drawn)


# one region, compiled once and called for every draw of every group
_region = getattr(torch.compiler, "nested_compile_region", None)
_draw_one = _draw_step if _region is None else _region(_draw_step)
