"""`dry [BREAKERS...] [multiplier=0.8] [base=1.75] [allowed=2] [last=N]`: DRY, "Don't Repeat
Yourself" (p-e-w 2024), as llama.cpp's dry sampler.

A token that would extend a repeat of n >= ALLOWED tokens already in the history (the last
N tokens with `last`) loses MULTIPLIER·BASE^(n - ALLOWED) from its logit. A repeat never
reaches back past a sequence breaker (each text tokenised as `ban` does), and a one-token
breaker is never penalised. The repeats are running state (_dry.py), moved with the rows.
"""
from __future__ import annotations

import torch

from decode.compiler.stages import _dry
from decode.compiler.stages._common import encode_all

STATIC = frozenset({"ids"})
NEEDS = frozenset({"tokenizer"})  # the breakers' texts -> token ids


def prepare(params: dict, tokenizer) -> dict:
    """{"breakers": [text, ...]} -> {"ids": ((id, ...), ...)}; given "ids" pass through."""
    if "ids" in params:
        return {**params, "ids": tuple(tuple(int(i) for i in s) for s in params["ids"])}
    return {**{k: v for k, v in params.items() if k != "breakers"}, "ids": encode_all(params["breakers"], tokenizer)}


def init(ctx, vocab: int, **params) -> dict:
    return _dry.history(ctx)


def apply(logits: torch.Tensor, ctx, state, multiplier, base, allowed, ids, last=None) -> torch.Tensor:
    return logits - _dry.penalty(logits, state, multiplier, base, allowed, ids, last)


def accept(state, tokens, scores, **params) -> dict:
    run = _dry.extend(state["hist"], state["run"], tokens, state["len"])
    hist = state["hist"].scatter(1, state["len"][:, None], tokens[:, None])
    return {"hist": hist, "run": run, "len": state["len"] + 1}
