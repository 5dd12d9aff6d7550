"""Diverse beam search (Vijayakumar et al. 2016), as the reference's `_group_beam_search`.

The K beams of a prompt form G groups of K/G. Each step the groups choose in order; group
g's log-probs first lose `penalty` times the number of times each token was chosen by
groups 0..g-1 at this step (Hamming diversity), then go through the recipe's stages, then
the group takes its best 2·K/G continuations: those ending in EOS among the group's top
K/G become finished hypotheses (score sum(logprob) / length ** lenpen), the first K/G
that do not end continue. A group is done when its pool holds K/G hypotheses that no
running beam can beat (`early` as in beam search); a done group writes padding, which
counts towards the diversity penalty of later groups, as in the reference.

Diverse beam *sampling* (a recipe with a sampling stage; the reference refuses it) is the
same step with the group's 2·K/G continuations drawn without replacement from
softmax(beam score + processed log-prob) over the group's (K/G)·V continuations
(successive sampling, `base.draw`, kept in draw order): EOS candidates among the first
K/G drawn become hypotheses, and the first K/G drawn that do not end continue. Without
sampling, draw order is score order and this is exactly the reference's group beam search.

`kind` changes what the penalty counts (dsl/stages.py has the definitions): `hamming`
(above), `cumulative` (the token's choices by earlier groups at every step so far) and
`ngram` (occurrences of the n-gram the token completes in earlier groups' new text).
iterative.py reuses this search with a hard rule in place of the penalty.
"""
from __future__ import annotations

import torch

from decode.compiler.search.base import Search, candidates, draw


