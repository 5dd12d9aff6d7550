"""`repetition R`: CTRL repetition penalty (Keskar et al. 2019; RepetitionPenaltyLogitsProcessor).

Every token present anywhere in the row's history (prompt and generated, valid slots
only) has its logit divided by R if positive, multiplied by R if negative. The tokens seen
are kept as running state: counted once from the prompt, then each chosen token is added.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import token_counts

STATIC = frozenset()


def init(ctx, vocab: int, r) -> dict:
    return {"seen": token_counts(ctx.tokens, ctx.valid, vocab) > 0}


def apply(logits: torch.Tensor, ctx, state, r) -> torch.Tensor:
    penalised = torch.where(logits < 0, logits * r, logits / r)
    return torch.where(state["seen"], penalised, logits)


def accept(state, tokens, scores, r) -> dict:
    return {"seen": state["seen"].scatter(1, tokens[:, None], True)}
