"""The nucleus cut of `topp` (topp.py), two ways: the reference's sort, and a radix search.

The reference's definition: sort ascending, drop every token whose cumulative
probability is <= 1 - P, never the `keep` most likely ones. P = 1 keeps every token, as
transformers' `generate` does (it adds no top-p warper for top_p=1.0; the warper alone
would drop the tokens whose probability underflows to 0).

The sort costs more than the rest of a small model's step, so on CPU with keep=1 the
cut is found by a radix search instead: 30 masked sums over the row, bit by bit through
the float32 patterns of exp(logit - max) (non-negative floats order like their bits, so
one array holds both the keys and the masses).

- Eager, the stage equals the processor bit for bit: a row whose cut splits tied tokens
  (the reference keeps them in its sort's order, which on CPU is not index order), or
  whose cut's mass lies within 2e-6 of 1 - P (where the reference's own float32 softmax
  and cumulative sum decide), goes through the reference's sort.
- Compiled, the step has no branch and no sort: the radix cut is the answer, and every
  token tied with the cut token stays. It differs from the reference only where the
  reference splits a tie (arbitrarily) or where rounding decides (its masses differ from
  exact sums by up to 7e-7, measured), in the tokens at the cut, which a draw picks with
  their probability (~3e-5 each on a flat 32k vocabulary). The mass a cut drops is
  summed from the small end, as the reference's ascending sum does, so a P near 1 never
  drops tokens whose mass only rounding hides.

On CUDA the sort is cheap and a data-dependent branch would break CUDA graphs, so the
reference's sort is used throughout. `keep` is static: a sweep over P reuses the
compiled step.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, unsort

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


def _search(e3: torch.Tensor, budget: torch.Tensor, cut: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Radix passes over `bits` ([PASSES] int32, one bit each, high to low): each keeps the
    bit in `cut` [R, 1, 1] if the mass strictly below the result is at most `budget`."""
    k3 = e3.view(torch.int32)
    for j in range(bits.shape[0]):
        cand = cut | bits[j]
        cut = torch.where(_mass(e3, k3 < cand) <= budget, cand, cut)
    return cut


# one region, compiled once and called 30 / PASSES times per top-p (and per group of a diverse
# search): a graph of all 30 passes took inductor's scheduler ~4 s more to compile, for ~15%
# less time per call (torch >= 2.8)
_region = getattr(torch.compiler, "nested_compile_region", None)
_passes = _search if _region is None else _region(_search)
ONE = 0x3F800000  # the bits of 1.0, the largest e: the most likely token always stays


def _radix(logits: torch.Tensor, p: torch.Tensor):
    """(logits with the tokens below the cut dropped, the cut splits a tie, the cut's mass
    is within MARGIN of 1 - P), the last two per row."""
    r, v = logits.shape
    x = logits.float()
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)  # mass, up to the row's constant
    # e >= 0 orders like its float32 bit pattern, so the search runs over those bits (29..0:
    # 1.0 is 0x3F800000) and reads one array. Sums run over [R, CHUNKS, V / CHUNKS]: short
    # float32 runs, added the same way every time.
    chunks = next(c for c in (16, 8, 4, 2, 1) if v % c == 0)
    e3 = e.view(r, chunks, -1)
    k3 = e3.view(torch.int32)

    total = e3.sum(-1).sum(-1, keepdim=True)[:, :, None]
    budget = (1 - p) * total
    # the largest cut c with at most 1 - P of the mass strictly below it: the reference
    # drops tokens from the least likely up while their running sum stays <= 1 - P. The
    # mass below the cut is summed on its own, as the reference's ascending sum does: next
    # to the large masses the near-zero ones would round away, and a cut by the mass at or
    # above c dropped thousands of them at P = 1
    cut = torch.zeros(r, 1, 1, dtype=torch.int32, device=x.device)
    bits = torch.bitwise_left_shift(torch.ones(30, dtype=torch.int32, device=x.device),
                                    torch.arange(29, -1, -1, dtype=torch.int32, device=x.device))
    for j in range(0, 30, PASSES):
        cut = _passes(e3, budget, cut, bits[j:j + PASSES])
    cut = torch.clamp(cut, max=ONE)
    kept = logits.masked_fill((k3 < cut).view(r, v), NEG_INF)
    if torch.compiler.is_compiling():
        return kept, None, None
    n_cut = (k3 == cut).sum((1, 2), keepdim=True)
    e_cut = cut.view(torch.float32)
    below = _mass(e3, k3 < cut)
    # the reference drops tied tokens one by one: it splits a tie if one more fits the budget
    split = (n_cut > 1) & (below + e_cut <= budget)
    margin = MARGIN * total
    close = ((below - budget).abs() < margin) | ((below + n_cut * e_cut - budget).abs() < margin)
    return kept, split.view(r, 1), close.view(r, 1)


def nucleus(logits: torch.Tensor, p: torch.Tensor, keep: int) -> torch.Tensor:
    if keep != 1 or logits.device.type == "cuda":
        return _by_sort(logits, p, keep)
    if torch.compiler.is_compiling():
        return _radix(logits, p)[0]
    fast, split, close = _radix(logits, p)
    return _by_sort(logits, p, 1) if bool((split | close).any()) else fast
