"""Mirostat 2.0 as a user search: the plugin decode shipped before `mirostat` became a
built-in stage, kept as the oracle that stage is checked against token for token (ported to
the `Choice` interface; its selection, a Gumbel-max draw, is the one it always had).

Each row keeps a bound mu (bits, 2·tau at first): tokens more surprising than mu are
dropped (never the likeliest), one is drawn from the rest renormalised, and
mu -= eta·(its surprise - tau).
"""
import math

import torch

import decode
from decode.compiler.search.base import gumbel as decode_gumbel


@decode.search(
    "mirostat_search",
    args=[decode.Arg("n", int, 1, lo=1, doc="independent samples per prompt"),
          decode.Arg("tau", float, 5.0, lo=0.0, lo_open=True, keyword=True, doc="target surprise, bits/token"),
          decode.Arg("eta", float, 0.1, lo=0.0, keyword=True, doc="how fast mu follows the error")],
    doc="Mirostat 2.0 as a search: sample below a surprise bound that adapts to track TAU",
    cite="Basu et al. 2021, Mirostat (ICLR 2021, arXiv:2007.14966)", sampling=True)
class MirostatSearch(decode.Search):
    logprobs = False  # stages see raw logits, as in `sample`
    ranked = False    # samples come back in row order
    rows = property(lambda self: self.cfg.params["n"])

    def hyper(self):
        return {"tau": self.cfg.params["tau"], "eta": self.cfg.params["eta"]}

    def init(self, device, seq_len):
        return {"mu": torch.full((self.cfg.batch * self.rows,), 2 * self.cfg.params["tau"], device=device)}

    def step(self, scores, at, state):
        logp = torch.log_softmax(at.process(scores, None), dim=-1)
        keep = (-logp / math.log(2) <= state["mu"][:, None]) | (logp == logp.max(-1, keepdim=True).values)
        logq = torch.log_softmax(logp.masked_fill(~keep, -math.inf), dim=-1)
        tok = torch.argmax(logq + (0 if at.noise is None else decode_gumbel(at.noise)), dim=-1)
        got = logq.gather(1, tok[:, None]).squeeze(1)  # log-prob of the draw, natural log
        mu = torch.where(at.alive, state["mu"] - at.hp["eta"] * (-got / math.log(2) - at.hp["tau"]), state["mu"])
        return decode.Choice(tok, None, at.score + got, {"mu": mu})
