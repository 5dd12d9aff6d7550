"""`suppress_at_start ID...`: the first new token is none of these (transformers'
SuppressTokensAtBeginLogitsProcessor, `begin_suppress_tokens`).

For a decoder-only model the reference's "begin" is the first new token, or the second
when `forced_bos_token_id` forces the first (a one-token prompt): `after_bos` is set from
the recipe (a `force_bos` clause; catalogue `lower`) and is part of the graph's structure.
"""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, at_tokens, in_vocab

STATIC = frozenset({"token_ids", "after_bos"})


def prepare(params: dict, tokenizer) -> dict:
    """{"token_ids": [id, ...], "after_bos"?} -> the ids as a tuple, duplicates dropped."""
    return {"token_ids": tuple(dict.fromkeys(int(i) for i in params["token_ids"])),
            "after_bos": bool(params.get("after_bos", False))}


def validate(params: dict, vocab: int) -> None:
    in_vocab("suppress_at_start", params["token_ids"], vocab)


def apply(logits: torch.Tensor, ctx, token_ids, after_bos: bool = False) -> torch.Tensor:
    begin = 0
    if after_bos:  # a row of a one-token prompt begins after the forced token
        begin = (ctx.valid.sum(-1, keepdim=True) - ctx.new_len == 1).long()
    return logits.masked_fill((ctx.new_len == begin) & at_tokens(logits, token_ids), NEG_INF)
