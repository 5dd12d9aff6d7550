"""Beam search (and beam sampling), step for step the reference's vectorised `_beam_search`.

Each step ranks a prompt's K·V continuations by beam score + processed log-prob (`rescore`
may change that: siblings.py), takes the best 2K (`candidates`; or draws them, in draw order, as
the reference's `multinomial`), offers those that end (EOS, or the last step) among the first K
to the pool (pool.py: `early`, lenpen), goes on with the K best others (`survivors`)."""
from __future__ import annotations

import torch

from decode.compiler.search.base import result
from decode.compiler.search.pool import INF, BeamPool, carried, extended, merge, pool_state
from decode.compiler.search.record import candidates


class Beam(BeamPool):
    def survivors(self, top, k):  # the k of `top` [B, n] (-inf: ended) that go on: the best
        return torch.topk(top, k)

    def stage_params(self, spec, params):
        # a truncation keeps 1 + #EOS tokens in beam sampling, as the reference, so a beam can go on
        keep = spec.hf.keep if self.cfg.sampling and spec is not None and spec.hf is not None else None
        if keep in params:
            return {**params, keep: max(int(params[keep]), len(self.cfg.eos) + 1)}
        return params

    def begin(self, device, seq_len):
        b, k = self.cfg.batch, self.rows
        run = torch.zeros(b, k, device=device)
        run[:, 1:] = -INF  # only beam 0 is live at first, so the K beams do not start equal
        long, flag = {"dtype": torch.long, "device": device}, {"dtype": torch.bool, "device": device}
        return {"run": run, "seq": torch.full((b, k, seq_len), self.cfg.pad, **long),
                "score": torch.full((b, k), -INF, device=device), "len": torch.zeros(b, k, **long),
                "fin": torch.zeros(b, k, **flag), "open": torch.ones(b, 1, **flag), "stop": torch.zeros((), **flag),
                **pool_state(self.cfg, (b, k), seq_len, device)}

    def advance(self, scores, at, state):
        b, k, n, t = self.cfg.batch, self.rows, max(2, 1 + len(self.cfg.eos)) * self.rows, at.t
        v, dev, lenpen = scores.shape[-1], scores.device, at.hp["lenpen"]
        logp = at.process(scores, None).view(b, k, v)
        acc, penalty = self.rescore((logp + state["run"][..., None]).view(b, k * v), logp, at.hp)
        top, idx = self.candidates(acc, n, None if at.noise is None else at.noise.view(b, k * v), at)
        tok, parent = idx % v, idx // v + torch.arange(b, device=dev)[:, None] * k
        hits = self.is_eos(tok) | (t + 1 >= at.max_new)

        run, nxt = self.survivors(torch.where(hits, -INF, top), k)  # the k that go on: none that ended

        # offer the ended ones among the first k to the pool
        just = hits & (torch.arange(n, device=dev) < k) & (top > -INF)
        offered = state["open"] & just & ~(state["fin"].all(-1, keepdim=True) & (self.early is True))  # a full pool
        offer = torch.where(offered, top / (t + 1).to(top.dtype) ** lenpen, -INF)
        f_score, f_seq, f_len, sel = merge(state["score"], state["seq"], state["len"], offer,
                                           extended(at, parent, tok), (t + 1).expand(b, n))
        fin = torch.cat([state["fin"], just], 1).gather(1, sel)

        # can a running beam still beat the worst finished hypothesis?
        best = run.amax(1, keepdim=True) / self.bound_length(t + 1, at, lenpen) ** lenpen
        worst = torch.where(fin, f_score.min(1, keepdim=True).values, torch.full_like(f_score, -INF))
        open_ = state["open"] & (best > worst).any(-1, keepdim=True)
        full = fin.all() if self.early is True else torch.zeros((), dtype=torch.bool, device=dev)
        stop = state["stop"] | ~(open_.any() & ~full & ~hits.all())
        new = {"run": run, "seq": f_seq, "score": f_score, "len": f_len, "fin": fin, "open": open_, "stop": stop,
               **carried(state, at, parent, tok, sel)}  # the hypotheses' log-probs, if asked for
        info = None
        if at.trace:
            pooled = torch.zeros(b, k + n, dtype=torch.bool, device=dev).scatter(1, sel, True)[:, k:]
            kept = torch.zeros_like(hits).scatter(1, nxt, True) & ~hits | (pooled & just)
            info = candidates(tok, top, parent, kept, hits, penalty=None if penalty is None else penalty.gather(1, idx))
        return tok.gather(1, nxt).reshape(-1), parent.gather(1, nxt).reshape(-1), new, info

    def finalize(self, state, seq, lim):
        p, r = int(lim["prompt"]), self.returns
        seqs, scores, lens, lp = (state[x][:, :r].tolist() if x in state else None
                                  for x in ("seq", "score", "len", "lp"))  # lp: the tokens' log-probs, if asked for
        return [[result(seqs[b][j][p:p + lens[b][j]], scores[b][j], self.cfg.eos, lp and lp[b][j][p:p + lens[b][j]])
                 for j in range(r) if scores[b][j] != -INF]  # -inf: fewer hypotheses survived the stages
                for b in range(self.cfg.batch)]


STRATEGY = Beam
