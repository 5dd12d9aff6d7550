"""`suppress ID...`: never choose these tokens (transformers' SuppressTokensLogitsProcessor,
`suppress_tokens`): their scores are -inf at every step."""
from __future__ import annotations

import torch

from decode.compiler.stages._common import NEG_INF, at_tokens, in_vocab

STATIC = frozenset({"token_ids"})


def prepare(params: dict, tokenizer) -> dict:
    """{"token_ids": [id, ...]} -> {"token_ids": (id, ...)}, duplicates dropped."""
    return {"token_ids": tuple(dict.fromkeys(int(i) for i in params["token_ids"]))}


def validate(params: dict, vocab: int) -> None:
    in_vocab("suppress", params["token_ids"], vocab)


def apply(logits: torch.Tensor, ctx, token_ids) -> torch.Tensor:
    return logits.masked_fill(at_tokens(logits, token_ids), NEG_INF)
