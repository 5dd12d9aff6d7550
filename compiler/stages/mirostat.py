"""`mirostat [tau=5.0] [eta=0.1]`: Mirostat 2.0 (Basu et al. 2021, arXiv:2007.14966; the
2.0 update of the authors' code and llama.cpp's mirostat_v2), a stage with state.

Each row keeps a bound mu (bits, 2·tau at first): tokens more surprising than mu are
dropped (never the likeliest); selection then draws from the rest, renormalised, and mu
moves by eta·(the draw's surprise - tau), so the surprise per token tracks tau.
"""
from __future__ import annotations

import math

import torch

STATIC = frozenset()
BITS = math.log(2)


def init(ctx, vocab: int, tau, eta) -> dict:
    return {"mu": (2 * tau).expand(ctx.tokens.shape[0]).clone()}


def apply(logits: torch.Tensor, ctx, state, tau, eta) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    keep = (-logp / BITS <= state["mu"][:, None]) | (logp == logp.max(-1, keepdim=True).values)
    return logp.masked_fill(~keep, -math.inf)


def accept(state, tokens, scores, tau, eta) -> dict:
    got = torch.log_softmax(scores, dim=-1).gather(1, tokens[:, None]).squeeze(1)  # the draw's log-prob
    return {"mu": torch.where(torch.isfinite(got), state["mu"] - eta * (-got / BITS - tau), state["mu"])}
