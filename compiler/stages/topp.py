"""`topp P`: nucleus sampling (transformers' TopPLogitsWarper).

The reference's definition: sort ascending, drop every token whose cumulative
probability is <= 1 - P, never the `keep` most likely ones. Equivalently a token stays
iff the probability mass of the tokens above it is < P.

The sort costs more than the rest of a small model's step, so on CPU with keep=1 the
cut is found by a radix search instead: 30 masked sums over the row, bit by bit through
the float32 patterns of exp(logit - max) (non-negative floats order like their bits, so
one array holds both the keys and the masses).

- Eager, the stage equals the processor bit for bit: a row whose cut splits tied tokens
  (the reference keeps them in its sort's order, which on CPU is not index order), or
  whose cut's mass lies within 2e-6 of P (where the reference's own float32 softmax and
  cumulative sum decide), goes through the reference's sort.
- Compiled, the step has no branch and no sort: the radix cut is the answer, and every
  token tied with the cut token stays. It differs from the reference only where the
  reference splits a tie (arbitrarily) or where rounding decides (its masses differ from
  exact sums by up to 7e-7, measured), in the tokens at the cut, which a draw picks with
  their probability (~3e-5 each on a flat 32k vocabulary).

On CUDA the sort is cheap and a data-dependent branch would break CUDA graphs, so the
reference's sort is used throughout. `keep` is static: a sweep over P reuses the
compiled step.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, unsort

STATIC = frozenset({"keep"})
MARGIN = 2e-6  # eager: masses this close to P are left to the reference's own arithmetic


def _by_sort(logits: torch.Tensor, p: torch.Tensor, keep: int) -> torch.Tensor:
    v = logits.shape[-1]
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    position = torch.arange(v, device=logits.device)
    drop = (cumulative <= 1 - p) & (position < v - keep)
    return logits.masked_fill(unsort(drop, sorted_idx), NEG_INF)


PASSES = 5  # radix passes per compiled region call


def _mass(e3: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[R, 1, 1]: the mass of e3 [R, CHUNKS, V / CHUNKS] where `keep`."""
    return torch.where(keep, e3, 0).sum(-1).sum(-1, keepdim=True)[:, :, None]


def _search(e3: torch.Tensor, target: torch.Tensor, cut: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Radix passes over `bits` ([PASSES] int32, one bit each, high to low): each keeps the
    bit in `cut` [R, 1, 1] if at least `target` of the mass lies at or above the result."""
    k3 = e3.view(torch.int32)
    for j in range(bits.shape[0]):
        cand = cut | bits[j]
        cut = torch.where(_mass(e3, k3 >= cand) >= target, cand, cut)
    return cut


# one region, compiled once and called 30 / PASSES times per top-p (and per group of a diverse
# search): a graph of all 30 passes took inductor's scheduler ~4 s more to compile, for ~15%
# less time per call (torch >= 2.8)
_region = getattr(torch.compiler, "nested_compile_region", None)
_passes = _search if _region is None else _region(_search)


def _radix(logits: torch.Tensor, p: torch.Tensor):
    """(logits with the tokens below the cut dropped, the cut splits a tie, the cut's mass
    is within MARGIN of P), the last two per row."""
    r, v = logits.shape
    x = logits.float()
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)  # mass, up to the row's constant
    # e >= 0 orders like its float32 bit pattern, so the search runs over those bits (29..0:
    # 1.0 is 0x3F800000) and reads one array. Sums run over [R, CHUNKS, V / CHUNKS]: short
    # float32 runs, added the same way every time.
    chunks = next(c for c in (16, 8, 4, 2, 1) if v % c == 0)
    e3 = e.view(r, chunks, -1)
    k3 = e3.view(torch.int32)

    target = p * e3.sum(-1).sum(-1, keepdim=True)[:, :, None]
    # the largest cut c with at least P of the mass at or above it: tokens at or above c
    # have less than P above them (stay), tokens below have at least P above them (go)
    cut = torch.zeros(r, 1, 1, dtype=torch.int32, device=x.device)
    bits = torch.bitwise_left_shift(torch.ones(30, dtype=torch.int32, device=x.device),
                                    torch.arange(29, -1, -1, dtype=torch.int32, device=x.device))
    for j in range(0, 30, PASSES):
        cut = _passes(e3, target, cut, bits[j:j + PASSES])
    kept = logits.masked_fill((k3 < cut).view(r, v), NEG_INF)
    if torch.compiler.is_compiling():
        return kept, None, None
    at_cut = k3 == cut
    n_cut = at_cut.sum((1, 2), keepdim=True)
    e_cut = cut.view(torch.float32)
    at_or_above = _mass(e3, k3 >= cut)
    above = at_or_above - n_cut * e_cut
    split = (n_cut > 1) & (at_or_above - e_cut >= target)
    margin = MARGIN * target / p
    close = ((at_or_above - target).abs() < margin) | ((above - target).abs() < margin)
    return kept, split.view(r, 1), close.view(r, 1)


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    p = torch.as_tensor(p, device=logits.device, dtype=torch.float32)
    if int(keep) != 1 or logits.device.type == "cuda":
        return _by_sort(logits, p, int(keep))
    if torch.compiler.is_compiling():
        return _radix(logits, p)[0]
    fast, split, close = _radix(logits, p)
    return _by_sort(logits, p, 1) if bool((split | close).any()) else fast