class Diverse(Search):
    logprobs = True
    modifier = "diverse"  # the clause that carries groups (and penalty, kind)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = int(cfg.params["k"])
        ret = cfg.params.get("return")
        self.returns = self.rows if ret is None else int(ret)
        self.early = cfg.params.get("early", False)
        mod = cfg.modifiers[self.modifier]
        self.kind = mod.get("kind", "hamming")
        self.groups = int(mod["groups"])
        self.size = self.rows // self.groups
        self.keep = max(2, 1 + len(cfg.eos)) * self.size

    def hyper(self):
        return {
            "lenpen": float(self.cfg.params.get("lenpen", 1.0)),
            "penalty": float(self.cfg.modifiers[self.modifier].get("penalty", 0.0)),
        }

    def init(self, device, seq_len):
        b, g, s = self.cfg.batch, self.groups, self.size
        run = torch.full((b, g, s), float("-inf"), device=device)  # -inf: see beam.py
        run[:, :, 0] = 0.0
        state = {
            "run": run,
            "hyp_seq": torch.full((b, g, s, seq_len), self.cfg.pad, dtype=torch.long, device=device),
            "hyp_score": torch.full((b, g, s), float("-inf"), device=device),
            "hyp_len": torch.zeros(b, g, s, dtype=torch.long, device=device),
            "count": torch.zeros(b, g, dtype=torch.long, device=device),
            "done": torch.zeros(b, g, dtype=torch.bool, device=device),
        }
        if self.kind == "cumulative":  # the token each beam chose at each slot; -1: none counted
            state["picks"] = torch.full((b, g, s, seq_len), -1, dtype=torch.long, device=device)
        if self.kind == "ngram":       # new tokens each group wrote before it finished
            state["until"] = torch.full((b, g), seq_len, dtype=torch.long, device=device)
        return state

    def penalise(self, t, own, lim, hp, chosen, picks, earlier, until):
        """What a group's continuations lose [B, K/G or 1, V] before the logit stages.

        own: the group's rows [B, K/G, S]; chosen: [B, V] tokens earlier groups chose at this
        step (padding included); picks: [B, R, S] earlier groups' choices at every step (-1:
        none); earlier: (rows after this step's choice [B, K/G, S], still searching [B]) of
        each earlier group; until: [B, G] new tokens each group wrote before it finished.
        """
        if self.kind == "hamming":
            return (hp["penalty"] * chosen)[:, None, :]
        v = chosen.shape[-1]
        if self.kind == "cumulative":
            return (hp["penalty"] * pick_counts(picks, v))[:, None, :]
        n = int(self.cfg.modifiers[self.modifier]["n"])
        return hp["penalty"] * ngram_counts(n, t, own, earlier, until, lim["prompt"], v)

    def step(self, t, scores, process, noise, seq, lim, hp, state):
        b, k, g_n, s, n = self.cfg.batch, self.rows, self.groups, self.size, self.keep
        v = scores.shape[-1]
        dev = scores.device
        lenpen = hp["lenpen"]
        cur_len = (t + 1).to(scores.dtype)  # new tokens, the EOS included
        max_len = lim["max_new"].to(scores.dtype)
        chosen = torch.zeros(b, v, device=dev)  # tokens chosen by earlier groups this step
        earlier = []                            # earlier groups' rows after their choice
        slot = (lim["prompt"] + t).expand(b, s, 1)
        tokens, parents, trace = [], [], []
        run, hyp_seq, hyp_score = state["run"].clone(), state["hyp_seq"], state["hyp_score"]
        hyp_len, count, done = state["hyp_len"], state["count"], state["done"]
        picks, until = state.get("picks"), state.get("until")
        new_seq, new_score, new_len, new_count, new_done, new_picks = [], [], [], [], [], []
        base = torch.arange(b, device=dev)[:, None] * k
        for g in range(g_n):
            rows = (base + g * s + torch.arange(s, device=dev)).reshape(-1)     # [b*s]
            past = None if picks is None else torch.cat(new_picks + [picks[:, g:g]], 1).flatten(1)
            pen = self.penalise(t, seq[rows].view(b, s, -1), lim, hp, chosen, past, earlier, until)
            # the group's rows as a view (not a gather), so the compiler can fuse through it
            lp = scores.view(b, k, v)[:, g * s:(g + 1) * s] - pen
            lp = process(lp.view(b * s, v), rows).view(b, s, v)
            acc = (lp + run[:, g, :, None]).view(b, s * v)
            if self.cfg.sampling:
                u = noise.view(b, k, v)[:, g * s:(g + 1) * s].reshape(b, s * v)[:, :n]  # the group's first n
                idx = draw(acc, u)
                top = acc.gather(1, idx)
            else:
                top, idx = torch.topk(acc, n)
            beam, tok = idx // v, idx % v
            parent = base + g * s + beam                                           # [b, n]
            eos = self.is_eos(tok)
            rank = torch.arange(n, device=dev)
            gdone = done[:, g]

            # EOS among the group's top s: offer to the pool (keeps the best s ever offered)
            add = eos & (rank < s) & ~gdone[:, None] & (top > float("-inf"))
            cand = seq[parent].scatter(2, slot, tok[..., None])
            offer = torch.where(add, top / cur_len**lenpen, torch.full_like(top, float("-inf")))
            m_score = torch.cat([hyp_score[:, g], offer], 1)
            sel = torch.topk(m_score, s).indices
            g_score = m_score.gather(1, sel)
            g_seq = torch.cat([hyp_seq[:, g], cand], 1).gather(1, sel[..., None].expand(b, s, cand.shape[-1]))
            g_len = torch.cat([hyp_len[:, g], (t + 1).expand(b, n)], 1).gather(1, sel)
            g_count = torch.clamp(count[:, g] + add.sum(1), max=s)

            # the first s continuations that do not end go on, in rank order
            order = torch.sort(torch.where(eos, rank + n, rank), dim=1, stable=True).indices[:, :s]
            g_run = top.gather(1, order)
            g_tok = tok.gather(1, order)
            g_par = parent.gather(1, order)
            g_tok = torch.where(gdone[:, None], torch.full_like(g_tok, self.cfg.pad), g_tok)
            g_run = torch.where(gdone[:, None], torch.zeros_like(g_run), g_run)
            g_par = torch.where(gdone[:, None], base + g * s + torch.arange(s, device=dev), g_par)

            # done: the pool is full and (early=true, or) no running beam can beat its worst
            worst = g_score.min(1).values
            best = top.max(1).values  # top is in draw order when sampling, not best first
            if self.early is True:
                bound = torch.ones_like(gdone)
            else:
                denom = cur_len
                if self.early == "never":
                    denom = torch.where(lenpen > 0, max_len, cur_len)
                bound = worst >= best / denom**lenpen
            g_done = gdone | ((g_count >= s) & bound)

            if self.cfg.trace:
                kept = torch.zeros_like(eos).scatter(1, order, True) & ~gdone[:, None] | add
                paid = pen.expand(b, s, v).reshape(b, s * v).gather(1, idx)
                trace.append((tok, top, parent, kept, eos, torch.full_like(tok, g), paid))
            run[:, g] = g_run
            chosen = chosen.scatter_add(1, g_tok, torch.ones_like(g_run))
            earlier.append((seq[g_par].scatter(2, slot, g_tok[..., None]), ~gdone))
            if picks is not None:  # a finished group's padding is not a choice
                mine = torch.where(gdone[:, None], torch.full_like(g_tok, -1), g_tok)
                new_picks.append(picks[:, g].scatter(2, slot, mine[..., None])[:, None])
            if until is not None:
                until = torch.cat([until[:, :g], torch.where(g_done & ~gdone, t + 1, until[:, g])[:, None],
                                   until[:, g + 1:]], 1)
            tokens.append(g_tok)
            parents.append(g_par)
            new_seq.append(g_seq), new_score.append(g_score), new_len.append(g_len)
            new_count.append(g_count), new_done.append(g_done)
        new = {
            "run": run,
            "hyp_seq": torch.stack(new_seq, 1),
            "hyp_score": torch.stack(new_score, 1),
            "hyp_len": torch.stack(new_len, 1),
            "count": torch.stack(new_count, 1),
            "done": torch.stack(new_done, 1),
        }
        if picks is not None:
            new["picks"] = torch.cat(new_picks, 1)
        if until is not None:
            new["until"] = until
        info = {}
        if self.cfg.trace:
            tok, top, parent, kept, eos, group, paid = (torch.cat(x, 1) for x in zip(*trace))
            info = candidates(tok, top, parent, kept, eos, group, penalty=paid)
        return torch.cat(tokens, 1).reshape(-1), torch.cat(parents, 1).reshape(-1), new, info

    def done(self, state):
        return state["done"].all()

    def finalize(self, state, seq, lim):
        """Groups still running offer their beams (as the reference's `finalize`), then the
        best `return` hypotheses over all groups, best first."""
        b_n, g_n, s = self.cfg.batch, self.groups, self.size
        steps = int(lim["steps"])
        prompt = int(lim["prompt"])
        run = state["run"].tolist()
        done = state["done"].tolist()
        seqs = state["hyp_seq"].tolist()
        scores = state["hyp_score"].tolist()
        lens = state["hyp_len"].tolist()
        count = state["count"].tolist()
        rows = seq.tolist()
        lenpen = float(self.cfg.params.get("lenpen", 1.0))
        out = []
        for b in range(b_n):
            pool = []
            for g in range(g_n):
                hyps = [(scores[b][g][j], seqs[b][g][j][prompt : prompt + lens[b][g][j]])
                        for j in range(count[b][g])]
                if not done[b][g]:
                    for j in range(s):
                        ids = rows[b * self.rows + g * s + j][prompt : prompt + steps]
                        score = run[b][g][j] / float(steps) ** lenpen
                        if score > float("-inf"):  # a beam that never lived is no hypothesis
                            hyps = _offer(hyps, score, ids, s)
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


