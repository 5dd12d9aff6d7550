"""`repetition R`: CTRL repetition penalty (Keskar et al. 2019; RepetitionPenaltyLogitsProcessor).

Every token present anywhere in the row's history (prompt and generated, valid slots
only) has its logit divided by R if positive, multiplied by R if negative. The tokens seen
are kept as running state (uint8: inductor writes a bool [R, V] at a tenth of the speed):
counted once from the prompt, then each chosen token is added. With `last=N` only the last
N tokens of the history count (llama.cpp's penalty_last_n), counted afresh each step, and
the running state is left as it is.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import recent_counts, token_counts

STATIC = frozenset()


def init(ctx, vocab: int, r, last=None) -> dict:
    return {"seen": (token_counts(ctx.tokens, ctx.valid, vocab) > 0).to(torch.uint8)}


def apply(logits: torch.Tensor, ctx, state, r, last=None) -> torch.Tensor:
    seen = state["seen"] > 0 if last is None else recent_counts(ctx, ctx.valid, logits.shape[-1], last) > 0
    penalised = torch.where(logits < 0, logits * r, logits / r)
    return torch.where(seen, penalised, logits)


def accept(state, tokens, scores, r, last=None) -> dict:
    return state if last is not None else {"seen": state["seen"].scatter(1, tokens[:, None], 1)}
