"""`suppress ID...`: never choose these tokens (transformers' SuppressTokensLogitsProcessor,
`suppress_tokens`): their scores are -inf at every step."""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, at_tokens, in_vocab

STATIC = frozenset({"ids"})


def prepare(params: dict, tokenizer) -> dict:
    """{"ids": [id, ...]} -> {"ids": (id, ...)}, duplicates dropped."""
    return {"ids": tuple(dict.fromkeys(int(i) for i in params["ids"]))}


def validate(params: dict, vocab: int) -> None:
    in_vocab("suppress", params["ids"], vocab)


def apply(logits: torch.Tensor, ctx, ids) -> torch.Tensor:
    return logits.masked_fill(at_tokens(logits, ids), NEG_INF)
