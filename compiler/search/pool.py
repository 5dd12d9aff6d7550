"""The beam pool: finished hypotheses, the length penalty, `early`, done and the results,
shared by every beam search (beam.py, groups.py and the variants built on them).

A beam search keeps K running beams per prompt (or per group). Each step it takes its 2K
best continuations (K = beams; 2 is max(2, 1 + number of EOS ids)), or draws them when the
recipe samples; those that end among the first K are offered to a static-size pool of
finished hypotheses scored sum(logprob) / generated_len ** lenpen, and K that do not end
go on. `early` decides when the pool may stop growing: true (as soon as K hypotheses
finished), false (when the best running beam, at its current length, cannot beat the worst
finished one), never (the same bound taken at the longest possible length when lenpen > 0).

Where the reference marks an impossible beam or hypothesis with the score -1e9, this uses
-inf: a real score can fall below -1e9 (a cold temperature, a large penalty), and then the
reference returns its filler beams as sequences. Both agree whenever every real score is
above -1e9; a hypothesis still at -inf at the end is not returned.
"""
from __future__ import annotations

import torch

from decode.compiler.logprobs import ROWS, carried, pool_state, pooled  # noqa: F401  (for beam.py, groups.py)
from decode.compiler.search.base import Search, result

INF = float("inf")


class BeamPool(Search):
    """What every beam search shares: its parameters, the pool, done and the results.

    A variant changes how continuations are ranked: `rescore` (after the logit stages,
    beam.py) or `penalise` (before them, per group, groups.py).
    """

    logprobs = True
    ranks_sequences = True  # its candidates carry the sequence's score (see search/record.py)
    renormalizes = False  # a token adds the stages' output to a beam's score as it is

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])
        ret = cfg.params.get("return")
        self._returns = self.rows if ret is None else int(ret)
        self.early = cfg.params.get("early", False)  # False | True | "never": structural

    @property
    def returns(self) -> int:
        return self._returns

    def hyper(self):
        return {"lenpen": float(self.cfg.params.get("lenpen", 1.0))}

    def rescore(self, acc, logp, hp):
        """The scores [B, K·V] (beam score + processed log-prob `logp` [B, K, V]) that
        selection ranks, and the penalty [B, K·V] taken off to get them (None: none)."""
        return acc, None

    def candidates(self, scores, n, u, at=None):
        """(scores [B, n], indices [B, n]): the n best of `scores` [B, N], or n drawn (`at`: the step)."""
        from decode.compiler.search.draw import select

        idx = select(scores, n, u)
        return scores.gather(1, idx), idx

    def bound_length(self, length, at, lenpen):
        """The length at which the best running beam is compared with the pool's worst."""
        if self.early == "never":
            return torch.where(lenpen > 0, at.max_new, length).to(torch.float32)
        return length.to(torch.float32)

    def group_done(self, worst, count, top, at):
        """[B]: a group's pool is full and (early=true, or) no running beam can beat its worst
        (`top` [B, n] is in draw order when sampling, so its best is a max)."""
        if self.early is True:
            return count >= worst.shape[1]
        lenpen = at.hp["lenpen"]
        best = top.max(1).values / self.bound_length(at.t + 1, at, lenpen) ** lenpen
        return (count >= worst.shape[1]) & (worst.min(1).values >= best)

    def stop_rows(self, state, rows):
        return state  # beams keep searching; the engine cuts their texts at the stop string

    def done(self, state):
        return state["stop"]


def merge(score, seq, length, offer, cand, cand_len):
    """The pool's best: hypotheses (score [B, s], seq [B, s, S], length [B, s]) and the
    offered candidates (offer [B, n], -inf where not offered; cand [B, n, S]; cand_len
    [B, n]) -> (score, seq, length, the indices kept [B, s] among the s + n)."""
    s = score.shape[1]
    both = torch.cat([score, offer], 1)
    sel = torch.topk(both, s).indices
    seq = torch.cat([seq, cand], 1).gather(1, sel[..., None].expand(-1, s, cand.shape[-1]))
    return both.gather(1, sel), seq, torch.cat([length, cand_len], 1).gather(1, sel), sel


def offer_group(state, g, top, ended, parent, tok, at):
    """Group g's pool after it is offered the candidates `ended` [B, n] (scores `top`,
    tokens `tok` continuing rows `parent`): ((score, seq, length[, log-prob paths]), count,
    what was offered)."""
    add = ended & (top > -INF)
    offer = torch.where(add, top / (at.t + 1).to(top.dtype) ** at.hp["lenpen"], -INF)
    *pool, sel = merge(state["score"][:, g], state["seq"][:, g], state["len"][:, g], offer,
                       extended(at, parent, tok), (at.t + 1).expand(*top.shape))
    if at.logprobs is not None:  # the hypotheses' log-probs go where their ids go
        pool.append(pooled(state["lp"][:, g], at, parent, tok, sel))
    return pool, torch.clamp(state["count"][:, g] + add.sum(1), max=state["score"].shape[2]), add


def extended(at, parent, tok):
    """[B, n, S]: the rows `parent` [B, n] with `tok` [B, n] written at this step's slot."""
    slot = (at.prompt + at.t).expand(*tok.shape, 1)
    return at.seq[parent].scatter(2, slot, tok[..., None])


def group_results(self, state, seq, lim):
    """A group search's results: groups still running offer their beams (as the reference's
    `finalize`), then the best `return` hypotheses over all groups, best first."""
    s, steps, p = self.size, int(lim["steps"]), int(lim["prompt"])
    run, done, seqs, scores, lens, count = (state[x].tolist() for x in ("run", "done", "seq", "score", "len", "count"))
    rows, lenpen, out = seq.tolist(), float(self.cfg.params.get("lenpen", 1.0)), []
    lp = state["lp"].tolist() if "lp" in state else None  # the tokens' log-probs ride with the ids
    paths = state[ROWS][:, p:p + steps].tolist() if lp is not None else None
    for b in range(self.cfg.batch):
        pool = []
        for g in range(self.groups):
            hyps = [(scores[b][g][j], seqs[b][g][j][p:p + lens[b][g][j]],
                     *([lp[b][g][j][p:p + lens[b][g][j]]] if lp else [])) for j in range(count[b][g])]
            for j in range(s) if not done[b][g] else ():
                score, r = run[b][g][j] / float(steps) ** lenpen, b * self.rows + g * s + j
                if score > -INF:  # a beam that never lived is no hypothesis
                    hyps = _offer(hyps, (score, rows[r][p:p + steps], *([paths[r]] if lp else [])), s)
            pool.extend(hyps)
        pool.sort(key=lambda x: x[0])  # stable; the reference pops from the end
        best = [pool.pop() for _ in range(min(self.returns, len(pool)))]
        out.append([result(ids, sc, self.cfg.eos, *more) for sc, ids, *more in best])
    return out


def _offer(hyps, hyp, size):
    """The reference's BeamHypotheses.add: keep the best `size`, a newcomer `hyp` (score, ids,
    ...) must beat the worst."""
    if len(hyps) < size or hyp[0] > min(h[0] for h in hyps):
        hyps = hyps + [hyp]
        if len(hyps) > size:
            worst = min(range(len(hyps)), key=lambda i: (hyps[i][0], i))
            hyps = hyps[:worst] + hyps[worst + 1:]
    return hyps
