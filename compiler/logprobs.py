"""Per-token log-probs (`decode run --logprobs N`, `generate(..., logprobs=N)`): for every
returned token, its log-prob and the N likeliest alternatives under two distributions,
taken from the tensors the step already has (no second forward).

- raw: log_softmax of the model's logits at that step (transformers' `output_logits`
  after log_softmax).
- processed: what the token adds to its sequence's score. A search of independent rows
  (greedy, sample, sbeam, a user's search: `Search.renormalizes`) scores a token by
  log_softmax of the logit stages' output: transformers' `output_scores` after log_softmax,
  `compute_transition_scores(..., normalize_logits=True)`. The beam family adds the stages'
  output on the log-probs as it is (not renormalized): transformers' beam `output_scores`,
  which `compute_transition_scores(..., beam_indices)` reads; in diverse beam search that
  output includes the diversity penalty, as the reference's processor does. A variant's
  `rescore` (siblings, a user's beam variant) is not part of it.

A token is one vector of `width(N)` = 2 + 4N floats: raw, processed, the N top raw ids,
their raw log-probs, the N top processed ids, their processed log-probs (ids as floats,
exact below 2^24 = MAX_VOCAB). A row carries its path [R, S, F], slot-indexed like the token
buffer and moved with its parents like it; the beam pool keeps its hypotheses' paths beside
their ids (`pooled`). N = 0 builds none of this.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

FORMAT = 1           # the version of the JSON below (`meaning`, `TokenLogprobs`); a change bumps it
MAX_VOCAB = 1 << 24  # float32 holds every id below it exactly
ROWS = "logprobs"    # the state key under which the engine hands the rows' paths to finalize


def width(n: int) -> int:
    """Floats per token for N alternatives."""
    return 2 + 4 * n


def top_n(paths: torch.Tensor) -> int:
    """N, read off a path tensor's last dimension."""
    return (paths.shape[-1] - 2) // 4


@dataclass
class StepLogprobs:
    """One step's log-probs, for the search (`at.logprobs`) and the engine.

    paths [R, S, F]: each row's path so far; raw [R, V]: the raw log-probs; processed():
    the stages' output for every row processed so far (a group search processes group by
    group); slot: 0-d, where this step's token goes."""

    paths: torch.Tensor
    raw: torch.Tensor
    processed: Callable[[], torch.Tensor]
    renormalizes: bool
    slot: torch.Tensor

    def entry(self, src: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """[..., F]: token `tok` continuing row `src` (tensors of one shape)."""
        proc = self.processed().float()
        if self.renormalizes:
            proc = torch.log_softmax(proc, dim=-1)
        n = top_n(self.paths)
        rv, ri = torch.topk(self.raw, n, dim=-1)
        pv, pi = torch.topk(proc, n, dim=-1)
        chosen = torch.stack([self.raw[src, tok], proc[src, tok]], -1)
        return torch.cat([chosen, ri[src].float(), rv[src], pi[src].float(), pv[src]], -1)

    def extended(self, src: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """[..., S, F]: the paths of rows `src` with `tok` written at this step's slot."""
        new = self.paths[src]
        at = self.slot.expand(*src.shape, 1, new.shape[-1])
        return new.scatter(-2, at, self.entry(src, tok).unsqueeze(-2))

    def rows(self, tokens: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        """[R, S, F]: the rows' paths after the search chose `tokens` (rows from `parents`)."""
        src = torch.arange(tokens.shape[0], device=tokens.device) if parents is None else parents
        return self.extended(src, tokens)


def pooled(old: torch.Tensor, at, parent: torch.Tensor, tok: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """The pool's paths [B, s, S, F] after `merge` kept `sel` [B, s] among its s hypotheses
    (`old`) and the candidates `tok` [B, n] continuing rows `parent` [B, n]."""
    both = torch.cat([old, at.logprobs.extended(parent, tok)], 1)
    return both.gather(1, sel[..., None, None].expand(-1, -1, *both.shape[2:]))


def carried(state: dict, at, parent: torch.Tensor, tok: torch.Tensor, sel: torch.Tensor) -> dict:
    """{"lp": the pool's paths after `merge` (see `pooled`)}, or {} without log-probs."""
    return {} if at.logprobs is None else {"lp": pooled(state["lp"], at, parent, tok, sel)}


def pool_state(cfg, shape: tuple[int, ...], seq_len: int, device) -> dict:
    """A beam pool's empty paths (under "lp"), shaped `shape` + [S, F]; {} without log-probs."""
    if not cfg.logprobs:
        return {}
    return {"lp": torch.zeros(*shape, seq_len, width(cfg.logprobs), device=device)}


def begin(n: int, rows: int, seq_len: int, device) -> torch.Tensor | None:
    """The rows' empty paths [R, S, F], or None when no log-probs were asked for."""
    return torch.zeros(rows, seq_len, width(n), device=device) if n else None


# ----------------------------------------------------------------------------- on the host

@dataclass
class Alternative:
    """One of the N likeliest tokens at a step."""

    id: int
    text: str       # the token decoded alone
    logprob: float


@dataclass
class TokenLogprobs:
    """A returned token's log-probs (`Sequence.logprobs[i]`): under the raw model
    distribution and the processed one (see `meaning`), and the N likeliest tokens under
    each, best first (a token the stages removed is not listed).

        >>> outs = decode.generate(m, "greedy | max 8", ["ROMEO:"], logprobs=3)
        >>> outs[0].sequences[0].logprobs[0].top_processed[0].text
    """

    id: int
    text: str
    raw: float | None         # None: not a finite number (never written as NaN or Infinity)
    processed: float | None   # None: the stages had removed it (-inf)
    top_raw: list[Alternative] = field(default_factory=list)
    top_processed: list[Alternative] = field(default_factory=list)


def meaning(search, n: int) -> dict:
    """What a completion's log-probs are, for its JSON (`Completion.logprobs`)."""
    processed = ("log_softmax of the logit stages' output (what the token adds to the sequence's score)"
                 if search.renormalizes else
                 "the logit stages' output on log_softmax of the logits, as it is (what the token adds "
                 "to the beam's score before the length penalty)")
    return {"format": FORMAT, "top": n, "raw": "log_softmax of the model's logits", "processed": processed}


def tokens(vectors: list[list[float]], ids: list[int], tokenizer) -> list[TokenLogprobs]:
    """Each returned token's log-probs, from its path vectors (one per id, `width(N)` floats)."""
    n, texts = (len(vectors[0]) - 2) // 4 if vectors else 0, {}

    def text(i: int) -> str:
        if i not in texts:
            texts[i] = tokenizer.decode([i]) if tokenizer is not None else ""
        return texts[i]

    def alternatives(at: list[float], lp: list[float]) -> list[Alternative]:
        return [Alternative(int(i), text(int(i)), v) for i, v in zip(at, lp) if math.isfinite(v)]

    out = []
    for tok, vec in zip(ids, vectors):
        raw, proc, rest = vec[0], vec[1], vec[2:]
        out.append(TokenLogprobs(tok, text(tok), _finite(raw), _finite(proc),
                                 alternatives(rest[:n], rest[n:2 * n]), alternatives(rest[2 * n:3 * n], rest[3 * n:])))
    return out


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
