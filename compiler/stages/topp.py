"""`topp P`: nucleus sampling (transformers' TopPLogitsWarper).

The reference's definition: sort ascending, drop every token whose cumulative
probability is <= 1 - P, never the `keep` most likely ones. Equivalently a token stays
iff the probability mass of the tokens above it is < P.

The sort costs more than the rest of a small model's step, so with keep=1 the cut is
found by a radix search instead (32 masked sums over the row). That agrees with the
reference except where the reference's own rounding or tie order decides: tokens tied
at the cut, or a mass within 2e-6 of P. A row like that anywhere in the batch sends the
whole batch through the reference's sort (torch.cond), so the result is the reference's
in every case. P arrives as a float32 tensor, so 1 - P can differ from the reference's
float64 1 - P in the last float32 bit: a cumulative sum landing exactly there is cut
differently. `keep` is static: a sweep over P reuses the compiled step.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, order_keys, radix_max, unsort

STATIC = frozenset({"keep"})
MARGIN = 2e-6  # masses this close to P are left to the reference's own arithmetic


def _by_sort(logits: torch.Tensor, p: torch.Tensor, keep: int) -> torch.Tensor:
    v = logits.shape[-1]
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    position = torch.arange(v, device=logits.device)
    drop = (cumulative <= 1 - p) & (position < v - keep)
    return logits.masked_fill(unsort(drop, sorted_idx), NEG_INF)


def apply(logits: torch.Tensor, ctx, p, keep=1) -> torch.Tensor:
    p = torch.as_tensor(p, device=logits.device, dtype=torch.float32)
    if int(keep) != 1:
        return _by_sort(logits, p, int(keep))
    probs = torch.softmax(logits, dim=-1)
    keys = order_keys(logits)
    # the largest cut c holding mass >= P at or above it: tokens at or above c have less
    # than P above them (stay), tokens below have at least P above them (go)
    cut = radix_max(keys, lambda m: (probs * m).sum(-1, keepdim=True) >= p)
    at_or_above = (probs * (keys >= cut)).sum(-1, keepdim=True)
    above = (probs * (keys > cut)).sum(-1, keepdim=True)
    tied = (keys == cut).sum(-1, keepdim=True) > 1
    close = ((at_or_above - p).abs() < MARGIN) | ((above - p).abs() < MARGIN)
    fast = logits.masked_fill(keys < cut, NEG_INF)
    ambiguous = (tied | close).any()
    if not torch.compiler.is_compiling():  # eager: a plain branch (torch.cond would trace)
        return _by_sort(logits, p, 1) if bool(ambiguous) else fast
    operands = (logits.contiguous(), p, fast.contiguous())
    return torch.cond(ambiguous, lambda x, q, f: _by_sort(x, q, 1), lambda x, q, f: f.clone(), operands)
