"""How constrained beam search (`force`) chooses its beams and its results, as transformers'
ConstrainedBeamSearchScorer (4.55.4): the candidates each beam's constraints add, the
round robin over banks, and the finalize rule. The constraint state is _constraints.py.
"""
from __future__ import annotations

import torch

from decode.compiler.logprobs import ROWS
from decode.compiler.search._constraints import BIG, advance_banks, advancing, met
from decode.compiler.search.base import result
from decode.compiler.search.pool import INF, _offer
from decode.compiler.search.record import candidates


def proposals(T: dict, st: dict, acc: torch.Tensor, top_par: torch.Tensor, top_tok: torch.Tensor,
              t: torch.Tensor, branches: tuple[int, ...]):
    """Each beam's advancing tokens as candidates, [B, K·E] (beam j's edges at j·E + i):
    (token, beam, score, bank, the state it leads to, whether it is a new candidate). A
    token is not new when the text it makes is a candidate already (a top one, or an
    earlier advancing one; at step 0 every beam holds the same text)."""
    b, kv = acc.shape
    k, e = top_par.shape[1], T["et"].shape[0]
    ok = advancing(T, st).view(b, k * e)
    banks, after = advance_banks(T, st, ok.view(b * k, e), branches)
    tok = T["et"].repeat(k).expand(b, -1)
    par = torch.arange(k, device=acc.device).repeat_interleave(e).expand(b, -1)
    score = acc.gather(1, par * (kv // k) + tok)
    text = torch.where(t > 0, par, 0)
    all_par, all_tok = torch.cat([torch.where(t > 0, top_par, 0), text], 1), torch.cat([top_tok, tok], 1)
    same = (text[:, :, None] == all_par[:, None, :]) & (tok[:, :, None] == all_tok[:, None, :])
    before = torch.ones(k * e, k + k * e, dtype=torch.bool, device=acc.device).tril(k - 1)
    dup = (same & before & torch.cat([torch.ones_like(top_tok, dtype=torch.bool), ok], 1)[:, None, :]).any(-1)
    return tok, par, score, banks.view(b, k * e), after, ok & ~dup


def choose(bank: torch.Tensor, score: torch.Tensor, valid: torch.Tensor, any_new: torch.Tensor, k: int):
    """[B, K]: the candidates kept (ConstrainedBeamSearchScorer.step_sentence_constraint):
    sorted by bank·100 + score, then taken round robin over the runs of equal bank (the
    first of each run, then the second, ...); without new candidates, the first K."""
    order = torch.sort(bank * 100 + score, dim=1, descending=True, stable=True).indices
    order = order.gather(1, torch.sort((~valid).gather(1, order).long(), dim=1, stable=True).indices)
    sb = bank.gather(1, order)
    i = torch.arange(sb.shape[1], device=sb.device).expand_as(sb)
    run_start = torch.where(torch.cat([torch.ones_like(sb[:, :1], dtype=torch.bool), sb[:, 1:] != sb[:, :-1]], 1), i, 0)
    inc = torch.where(valid.gather(1, order), i - run_start.cummax(1).values, BIG)
    pick = order.gather(1, torch.sort(inc, dim=1, stable=True).indices)[:, :k]
    return torch.where(any_new[:, None], pick, torch.arange(k, device=sb.device))



def results(search, state, seq, lim):
    """Per prompt the best RETURN hypotheses: the pool, and for a prompt still searching its
    running beams that met every constraint, or all of them if fewer than RETURN did."""
    p, steps, k = int(lim["prompt"]), int(lim["steps"]), search.rows
    lenpen, keep = float(search.cfg.params.get("lenpen", 1.0)), search.returns
    run, done, scores, seqs, lens, count = (state[x].tolist() for x in ("run", "done", "score", "seq", "len", "count"))
    ok, rows, out = met(state["cons"]).tolist(), seq.tolist(), []
    lp = state["lp"].tolist() if "lp" in state else None  # the tokens' log-probs ride with the ids
    paths = state[ROWS][:, p:p + steps].tolist() if lp is not None else None
    for b in range(search.cfg.batch):
        hyps = [(scores[b][j], seqs[b][j][p:p + lens[b][j]], *([lp[b][j][p:p + lens[b][j]]] if lp else []))
                for j in range(count[b])]
        live = [j for j in range(k) if not done[b] and run[b][j] > -INF]
        good = [j for j in live if ok[b * k + j]]
        for j in good + ([j for j in live if j not in good] if len(good) < keep else []):
            r = b * k + j
            hyps = _offer(hyps, (run[b][j] / float(steps) ** lenpen, rows[r][p:p + steps],
                                 *([paths[r]] if lp else [])), k)
        hyps.sort(key=lambda x: x[0])  # stable; the reference pops from the end
        out.append([result(ids, sc, search.cfg.eos, *more) for sc, ids, *more in reversed(hyps[-keep:])])
    return out


def traced(top, added, pick, stay) -> dict:
    """A trace's candidates: the 2K best (kept if chosen or finished), then the new tokens
    the constraints added (the others at -inf: not shown)."""
    tok, score, par, ends, first = top
    a_tok, a_score, a_par, new = added
    k = first.shape[1]
    chose = torch.zeros(pick.shape[0], k + new.shape[1], dtype=torch.bool, device=pick.device)
    chose = chose.scatter(1, pick, True) & ~stay[:, None]
    kept = torch.zeros_like(ends).scatter(1, first, chose[:, :k]) | ends
    return candidates(torch.cat([tok, a_tok], 1), torch.cat([score, torch.where(new, a_score, -INF)], 1),
                      torch.cat([par, a_par], 1), torch.cat([kept, chose[:, k:]], 1),
                      torch.cat([ends, torch.zeros_like(new)], 1))
