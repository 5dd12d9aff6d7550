"""`lengthdecay start=N factor=F`: past N new tokens, raise the EOS logits exponentially
(transformers' ExponentialDecayLengthPenalty, `exponential_decay_length_penalty=(N, F)`):
while choosing new token N + k + 1 (k >= 1), an EOS logit x becomes x + |x|·(F**k - 1).

Where the reference breaks, this does not: an EOS logit already -inf (an earlier `minnew`)
stays -inf (the reference makes it NaN, -inf + inf), and F**k - 1 stops at 1e20 (EOS is
then certain; past it float32 overflows). F**k is float32 (the reference's is float64,
rounded to float32 when it multiplies): equal to float32 rounding.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import eos_mask

STATIC = frozenset()
NEEDS = frozenset({"eos"})  # it raises the EOS logits (decode.transform checks)
CAP = 1e20  # the largest growth factor (dsl.spec.SCALE)


def apply(logits: torch.Tensor, ctx, start, factor) -> torch.Tensor:
    k = ctx.new_len - start
    grow = (factor ** k.to(torch.float32) - 1).clamp(max=CAP)
    is_eos = eos_mask(ctx, torch.arange(logits.shape[-1], device=logits.device))
    raised = logits + logits.abs() * grow.to(logits.dtype)
    return torch.where(is_eos & (k > 0) & torch.isfinite(logits), raised, logits)
