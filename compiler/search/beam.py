"""Beam search (and beam sampling), step for step the reference's vectorised `_beam_search`.

Each step keeps the best 2K continuations over all K beams of a prompt (K = beams; 2 is
max(2, 1 + number of EOS ids)), continues the best K that did not end, and offers the
ones that ended among the top K to a static-size pool of finished hypotheses scored
sum(logprob) / generated_len ** lenpen. `early` decides when the pool may stop growing:
true (as soon as K hypotheses finished), false (when the best running beam, at its
current length, cannot beat the worst finished one), never (the same bound taken at the
longest possible length when lenpen > 0). With sampling, the 2K continuations are drawn
without replacement from softmax(accumulated scores), in draw order (`base.draw`: successive
sampling, as the reference's `multinomial`).

Where the reference marks an impossible beam or hypothesis with the score -1e9, this uses
-inf: a real score can fall below -1e9 (a cold temperature, a large sibling penalty), and
then the reference returns its filler beams as sequences. Both agree whenever every real
score is above -1e9; a hypothesis still at -inf at the end is not returned.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Search, candidates, draw

INF = float("inf")


class Beam(Search):
    logprobs = True
    keeps_eos_alternative = True  # sampling stages keep >= 1 + #EOS tokens (the reference's rule)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])
        ret = cfg.params.get("return")
        self.returns = self.rows if ret is None else int(ret)
        self.early = cfg.params.get("early", False)  # False | True | "never": structural
        self.keep = max(2, 1 + len(cfg.eos)) * self.rows

    def hyper(self):
        return {"lenpen": float(self.cfg.params.get("lenpen", 1.0))}

    def init(self, device, seq_len):
        b, k = self.cfg.batch, self.rows
        run = torch.zeros(b, k, device=device)
        run[:, 1:] = -INF  # only beam 0 is live at first, so the K beams do not start equal
        return {
            "run": run,
            "fin_seq": torch.full((b, k, seq_len), self.cfg.pad, dtype=torch.long, device=device),
            "fin_score": torch.full((b, k), -INF, device=device),
            "fin_len": torch.zeros(b, k, dtype=torch.long, device=device),
            "fin": torch.zeros(b, k, dtype=torch.bool, device=device),
            "open": torch.ones(b, 1, dtype=torch.bool, device=device),
            "stop": torch.zeros((), dtype=torch.bool, device=device),
        }

    def step(self, t, scores, process, noise, seq, lim, hp, state):
        b, k, n = self.cfg.batch, self.rows, self.keep
        v = scores.shape[-1]
        lenpen = hp["lenpen"]
        logp = process(scores, None).view(b, k, v)
        acc = (logp + state["run"][..., None]).view(b, k * v)
        acc, penalty = self.rescore(acc, logp, hp)
        if self.cfg.sampling:
            idx = draw(acc, noise.view(b, k * v)[:, :n])  # the prompt's first n draws
            top = acc.gather(1, idx)
        else:
            top, idx = torch.topk(acc, n)
        beam, tok = idx // v, idx % v
        parent = beam + torch.arange(b, device=acc.device)[:, None] * k          # [b, n] rows
        slot = (lim["prompt"] + t).expand(b, n, 1)
        cand = seq[parent].scatter(2, slot, tok[..., None])                   # [b, n, S]
        hits = self.is_eos(tok) | (t + 1 >= lim["max_new"])

        # continue the best k continuations that did not end
        live = torch.where(hits, -INF, top)
        nxt = torch.topk(live, k).indices
        run = live.gather(1, nxt)
        tokens = tok.gather(1, nxt).reshape(-1)
        parents = parent.gather(1, nxt).reshape(-1)

        # offer the ended ones among the top k to the finished pool
        just = hits & (torch.arange(n, device=acc.device) < k) & (top > -INF)
        glen = (t + 1).to(acc.dtype)
        fscore = top / glen**lenpen
        offered = state["open"] & just
        if self.early is True:
            offered = offered & ~state["fin"].all(-1, keepdim=True)
        fscore = torch.where(offered, fscore, -INF)
        m_score = torch.cat([state["fin_score"], fscore], 1)
        sel = torch.topk(m_score, k).indices
        fin_score = m_score.gather(1, sel)
        fin_seq = torch.cat([state["fin_seq"], cand], 1).gather(1, sel[..., None].expand(b, k, cand.shape[-1]))
        fin_len = torch.cat([state["fin_len"], (t + 1).expand(b, n)], 1).gather(1, sel)
        fin = torch.cat([state["fin"], just], 1).gather(1, sel)

        # can a running beam still beat the worst finished hypothesis?
        if self.early == "never":
            best_len = torch.where(lenpen > 0, lim["max_new"], t + 1).to(acc.dtype)
        else:
            best_len = glen
        best = run[:, :1] / best_len**lenpen
        worst = torch.where(fin, fin_score.min(1, keepdim=True).values, torch.full_like(fin_score, -INF))
        open_ = state["open"] & (best > worst).any(-1, keepdim=True)
        full = fin.all() if self.early is True else torch.zeros((), dtype=torch.bool, device=acc.device)
        stop = state["stop"] | ~(open_.any() & ~full & ~hits.all())
        new = {"run": run, "fin_seq": fin_seq, "fin_score": fin_score, "fin_len": fin_len,
               "fin": fin, "open": open_, "stop": stop}
        info = {}
        if self.cfg.trace:
            pooled = torch.zeros(b, k + n, dtype=torch.bool, device=acc.device).scatter(1, sel, True)[:, k:]
            kept = torch.zeros_like(hits).scatter(1, nxt, True) & ~hits | (pooled & just)
            info = candidates(tok, top, parent, kept, hits,
                              penalty=None if penalty is None else penalty.gather(1, idx))
        return tokens, parents, new, info

    def rescore(self, acc, logp, hp):
        """The scores [B, K·V] (beam score + processed log-prob `logp` [B, K, V]) that
        selection ranks, and the penalty [B, K·V] subtracted to get them (None: none). A
        variant overrides this."""
        return acc, None

    def done(self, state):
        return state["stop"]

    def finalize(self, state, seq, lim):
        p = int(lim["prompt"])
        seqs = state["fin_seq"][:, : self.returns].tolist()
        scores = state["fin_score"][:, : self.returns].tolist()
        lens = state["fin_len"][:, : self.returns].tolist()
        out = []
        for b in range(self.cfg.batch):
            rows = []
            for j in range(self.returns):
                if scores[b][j] == -INF:  # never filled: fewer hypotheses survived the stages
                    continue
                ids = seqs[b][j][p : p + lens[b][j]]
                why = "eos" if ids and ids[-1] in self.cfg.eos else "max"
                rows.append((ids, scores[b][j], why))
            out.append(rows)
        return out


STRATEGY = Beam
