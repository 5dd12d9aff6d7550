"""`mirostat1 [tau=5.0] [eta=0.1] [m=100]`: Mirostat 1.0 (Basu et al. 2021, Algorithm 1) as llama.cpp's
mirostat. From the M most likely tokens it estimates the Zipf exponent s of the row, keeps the k
most likely tokens, k = (e·2^mu / (1 - V^-e))^(1/s) with e = s - 1, and draws one (Gumbel-max);
mu (bits, 2·tau at first) then moves by eta·(the draw's surprise - tau), as in `mirostat`.
M is static: it fixes the shape of the estimate."""
import math

import torch

from decode.compiler.stages import mirostat
from decode.compiler.stages._common import kth_largest_from, top_values

STATIC = frozenset({"m"})
select = mirostat.select  # the draw itself, as llama.cpp's mirostat samplers bring


def init(ctx, vocab: int, tau, eta, m) -> dict:
    return mirostat.init(ctx, vocab, tau, eta)


def apply(logits: torch.Tensor, ctx, state, tau, eta, m) -> torch.Tensor:
    vocab = logits.shape[-1]  # the estimate reads only differences and order: logits serve as log-probs
    top = top_values(logits, min(m, vocab))                       # [R, M], most likely first
    i = torch.arange(1, top.shape[1], device=logits.device, dtype=logits.dtype)
    t = torch.log((i + 1) / i)                                      # log((i+1)/i), i = 1..M-1
    both = torch.isfinite(top[:, 1:])                               # pairs of possible tokens
    b = torch.where(both, top[:, :-1] - top[:, 1:], 0.0)            # log(p_i / p_(i+1))
    s = (t * b).sum(-1) / torch.where(both, t * t, 0.0).sum(-1)
    e = s - 1
    k = (e * torch.exp2(state["mu"]) / (1 - torch.pow(float(vocab), -e))).pow(1 / s)
    k = torch.nan_to_num(k, nan=1.0, posinf=vocab).clamp(1, vocab).floor()  # 0/0 (one pair or none): 1
    keep = logits >= kth_largest_from(logits, top, k.long()[:, None])
    return logits.masked_fill(~keep, -math.inf)


def accept(state, tokens, scores, tau, eta, m) -> dict:
    return mirostat.accept(state, tokens, scores, tau, eta)
