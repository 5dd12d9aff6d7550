"""Constrained beam search (`force`), step for step transformers' `_constrained_beam_search`
(4.55.4): the 2K best continuations; an EOS among the first K finishes if its beam met
every constraint; the first K others and each token that advances a beam's constraints
are banked by progress and K taken round robin over the banks (_banks.py). The
constraints' state is _constraints.py."""
from __future__ import annotations

import torch

from decode.compiler.logprobs import carried, pool_state
from decode.compiler.search import _constraints as C
from decode.compiler.search._banks import choose, proposals, results, traced
from decode.compiler.search.pool import INF, BeamPool, extended, merge


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
                "stop": torch.zeros((), dtype=torch.bool, device=device),
                **pool_state(cfg, (b, k), seq_len, device)}  # the hypotheses' log-probs, if asked for

    def advance(self, scores, at, state):
        b, k, T, cons, t = self.cfg.batch, self.rows, self.T, state["cons"], at.t
        n, v, dev = max(2, 1 + len(self.cfg.eos)) * k, scores.shape[-1], scores.device
        acc = (at.process(scores, None).view(b, k, v) + state["run"][..., None]).view(b, k * v)
        top, idx = torch.topk(acc, n)
        base, rank, stay = torch.arange(b, device=dev)[:, None] * k, torch.arange(n, device=dev), state["done"][:, None]
        tok, par = idx % v, base + idx // v
        eos = self.is_eos(tok)

        # an EOS among the first K ends a hypothesis if its beam met every constraint
        ends = eos & (rank < k) & C.met(cons)[par] & ~stay & (top > -INF)
        offer = torch.where(ends, top / (t + 1).to(top.dtype) ** at.hp["lenpen"], -INF)
        score, seq, length, sel = merge(state["score"], state["seq"], state["len"], offer, extended(at, par, tok),
                                      (t + 1).expand(b, n))
        count = torch.clamp(state["count"] + ends.sum(1), max=k)

        # candidates: the first K that do not end, then the tokens advancing a beam's constraints
        first = torch.sort(torch.where(eos, rank + n, rank), dim=1, stable=True).indices[:, :k]
        f_tok, f_par, f_sc = tok.gather(1, first), par.gather(1, first), top.gather(1, first)
        f_after = C.add(T, C.gather(cons, f_par.reshape(-1)), f_tok.reshape(-1))
        a_tok, a_par, a_sc, a_bank, a_after, new = proposals(T, cons, acc, f_par - base, f_tok, t, self.branches)
        pick = choose(torch.cat([C.bank(T, f_after).view(b, k), a_bank], 1), torch.cat([f_sc, a_sc], 1),
                      torch.cat([torch.ones_like(new[:, :k]), new], 1), new.any(1), k)

        def chosen(own, *parts):  # the picked candidates; a done prompt's beams stay as they are
            x = torch.cat(parts, 1)
            wide = x.dim() == 3
            got = x.gather(1, pick[..., None].expand(-1, -1, x.shape[-1]) if wide else pick)
            return torch.where(stay[..., None] if wide else stay, own, got)

        g_cons = {key: chosen(x.view(b, k, -1), f_after[key].view(b, k, -1), a_after[key].view(b, new.shape[1], -1))
                  .view(b * k, -1) for key, x in cons.items()}
        done = stay[:, 0] | self.group_done(score, count, top, at)
        new_state = {"run": chosen(0.0, f_sc, a_sc), "seq": seq, "score": score, "len": length, "count": count,
                     "done": done, "stop": done.all(), "cons": g_cons, **carried(state, at, par, tok, sel)}
        a_par = base + a_par
        info = traced((tok, top, par, ends, first), (a_tok, a_sc, a_par, new), pick, stay[:, 0]) if at.trace else None
        parents = chosen(base + torch.arange(k, device=dev), f_par, a_par)
        return chosen(self.cfg.pad, f_tok, a_tok).reshape(-1), parents.reshape(-1), new_state, info

    finalize = results  # _banks.py: the reference's finalize


STRATEGY = Force


def wrap(strategy):
    """`force` makes a beam search constrained."""
    return Force
