"""What the searches that read hidden states share (cluster.py, npad.py, diverse.py's
kind=embedding): a continuation's vector, k-means with static shapes, round-robin order
over clusters, and Gaussian noise from the rows' keys.

A continuation (row r, token x) has, when it is chosen, only the hidden state h_r of the
row it continues (the state whose output head scored x) and the token's output embedding
w_x (the head's row for x), both from the forward that gave this step's scores; its vector
is unit(h_r) + unit(w_x), and two continuations are as close as the cosine of their vectors:
children of one row differ by their tokens, the same token after two rows by the rows.
"""
from __future__ import annotations

import math

import torch

from decode.compiler.noise import stream, uniform

ITERS = 10  # Lloyd iterations of k-means: fixed, so the step's graph is static
STREAM = 0x4E504144  # "NPAD": the Gaussians' stream (noise.stream), apart from selection's draws


def unit(x: torch.Tensor) -> torch.Tensor:
    """x [.., d] scaled to length 1 (a zero vector stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-30)


def vectors(at, rows: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """[B, n, d] float64: the vectors of continuations (rows [B, n] of the step, tokens [B, n])."""
    return unit(at.hidden.double())[rows] + unit(at.head.double())[tok]


def closest(at, rows: torch.Tensor, chosen: torch.Tensor, ctok: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, s, V] float64: for every continuation of rows [B, s] by each token, its largest cosine
    with the continuations `chosen` rows [B, Y] took with `ctok` [B, Y] (those `valid` [B, Y];
    0 when none is). The cosine of a + e_x and c + e_y (all unit) is (a·c + a·e_y + e_x·c +
    e_x·e_y) / sqrt((2 + 2 a·e_x)(2 + 2 c·e_y)): one [V, Y] product, no [s, V, d] tensor."""
    h, e = unit(at.hidden.double()), unit(at.head.double())
    a, c, ey = h[rows], h[chosen], e[ctok]                              # [B, s, d], [B, Y, d], [B, Y, d]
    ac, aey = a @ c.transpose(1, 2), a @ ey.transpose(1, 2)             # [B, s, Y]
    exc, exey = e @ c.transpose(1, 2), e @ ey.transpose(1, 2)           # [B, V, Y] (e: [V, d] broadcast)
    aex, cey = a @ e.T, (c * ey).sum(-1)                                # [B, s, V], [B, Y]
    dot = (ac + aey)[:, :, None, :] + (exc + exey)[:, None, :, :]       # [B, s, V, Y]
    norm = ((2 + 2 * aex)[..., None] * (2 + 2 * cey)[:, None, None, :]).clamp(min=1e-30).sqrt()
    cos = torch.where(valid[:, None, None, :], dot / norm, -math.inf).amax(-1)
    return torch.where(torch.isfinite(cos), cos, 0.0)


def beside(at, rows: torch.Tensor, earlier: list) -> torch.Tensor:
    """[B, s, V]: `closest` for continuations of rows [B, s] against the choices at this step of
    the `earlier` groups that still search (groups.py: (their rows, searching, parents))."""
    if not earlier:
        return torch.zeros(*rows.shape, at.head.shape[0], dtype=torch.float64, device=rows.device)
    chosen = torch.cat([p for *_, p in earlier], 1)                                   # [B, Y]
    tok = torch.cat([x.gather(2, (at.prompt + at.t).expand(*x.shape[:2], 1))[..., 0] for x, *_ in earlier], 1)
    valid = torch.cat([a[:, None].expand(-1, p.shape[1]) for _, a, p in earlier], 1)
    return closest(at, rows, chosen, tok, valid)


def kmeans(x: torch.Tensor, c: int, iters: int = ITERS) -> torch.Tensor:
    """[B, n] the cluster (0..c-1) of each of the points x [B, n, d]: the first centre is the
    first point, each next one the point farthest from the centres so far (the first of equals),
    then `iters` Lloyd steps (an empty cluster keeps its centre); nearest centre, lowest index."""
    centres = x[:, :1]
    for _ in range(c - 1):
        far = ((x[:, :, None] - centres[:, None]) ** 2).sum(-1).amin(-1).argmax(-1)   # [B]
        centres = torch.cat([centres, x.gather(1, far.view(-1, 1, 1).expand(-1, 1, x.shape[-1]))], 1)
    for _ in range(iters + 1):
        near = ((x[:, :, None] - centres[:, None]) ** 2).sum(-1).argmin(-1)             # [B, n]
        member = torch.nn.functional.one_hot(near, c).to(x.dtype)                       # [B, n, c]
        count = member.sum(1)[..., None]
        centres = torch.where(count > 0, member.transpose(1, 2) @ x / count.clamp(min=1), centres)
    return near


def round_robin(group: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """[B, n] an order of n candidates (given best first) that takes each cluster's best, the
    clusters in the order of their bests, then each one's second, and so on; `last` [B, n]:
    candidates that go after all others (impossible ones)."""
    n = group.shape[1]
    same = group[:, :, None] == group[:, None, :]
    before = torch.ones(n, n, dtype=torch.bool, device=group.device).tril(-1)
    rank = (same & before).sum(-1)                                       # its place within its cluster
    first = (same & ~before.T).to(torch.int8).argmax(-1)                 # where its cluster's best stands
    key = (rank * n + first) + last.long() * n * n
    return torch.sort(key, dim=1, stable=True).indices


def gaussian(keys: torch.Tensor, t: torch.Tensor, d: int) -> torch.Tensor:
    """[R, d] standard normal draws for step t of rows `keys` (Box-Muller from their uniforms,
    in a stream of their own: selection's draws at step t' read counters t'·V + v, which
    the Gaussians' t·2d + j would meet, so a sampled token would hang on the noise)."""
    u = uniform(stream(keys, STREAM), t, 2 * d).double()
    return (torch.sqrt(-2 * torch.log(u[:, :d])) * torch.cos(2 * math.pi * u[:, d:])).float()
