"""`watermark`: the green-list watermark of Kirchenbauer et al. 2023 (transformers'
WatermarkLogitsProcessor): DELTA is added to the logits of the green tokens, a fraction
GAMMA of the vocabulary drawn from the previous token (lefthash) or, for each of the 40
likeliest tokens, from that token itself (selfhash). A row with fewer than WIDTH tokens of
history is left as it is. The greenlists come from tables drawn once on the host exactly
as transformers draws them (_greenlist.py); the step gathers from them.
"""
from __future__ import annotations

import torch

from decode.compiler.stages import _greenlist

STATIC = frozenset({"scheme", "width"})


def tables(params: dict, vocab: int, device) -> dict:
    green = _greenlist.table(vocab, params["gamma"], params["key"], params["scheme"])
    return {"green": green.to(device)}


def apply(logits: torch.Tensor, ctx, gamma, delta, key, scheme, width, green) -> torch.Tensor:
    rows = logits.shape[0]
    enough = ctx.valid.sum(-1, keepdim=True) >= width  # transformers skips shorter histories
    if scheme == "selfhash":
        mask = green[None, :] & _greenlist.candidates(logits)
    else:
        last = ctx.tokens.gather(1, (ctx.length - 1).clamp(min=0).expand(rows, 1))
        mask = _greenlist.unpack(green[last.squeeze(1)], logits.shape[-1])
    return torch.where(mask & enough, logits + delta, logits)
