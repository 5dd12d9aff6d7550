"""`mirostat [tau=5.0] [eta=0.1]`: Mirostat 2.0 (Basu et al. 2021) as llama.cpp's mirostat_v2, with
state and its own selection. Each row keeps a bound mu (bits, 2·tau at first): tokens more surprising
are dropped (never the likeliest), one is drawn by Gumbel-max, and mu moves by eta·(its surprise - tau)."""
import math

import torch

from decode.compiler.search.draw import gumbel

STATIC = frozenset()
BITS = math.log(2)


def init(ctx, vocab: int, tau, eta) -> dict:
    return {"mu": (2 * tau).expand(ctx.tokens.shape[0]).clone()}


def apply(logits: torch.Tensor, ctx, state, tau, eta) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    keep = (-logp / BITS <= state["mu"][:, None]) | (logp == logp.max(-1, keepdim=True).values)
    return logp.masked_fill(~keep, -math.inf)


def select(logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return torch.argmax(logp + gumbel(u), dim=-1)  # the draw, given the log-probs selection sees


def accept(state, tokens, scores, tau, eta) -> dict:
    got = torch.log_softmax(scores, dim=-1).gather(1, tokens[:, None]).squeeze(1)  # the draw's log-prob
    return {"mu": torch.where(torch.isfinite(got), state["mu"] - eta * (-got / BITS - tau), state["mu"])}