def pick_counts(picks: torch.Tensor, v: int) -> torch.Tensor:
    """[B, V]: how often each token occurs in `picks` [B, N] (entries -1 are not counted)."""
    return torch.zeros(picks.shape[0], v, device=picks.device).scatter_add(
        1, picks.clamp(min=0), (picks >= 0).float())


def ngram_counts(n: int, t, own, earlier, until, prompt, v: int) -> torch.Tensor:
    """[B, R, V]: for each row of `own` [B, R, S] and token x, how often the n-gram (the row's
    last n-1 new tokens, x) occurs among the new tokens of the `earlier` groups' rows, leaving
    out what a group wrote after it finished (`until`). Zero while t < n - 1."""
    b, r, slots = own.shape
    if not earlier or n > slots:  # no n-gram fits in the sequence (`n=` may be any size)
        return torch.zeros(b, 1, v, device=own.device)
    rows = torch.cat([x for x, _ in earlier], 1)                             # [B, E, S]
    e = rows.shape[1]
    per = e // len(earlier)
    grams = rows.unfold(2, n, 1)                                             # [B, E, W, n]
    w = grams.shape[2]
    start = torch.arange(w, device=own.device)
    end = start + (n - 1)
    limit = prompt + until[:, : len(earlier)].repeat_interleave(per, 1)      # [B, E]
    valid = (start >= prompt) & (end <= prompt + t)
    valid = valid & (end[None, None, :] < limit[..., None]) & (t >= n - 1)    # [B, E, W]
    ctx_slots = (prompt + t - (n - 1) + torch.arange(n - 1, device=own.device)).clamp(min=0)
    ctx = own[:, :, ctx_slots]                                               # [B, R, n-1]
    match = (grams[:, None, :, :, : n - 1] == ctx[:, :, None, None, :]).all(-1) & valid[:, None]
    last = grams[..., n - 1].reshape(b, 1, e * w).expand(b, r, e * w)
    return torch.zeros(b, r, v, device=own.device).scatter_add(2, last, match.reshape(b, r, e * w).float())


STRATEGY = Diverse


def wrap(strategy):
    """`diverse` modifies a beam search into its group (diverse) form."""
    return Diverse
