"""`norepeat N`: no n-gram of size N occurs twice in a row's history
(fairseq / transformers' NoRepeatNGramLogitsProcessor).

A token is banned when the last N-1 tokens followed by it form an n-gram already in the
history (prompt included, valid slots only). N is static: it fixes the window shape.
"""
from __future__ import annotations

import torch

from decode.compiler.context import StepContext
from decode.compiler.stages._common import NEG_INF, token_counts

STATIC = frozenset({"n"})


def apply(logits: torch.Tensor, ctx: StepContext, n: int) -> torch.Tensor:
    rows, slots = ctx.tokens.shape
    if n > slots:  # no n-gram fits in the buffer
        return logits.clone()
    windows = ctx.tokens.unfold(1, n, 1)                    # [R, W, n]
    seen = ctx.valid.unfold(1, n, 1).all(-1)                # [R, W] window lies in the history
    if n > 1:
        # the last n-1 tokens of every row (rows end at slot length-1)
        at = ctx.length - (n - 1) + torch.arange(n - 1, device=logits.device)
        at_ok = at >= 0
        at = at.clamp(min=0).expand(rows, n - 1)
        suffix = ctx.tokens.gather(1, at)
        suffix_ok = (ctx.valid.gather(1, at) & at_ok).all(-1, keepdim=True)
        seen = seen & suffix_ok & (windows[:, :, :-1] == suffix[:, None, :]).all(-1)
    banned = token_counts(windows[:, :, -1], seen, logits.shape[-1]) > 0
    return logits.masked_fill(banned, NEG_INF)
