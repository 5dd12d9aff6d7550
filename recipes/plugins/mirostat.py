"""`mirostat [n] [tau=5.0] [eta=0.1]`: Mirostat 2.0 sampling as a user-defined search (Basu et al.
2021, "Mirostat: A Neural Text Decoding Algorithm that Directly Controls Perplexity", ICLR 2021,
arXiv:2007.14966; the 2.0 update of the authors' code and llama.cpp's mirostat_v2). Each row
keeps a bound mu (bits, 2·tau at first): tokens more surprising than mu are dropped (never the
likeliest), one is drawn from the rest renormalised, and mu -= eta·(its surprise - tau), so the
surprise per token tracks tau. mu depends on the draws: search state, not a logit stage.

    $ decode run --stage recipes/plugins/mirostat.py "mirostat tau=3 | max 48" --prompt "ROMEO:"
"""
import math

import torch

import decode
from decode.compiler.search.base import candidates, gumbel, trim


@decode.search(
    "mirostat",
    args=[decode.Arg("n", int, 1, lo=1, doc="independent samples per prompt"),
          decode.Arg("tau", float, 5.0, lo=0.0, lo_open=True, keyword=True, doc="target surprise, bits/token"),
          decode.Arg("eta", float, 0.1, lo=0.0, keyword=True, doc="how fast mu follows the error")],
    doc="Mirostat 2.0: sample below a surprise bound that adapts so the text's surprise per token tracks TAU",
    cite="Basu et al. 2021, Mirostat (ICLR 2021, arXiv:2007.14966); the 2.0 update as in llama.cpp",
    sampling=True)
class Mirostat(decode.Search):
    logprobs = False  # stages see raw logits, as in `sample`
    rows = property(lambda self: self.cfg.params["n"])  # rows per prompt

    def hyper(self):
        return {"tau": self.cfg.params["tau"], "eta": self.cfg.params["eta"]}

    def init(self, device, seq_len):
        r = self.cfg.batch * self.rows
        return {"mu": torch.full((r,), 2 * self.cfg.params["tau"], device=device),
                "alive": torch.ones(r, dtype=torch.bool, device=device), "score": torch.zeros(r, device=device)}

    def step(self, t, scores, process, noise, seq, lim, hp, state):
        logp = torch.log_softmax(process(scores, None), dim=-1)
        keep = (-logp / math.log(2) <= state["mu"][:, None]) | (logp == logp.max(-1, keepdim=True).values)
        logq = torch.log_softmax(logp.masked_fill(~keep, -math.inf), dim=-1)
        tok = torch.argmax(logq + (0 if noise is None else gumbel(noise)), dim=-1)
        alive = state["alive"]
        tok = torch.where(alive, tok, self.cfg.pad)
        got = logq.gather(1, tok[:, None]).squeeze(1)  # log-prob of the draw, natural log
        mu = torch.where(alive, state["mu"] - hp["eta"] * (-got / math.log(2) - hp["tau"]), state["mu"])
        new = {"mu": mu, "alive": alive & ~self.is_eos(tok), "score": state["score"] + torch.where(alive, got, 0.0)}
        rows = torch.arange(tok.shape[0], device=tok.device)  # for traces: one candidate per row, its draw
        cands = (tok, got, rows, alive, alive & ~new["alive"])
        return tok, None, new, candidates(*(x.view(self.cfg.batch, -1) for x in cands)) if self.cfg.trace else {}

    def done(self, state):
        return ~state["alive"].any()

    def finalize(self, state, seq, lim):
        ids, scores, n = seq[:, int(lim["prompt"]):].tolist(), state["score"].tolist(), self.rows
        rows = [(*trim(x, self.cfg.eos), s) for x, s in zip(ids, scores)]  # (ids, finish, score)
        return [[(i, s, why) for i, why, s in rows[b * n:(b + 1) * n]] for b in range(self.cfg.batch)]
