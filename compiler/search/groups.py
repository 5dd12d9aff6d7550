"""Beam search in G groups of K/G beams, as the reference's `_group_beam_search`.

Each step the groups choose in turn. Group g's log-probs first lose what the variant's
`penalise` says (from what groups 0..g-1 chose: diverse.py, iterative.py), then go through
the recipe's stages, then the group takes its best 2·K/G continuations (or draws them, in
draw order, when the recipe samples): those ending in EOS among the first K/G are offered
to the group's pool (pool.py), the first K/G that do not end go on. A group is done when
its pool holds K/G hypotheses that no running beam can beat (`early` as in beam search);
a done group writes padding, which later groups count like any choice, as the reference.
"""
from __future__ import annotations

import torch

from decode.compiler.search.pool import INF, BeamPool, extended, merge
from decode.compiler.search.record import candidates


class Groups(BeamPool):
    modifier = ""  # the clause that carries groups=

    def __init__(self, cfg):
        super().__init__(cfg)
        self.groups = int(cfg.modifiers[self.modifier]["groups"])
        self.size = self.rows // self.groups

    def memory(self, device, seq_len) -> dict:
        """What the variant remembers between steps (tensors; none by default)."""
        return {}

    def penalise(self, g, own, at, chosen, earlier, memo):
        """What group g's continuations lose before the stages, [B, K/G or 1, V]. own: its rows
        [B, K/G, S]; chosen [B, V]: what earlier groups chose this step (padding included);
        earlier: per earlier group (its rows after this step's choice, still searching [B])."""
        raise NotImplementedError

    def remember(self, g, tok, was_done, now_done, at, memo) -> dict:
        """`memo` after group g chose `tok` [B, K/G] (was_done/now_done [B])."""
        return memo

    def begin(self, device, seq_len):
        b, g, s = self.cfg.batch, self.groups, self.size
        run = torch.full((b, g, s), -INF, device=device)
        run[:, :, 0] = 0.0
        return {"run": run, "seq": torch.full((b, g, s, seq_len), self.cfg.pad, dtype=torch.long, device=device),
                "score": torch.full((b, g, s), -INF, device=device),
                "len": torch.zeros(b, g, s, dtype=torch.long, device=device),
                "count": torch.zeros(b, g, dtype=torch.long, device=device),
                "done": torch.zeros(b, g, dtype=torch.bool, device=device), "memo": self.memory(device, seq_len)}

    def advance(self, scores, at, state):
        b, k, s, t = self.cfg.batch, self.rows, self.size, at.t
        n, v, dev, lenpen = max(2, 1 + len(self.cfg.eos)) * s, scores.shape[-1], scores.device, at.hp["lenpen"]
        chosen, earlier, memo = torch.zeros(b, v, device=dev), [], state["memo"]
        base, rank = torch.arange(b, device=dev)[:, None] * k, torch.arange(n, device=dev)
        out, trace = [], []
        for g in range(self.groups):
            mine = base + g * s + torch.arange(s, device=dev)                       # [b, s] rows
            pen = self.penalise(g, at.seq[mine.reshape(-1)].view(b, s, -1), at, chosen, earlier, memo)
            # the group's rows as a view (not a gather), so the compiler can fuse through it
            lp = at.process((scores.view(b, k, v)[:, g * s:(g + 1) * s] - pen).reshape(b * s, v), mine.reshape(-1))
            acc = (lp.view(b, s, v) + state["run"][:, g, :, None]).view(b, s * v)
            u = None if at.noise is None else at.noise.view(b, k, v)[:, g * s:(g + 1) * s].reshape(b, s * v)
            top, idx = self.candidates(acc, n, u)
            tok, parent, eos, gdone = idx % v, base + g * s + idx // v, self.is_eos(idx % v), state["done"][:, g]
            add = eos & (rank < s) & ~gdone[:, None] & (top > -INF)
            offer = torch.where(add, top / (t + 1).to(top.dtype) ** lenpen, -INF)
            pool = merge(state["score"][:, g], state["seq"][:, g], state["len"][:, g], offer,
                         extended(at, parent, tok), (t + 1).expand(b, n))[:3]
            count = torch.clamp(state["count"][:, g] + add.sum(1), max=s)
            order = torch.sort(torch.where(eos, rank + n, rank), dim=1, stable=True).indices[:, :s]
            stay = gdone[:, None]
            g_run = torch.where(stay, 0.0, top.gather(1, order))
            g_tok = torch.where(stay, self.cfg.pad, tok.gather(1, order))
            g_par = torch.where(stay, mine, parent.gather(1, order))
            # done: the pool is full and (early=true, or) no running beam can beat its worst;
            # `top` is in draw order when sampling, so its best is a max
            bound = pool[0].min(1).values >= top.max(1).values / self.bound_length(t + 1, at, lenpen) ** lenpen
            g_done = gdone | ((count >= s) & (True if self.early is True else bound))
            chosen = chosen.scatter_add(1, g_tok, torch.ones_like(g_run))
            earlier.append((extended(at, g_par, g_tok), ~gdone))
            memo = self.remember(g, g_tok, gdone, g_done, at, memo)
            out.append((g_tok, g_par, g_run, *pool, count, g_done))
            if at.trace:
                kept = torch.zeros_like(eos).scatter(1, order, True) & ~stay | add
                paid = pen.expand(b, s, v).reshape(b, s * v).gather(1, idx)
                trace.append((tok, top, parent, kept, eos, torch.full_like(tok, g), paid))
        tokens, parents, run, score, seq, length, count, done = (torch.stack(x, 1) for x in zip(*out))
        new = {"run": run, "seq": seq, "score": score, "len": length, "count": count, "done": done, "memo": memo}
        info = candidates(*(torch.cat(x, 1) for x in zip(*trace))) if at.trace else None
        return tokens.reshape(-1), parents.reshape(-1), new, info

    def done(self, state):
        return state["done"].all()

    def finalize(self, state, seq, lim):
        """Groups still running offer their beams (as the reference's `finalize`), then the
        best `return` hypotheses over all groups, best first."""
        s, steps, p = self.size, int(lim["steps"]), int(lim["prompt"])
        run, done, seqs, scores, lens, count = (state[x].tolist() for x in ("run", "done", "seq", "score", "len", "count"))
        rows, lenpen, out = seq.tolist(), float(self.cfg.params.get("lenpen", 1.0)), []
        for b in range(self.cfg.batch):
            pool = []
            for g in range(self.groups):
                hyps = [(scores[b][g][j], seqs[b][g][j][p:p + lens[b][g][j]]) for j in range(count[b][g])]
                for j in range(s) if not done[b][g] else ():
                    score = run[b][g][j] / float(steps) ** lenpen
                    if score > -INF:  # a beam that never lived is no hypothesis
                        hyps = _offer(hyps, score, rows[b * self.rows + g * s + j][p:p + steps], s)
                pool.extend(hyps)
            pool.sort(key=lambda x: x[0])  # stable; the reference pops from the end
            best = [pool.pop() for _ in range(min(self.returns, len(pool)))]
            out.append([(ids, sc, "eos" if ids and ids[-1] in self.cfg.eos else "max") for sc, ids in best])
        return out


def _offer(hyps, score, ids, size):
    """The reference's BeamHypotheses.add: keep the best `size`, a newcomer must beat the worst."""
    if len(hyps) < size or score > min(h[0] for h in hyps):
        hyps = hyps + [(score, ids)]
        if len(hyps) > size:
            worst = min(range(len(hyps)), key=lambda i: (hyps[i][0], i))
            hyps = hyps[:worst] + hyps[worst + 1:]
    return hyps
