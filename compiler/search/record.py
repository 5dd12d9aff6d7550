"""What a trace needs from one step, built by the engine (independent rows) and the beam
loops (beam.py, groups.py), never by a strategy's own code or a variant's: the candidates
considered per prompt, [B, C] tensors each.

A search of independent rows returns only its choice; the candidates are then each row's
few best tokens under its processed scores plus every chosen continuation, so a user's
search is traced (and drawn by `decode viz`) with no code of its own.
"""
from __future__ import annotations

import torch

TOP = 5  # alternatives listed per row
TOKEN, PARENT = "token", "parent"  # the keys that name a candidate: its token, the row it extends


def candidates(token, logp, parent, kept, finished, group=None, penalty=None) -> dict:
    """Per prompt [B, C]: the token, its processed log-prob (or the search's score), the
    row it extends, whether it survived, whether it ended, its group, and the diversity
    penalty already taken off `logp` (0 if none)."""
    if group is None:
        group = torch.zeros_like(token)
    if penalty is None:
        penalty = torch.zeros_like(logp)
    return {TOKEN: token, "logp": logp, PARENT: parent, "kept": kept,
            "finished": finished, "group": group, "penalty": penalty}


def offered(info: dict, entry, rows: int) -> torch.Tensor:
    """[B, C, F]: `entry(row, token)` of each candidate of a step's `info` (its log-probs,
    compiler/logprobs.py), for decode.steps' finished hypotheses; rows clamped to 0..rows-1."""
    return entry(info[PARENT].clamp(0, rows - 1), info[TOKEN])


def row_candidates(processed, tokens, parents, alive, ended, batch: int) -> dict:
    """The candidates of a step of independent rows: each row's TOP best tokens (kept if a
    new row continues it with that token), then each new row's own continuation, listed
    again only when it is not among them (else its score is -inf: not shown twice).

    processed [R, V]: the scores the rows' tokens were chosen from; tokens/parents [R] of
    the new rows (parents None: in place); alive [R]: the new row is live; ended [R]."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    src = rows if parents is None else parents
    logp = torch.log_softmax(processed.float(), dim=-1)
    top, idx = torch.topk(logp, min(TOP, logp.shape[-1]))                     # [R, T]
    return listed(top, idx, logp[src, tokens], tokens, src, alive, ended, batch)


def listed(top, idx, own, tokens, src, alive, ended, batch: int) -> dict:
    """`row_candidates` from each row's TOP best log-probs and their ids [R, T] and each new
    row's own token's log-prob `own` [R] (taken from rows `src`): what a speculative round,
    which keeps only these of a position's scores, lists for a token."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    match = (idx[src] == tokens[:, None]) & alive[:, None]                     # [new, T]
    seen = match.any(1)
    kept = torch.zeros_like(idx).index_add(0, src, match.long()) > 0
    fin = torch.zeros_like(idx).index_add(0, src, (match & ended[:, None]).long()) > 0
    own = torch.where(seen, float("-inf"), own)
    token = torch.cat([idx, tokens[:, None]], 1)
    score = torch.cat([top, own[:, None]], 1)
    parent = torch.cat([rows[:, None].expand_as(idx), src[:, None]], 1)
    keep = torch.cat([kept, (alive & ~seen)[:, None]], 1)
    done = torch.cat([fin, (alive & ended & ~seen)[:, None]], 1)
    return candidates(*(x.reshape(batch, -1) for x in (token, score, parent, keep, done)))
