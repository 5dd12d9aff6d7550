"""`minnew N`: no end-of-sequence before N new tokens (transformers'
MinNewTokensLengthLogitsProcessor, `min_new_tokens`; `minlen` counts the prompt too)."""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, eos_mask

STATIC = frozenset()
NEEDS = frozenset({"eos"})  # without EOS ids it would do nothing (decode.transform checks)


def apply(logits: torch.Tensor, ctx, n) -> torch.Tensor:
    is_eos = eos_mask(ctx, torch.arange(logits.shape[-1], device=logits.device))
    return torch.where(is_eos & (ctx.new_len < n), NEG_INF, logits)
