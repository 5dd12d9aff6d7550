"""`force_eos`: the last token `max` allows is end-of-sequence (transformers'
ForcedEOSTokenLogitsProcessor with forced_eos_token_id = the model's EOS ids): at new
token `max` every other token scores -inf and the EOS ids score 0. Without a known
`max` (the context has none) it does nothing.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, eos_mask

STATIC = frozenset()
NEEDS = frozenset({"eos"})  # it forces the EOS ids (decode.transform checks)


def apply(logits: torch.Tensor, ctx) -> torch.Tensor:
    if ctx.max_new is None:
        return logits.clone()
    is_eos = eos_mask(ctx, torch.arange(logits.shape[-1], device=logits.device))
    forced = torch.where(is_eos, 0.0, NEG_INF).to(logits.dtype)
    return torch.where(ctx.new_len == ctx.max_new - 1, forced, logits)
