"""`repetition R`: CTRL repetition penalty (Keskar et al. 2019; RepetitionPenaltyLogitsProcessor).

Every token present anywhere in the row's history (prompt and generated, valid slots
only) has its logit divided by R if positive, multiplied by R if negative.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import token_counts

STATIC = frozenset()


def apply(logits: torch.Tensor, ctx, r) -> torch.Tensor:
    seen = token_counts(ctx.tokens, ctx.valid, logits.shape[-1]) > 0
    penalised = torch.where(logits < 0, logits * r, logits / r)
    return torch.where(seen, penalised, logits)
