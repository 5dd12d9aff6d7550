"""Constrained beam search (`force`), step for step transformers' `_constrained_beam_search`
and its ConstrainedBeamSearchScorer (4.55.4); the constraints' state is _constraints.py.

Each step ranks the K·V continuations by beam score + processed log-prob and takes the 2K
best; those ending in EOS among the first K finish if their beam met every constraint. The
first K that do not end, and every token that advances a beam's constraints, are banked
by the progress they make, and K are taken round robin over the banks. At `max` the
running beams that met every constraint are offered (all of them if fewer than RETURN did).
"""
from __future__ import annotations

import torch

from decode.compiler.search import _constraints as C
from decode.compiler.search.base import result
from decode.compiler.search.pool import INF, BeamPool, _offer, extended, merge
from decode.compiler.search.record import candidates


class Force(BeamPool):
    def begin(self, device, seq_len):
        cfg, b, k = self.cfg, self.cfg.batch, self.rows
        tries = C.Tries.build(C.encode(cfg.modifiers["force"]["phrases"], cfg.tokenizer, cfg.vocab, cfg.max_new))
        self.T, self.branches = C.tensors(tries, device), tries.branches()
        read = C.read(C.tensors(tries, "cpu"), [list(p) for p in cfg.prompts], "cpu")  # on the host: a loop
        cons = {key: v.repeat_interleave(k, 0).to(device) for key, v in read.items()}
        run = torch.full((b, k), -INF, device=device)
        run[:, 0] = 0.0  # only beam 0 is live at first
        long = {"dtype": torch.long, "device": device}
        return {"run": run, "seq": torch.full((b, k, seq_len), cfg.pad, **long), "cons": cons,
                "score": torch.full((b, k), -INF, device=device), "len": torch.zeros(b, k, **long),
                "count": torch.zeros(b, **long), "done": torch.zeros(b, dtype=torch.bool, device=device),
                "stop": torch.zeros((), dtype=torch.bool, device=device)}

    def advance(self, scores, at, state):
        b, k, T, cons, t = self.cfg.batch, self.rows, self.T, state["cons"], at.t
        n, v, dev = max(2, 1 + len(self.cfg.eos)) * k, scores.shape[-1], scores.device
        acc = (at.process(scores, None).view(b, k, v) + state["run"][..., None]).view(b, k * v)
        top, idx = torch.topk(acc, n)
        tok, base, rank, stay = idx % v, torch.arange(b, device=dev)[:, None] * k, torch.arange(n, device=dev), state["done"]
        par, eos = base + idx // v, self.is_eos(tok)
        ends = eos & (rank < k) & C.met(cons)[par] & ~stay[:, None] & (top > -INF)
        offer = torch.where(ends, top / (t + 1).to(top.dtype) ** at.hp["lenpen"], -INF)
        pool = merge(state["score"], state["seq"], state["len"], offer, extended(at, par, tok), (t + 1).expand(b, n))
        count = torch.clamp(state["count"] + ends.sum(1), max=k)
        first = torch.sort(torch.where(eos, rank + n, rank), dim=1, stable=True).indices[:, :k]
        f_tok, f_par, f_sc = tok.gather(1, first), par.gather(1, first), top.gather(1, first)
        f_after = C.add(T, C.gather(cons, f_par.reshape(-1)), f_tok.reshape(-1))
        a_tok, a_par, a_sc, a_bank, a_after, new = C.proposals(T, cons, acc, f_par - base, f_tok, t, self.branches)
        banks = torch.cat([C.bank(T, f_after).view(b, k), a_bank], 1)
        pick = C.choose(banks, torch.cat([f_sc, a_sc], 1), torch.cat([torch.ones_like(new[:, :k]), new], 1),
                        new.any(1), k)
        after = {key: torch.cat([f_after[key].view(b, k, -1), a_after[key].view(b, -1, a_after[key].shape[-1])], 1)
                 for key in cons}
        g_tok = torch.where(stay[:, None], self.cfg.pad, torch.cat([f_tok, a_tok], 1).gather(1, pick))
        g_par = torch.where(stay[:, None], base + torch.arange(k, device=dev), torch.cat([f_par, base + a_par], 1).gather(1, pick))
        g_run = torch.where(stay[:, None], 0.0, torch.cat([f_sc, a_sc], 1).gather(1, pick))
        g_cons = {key: torch.where(stay[:, None, None], cons[key].view(b, k, -1),
                                   x.gather(1, pick[..., None].expand(-1, -1, x.shape[-1]))).view(b * k, -1)
                  for key, x in after.items()}
        done = stay | self.group_done(pool[0], count, top, at)
        new_state = {"run": g_run, "seq": pool[1], "score": pool[0], "len": pool[2], "count": count, "done": done,
                     "stop": done.all(), "cons": g_cons}
        info = None
        if at.trace:
            chose = torch.zeros_like(banks, dtype=torch.bool).scatter(1, pick, True) & ~stay[:, None]
            kept = torch.zeros_like(eos).scatter(1, first, chose[:, :k]) | ends
            info = candidates(torch.cat([tok, a_tok], 1), torch.cat([top, torch.where(new, a_sc, -INF)], 1),
                              torch.cat([par, base + a_par], 1), torch.cat([kept, chose[:, k:]], 1),
                              torch.cat([ends, torch.zeros_like(new)], 1))
        return g_tok.reshape(-1), g_par.reshape(-1), new_state, info

    def finalize(self, state, seq, lim):
        """The pool, and for a prompt still searching its running beams (the reference's finalize)."""
        p, steps, k, lenpen = int(lim["prompt"]), int(lim["steps"]), self.rows, float(self.cfg.params.get("lenpen", 1.0))
        run, done, scores, seqs, lens, count = (state[x].tolist() for x in ("run", "done", "score", "seq", "len", "count"))
        met, rows, out = C.met(state["cons"]).tolist(), seq.tolist(), []
        for b in range(self.cfg.batch):
            hyps = [(scores[b][j], seqs[b][j][p:p + lens[b][j]]) for j in range(count[b])]
            live = [j for j in range(k) if not done[b] and run[b][j] > -INF]
            ok = [j for j in live if met[b * k + j]]
            for j in ok + ([j for j in live if j not in ok] if len(ok) < self.returns else []):
                hyps = _offer(hyps, run[b][j] / float(steps) ** lenpen, rows[b * k + j][p:p + steps], k)
            hyps.sort(key=lambda x: x[0])  # stable; the reference pops from the end
            out.append([result(ids, sc, self.cfg.eos) for sc, ids in reversed(hyps[-self.returns:])])
        return out


STRATEGY = Force


def wrap(strategy):
    """`force` makes a beam search constrained."""
    return Force
