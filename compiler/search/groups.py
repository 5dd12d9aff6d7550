"""Beam search in G groups of K/G beams, as the reference's `_group_beam_search`.

Each step the groups choose in turn. Group g's log-probs first lose what the variant's
`penalise` says (from what groups 0..g-1 chose: diverse.py, iterative.py), then go through
the recipe's stages; the group takes its best 2·K/G continuations (or draws them), offers
those ending in EOS among the first K/G to its pool (pool.py), and the first K/G that do
not end go on. A done group writes padding, which later groups count, as the reference.
"""
from __future__ import annotations

import torch

from decode.compiler.search.pool import INF, BeamPool, extended, group_results, offer_group, pool_state
from decode.compiler.search.record import candidates


class Groups(BeamPool):
    """A variant writes `penalise`: what group g loses before the stages [B, K/G or 1, V],
    given its rows `own` [B, K/G, S], what earlier groups chose this step `chosen` [B, V]
    and `earlier` (per earlier group: its rows after this step, still searching [B], parents). It
    may keep `memory` between steps, updated by `remember` after each group's choice."""

    modifier = ""  # the clause that carries groups=

    def __init__(self, cfg):
        super().__init__(cfg)
        self.groups = int(cfg.modifiers[self.modifier]["groups"])
        self.size = self.rows // self.groups

    def memory(self, device, seq_len) -> dict:
        return {}

    def remember(self, g, tok, was_done, now_done, at, memo) -> dict:
        return memo

    def begin(self, device, seq_len):
        b, g, s = self.cfg.batch, self.groups, self.size
        run = torch.full((b, g, s), -INF, device=device)
        run[:, :, 0] = 0.0
        long, lp = {"dtype": torch.long, "device": device}, pool_state(self.cfg, (b, g, s), seq_len, device)
        return {"run": run, **lp, "seq": torch.full((b, g, s, seq_len), self.cfg.pad, **long),
                "score": torch.full((b, g, s), -INF, device=device), "len": torch.zeros(b, g, s, **long),
                "count": torch.zeros(b, g, **long), "done": torch.zeros(b, g, dtype=torch.bool, device=device),
                "memo": self.memory(device, seq_len), "stop": torch.zeros((), dtype=torch.bool, device=device)}

    def advance(self, scores, at, state):
        b, k, s = self.cfg.batch, self.rows, self.size
        n, v, dev = max(2, 1 + len(self.cfg.eos)) * s, scores.shape[-1], scores.device
        chosen, earlier, memo = torch.zeros(b, v, device=dev), [], state["memo"]
        base, rank, out, trace = torch.arange(b, device=dev)[:, None] * k, torch.arange(n, device=dev), [], []
        for g in range(self.groups):
            mine = base + g * s + torch.arange(s, device=dev)                       # [b, s] rows
            pen = self.penalise(g, at.seq[mine.reshape(-1)].view(b, s, -1), at, chosen, earlier, memo)
            # the group's rows as a view (not a gather), so the compiler can fuse through it
            lp = at.process((scores.view(b, k, v)[:, g * s:(g + 1) * s] - pen).reshape(b * s, v), mine.reshape(-1))
            acc = (lp.view(b, s, v) + state["run"][:, g, :, None]).view(b, s * v)
            u = None if at.noise is None else at.noise.view(b, k, v)[:, g * s:(g + 1) * s].reshape(b, s * v)
            top, idx = self.candidates(acc, n, u)
            tok, parent, eos, gdone = idx % v, base + g * s + idx // v, self.is_eos(idx % v), state["done"][:, g]
            stay = gdone[:, None]  # a done group stays where it is, writing padding
            pool, count, add = offer_group(state, g, top, eos & (rank < s) & ~stay, parent, tok, at)
            order = torch.sort(torch.where(eos, rank + n, rank), dim=1, stable=True).indices[:, :s]
            g_run, g_tok, g_par = (torch.where(stay, x, y.gather(1, order))
                                   for x, y in ((0.0, top), (self.cfg.pad, tok), (mine, parent)))
            g_done = gdone | self.group_done(pool[0], count, top, at)
            chosen = chosen.scatter_add(1, g_tok, torch.ones_like(g_run))
            earlier.append((extended(at, g_par, g_tok), ~gdone, g_par))
            memo = self.remember(g, g_tok, gdone, g_done, at, memo)
            out.append((g_tok, g_par, g_run, count, g_done, *pool))
            if at.trace:
                kept = torch.zeros_like(eos).scatter(1, order, True) & ~stay | add
                paid = pen.expand(b, s, v).reshape(b, s * v).gather(1, idx)
                trace.append((tok, top, parent, kept, eos, torch.full_like(tok, g), paid))
        tokens, parents, run, count, done, score, seq, length, *lp = (torch.stack(x, 1) for x in zip(*out))
        new = {"run": run, "seq": seq, "score": score, "len": length, "count": count, "done": done, "memo": memo,
               "stop": done.all(), **({"lp": lp[0]} if lp else {})}  # lp: the hypotheses' log-probs
        info = candidates(*(torch.cat(x, 1) for x in zip(*trace))) if at.trace else None
        return tokens.reshape(-1), parents.reshape(-1), new, info

    finalize = group_results  # pool.py
