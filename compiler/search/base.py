"""The search interface: one `step`, in the shape of fairseq's `Search.step`.

A search gets one step's scores for every row and returns what it chose: a `Choice` of
each row's next token, the row it continues (None: itself) and the score it carries.
That is all a search must write. What happens around it is shared:

- independent rows (greedy, sampling, sbeam, a user's search) finish at EOS and then
  write padding; the result of a row is its text up to EOS and its score (`Search`);
- the beam family hands its ended candidates to one pool of finished hypotheses, which
  owns the length penalty, `early`, done and the results (beam.py, pool.py);
- the engine records what a trace needs from what `step` returned (`record.py`).

    class Greedy(Search):
        def step(self, scores, at, state):
            x = at.process(scores)
            tok = at.select(x)[:, 0]
            return Choice(tok, None, at.score + torch.log_softmax(x, -1).gather(1, tok[:, None])[:, 0])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from decode.compiler.logprobs import ROWS
from decode.compiler.search.draw import gumbel, select  # noqa: F401  (gumbel: for searches)

# process(scores [r, V], rows: LongTensor [r] | None) -> scores: the recipe's logit stages,
# in written order, applied to the given rows (None = all rows).
Process = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class SearchConfig:
    """Everything a strategy may know that is fixed for one compiled graph."""

    batch: int                     # prompts
    params: dict                   # the search clause's resolved parameters
    modifiers: dict = field(default_factory=dict)  # modifier name -> resolved params
    sampling: bool = False         # select by sampling (True) or by argmax
    eos: tuple[int, ...] = ()      # end-of-sequence ids
    pad: int = 0                   # token written after a row has finished
    logprobs: int = 0              # alternatives per token in the log-probs (0: none; logprobs.py)
    vocab: int = 0                 # the model's vocabulary size (0: not known here)
    prompts: tuple = ()            # each prompt's token ids; what the model reads (`force` starts from them)
    tokenizer: object = None       # the model's tokenizer
    max_new: int = 0               # the recipe's `max`


class Choice(NamedTuple):
    """What a step chose: tokens [R], parents [R] (the row each new row continues; None:
    each its own), scores [R] (each row's score after this step), the search's new state."""

    tokens: torch.Tensor
    parents: torch.Tensor | None
    scores: torch.Tensor
    state: dict | None = None


@dataclass
class At:
    """What a step may read besides the scores (all tensors; no host syncs)."""

    t: torch.Tensor              # 0-d long: tokens generated so far
    process: Process             # the recipe's logit stages
    noise: torch.Tensor | None   # [R, V] uniform(0, 1) draws when the recipe samples
    seq: torch.Tensor            # [R, S] token slots of each row (prompt left-padded, then new)
    prompt: torch.Tensor         # 0-d long: the slot of the first new token
    max_new: torch.Tensor        # 0-d long
    hp: dict                     # the search's `hyper()` numbers as 0-d tensors
    score: torch.Tensor | None = None   # [R] each row's score so far (independent rows)
    alive: torch.Tensor | None = None   # [R] bool: the row has not ended
    trace: bool = False                 # the beam pool lists its candidates for a trace
    selects: Callable | None = None     # a stage that draws itself (mirostat): (logp, u) -> [X]
    logprobs: object = None             # the step's log-probs (logprobs.StepLogprobs) when asked for
    pad: torch.Tensor | None = None     # [R] each row's first real slot (prompts are left-padded)
    # a search with `ahead` (contrastive): ahead(tokens [R, K]) runs K candidates per row one
    # step ahead -> (logits [R, K, V], last hidden states [R, K, dim]); take(index [R]) says
    # which each row took: its keys, values and logits become the row's (no second forward)
    ahead: Callable | None = None
    take: Callable | None = None
    exits: torch.Tensor | None = None   # [E, R, V] early-exit logits of the layers `Search.exits` names
    hidden: torch.Tensor | None = None  # with Search.hidden: [R, dim] rows' last states (final norm)
    head: torch.Tensor | None = None    # and [V, dim] the tokens' output embeddings, same forward
    keys: torch.Tensor | None = None    # [R, 2] the rows' keys (seeded runs): draw via noise.stream(keys, tag)

    def select(self, scores: torch.Tensor, n: int = 1, u: torch.Tensor | None = None) -> torch.Tensor:
        """[X, n]: the n best entries of each row of `scores` [X, N], or n draws without replacement
        from its softmax when the recipe samples (uniforms `u`, default the step's noise as [X, N])."""
        if u is None and self.noise is not None:
            u = self.noise.reshape(scores.shape)
            if n == 1 and self.selects is not None:  # the chain's last link is that stage's draw
                return self.selects(scores, u)[:, None]
        return select(scores, n, u)


class Search:
    """A decoding strategy: set `rows` (rows per prompt), write `step`.

    `step(scores, at, state) -> Choice` runs inside the compiled step: tensors only,
    static shapes. `scores` [R, V] are the model's (log-probabilities if `logprobs`, else
    raw logits); `at.process` applies the recipe's logit stages and `at.select` the last
    link (argmax, or a draw). `init` gives the state a search carries (a dict of tensors;
    none by default) and `hyper` the numbers that reach `step` as tensors in `at.hp`, so a
    sweep over them reuses the compiled graph.

    Rows are independent here: a row that takes EOS has ended and writes padding; results
    are each row's text up to its EOS with its score, best first if `ranked`.
    """

    rows: int = 1          # rows per prompt
    logprobs: bool = True  # stages see log_softmax(logits) (beam family) or raw logits
    groups: int = 1        # groups the rows form (diverse, iterative)
    ranked: bool = True    # results sorted by score (False: in row order)
    draws: bool = False    # the rows are independent draws: each result keeps its row's index
    ranks_sequences = False  # the beam pool: its trace lists sequences' scores, not tokens'
    renormalizes = True    # a token's processed log-prob is log_softmax of the stages' output (logprobs.py)
    ahead: int = 0         # candidates per row run one step ahead (`At.ahead`; contrastive)
    hidden: str = ""       # what reads the rows' hidden states (`At.hidden`, `before_head`; "": nothing)
    refills: bool = False  # a prompt may join mid-run (refill.py): no state, nothing read of the batch

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg

    @property
    def returns(self) -> int:
        """Sequences returned per prompt (at most)."""
        return self.rows

    def hyper(self) -> dict[str, float]:
        """Numeric parameters passed as 0-d tensors in `at.hp` (name -> value)."""
        return {}

    def init(self, device: torch.device, seq_len: int) -> dict:
        """The search's own state before the first step (a dict of tensors)."""
        return {}

    def prompted(self, state: dict, hidden: torch.Tensor, seq_len: int) -> dict:
        """The state once the prompts ran, given their last hidden states [R, T, dim] (after
        the final norm; only for a search with `ahead`); `seq_len` slots a row has in all."""
        return state

    def before_head(self, keys: torch.Tensor | None, t: torch.Tensor, hp: dict):
        """With `hidden`: h [R, dim] -> h, the rows' last hidden states changed before the
        output head for step t's logits (`keys`: the rows' keys, if any), or None."""
        return None

    def exits(self, config) -> tuple[int, ...]:
        """The layers (distinct; 0: the embeddings) whose early-exit logits `step` reads in
        `at.exits`, for a model of this `LlamaConfig`: none by default. The engine asks
        before the first forward, so a search that cannot run on the model raises ModelError."""
        return ()

    def step(self, scores: torch.Tensor, at: At, state: dict) -> Choice:
        """What each row takes next, the row it continues and the score it carries."""
        raise TypeError(f"{type(self).__name__} must define step (see decode.Search)")

    def stage_params(self, spec, params: dict) -> dict:
        """A logit stage's parameters (its catalogue entry `spec`) as this search needs them."""
        return params

    def structure(self) -> tuple:
        """What the compiled graph depends on: everything but the `hyper()` numbers."""
        hyper = set(self.hyper())

        def strip(d: dict) -> tuple:
            return tuple(sorted((k, repr(v)) for k, v in d.items() if k not in hyper))

        c = self.cfg
        mods = tuple(sorted((m, strip(p)) for m, p in c.modifiers.items()))
        return (type(self), strip(c.params), mods, c.sampling, c.eos, c.pad, c.batch, c.logprobs)

    def is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(tokens, dtype=torch.bool)
        for e in self.cfg.eos:
            out = out | (tokens == e)
        return out

    # -- what the engine calls: independent rows around `step` ---------------------------
    def begin(self, device: torch.device, seq_len: int) -> dict:
        r = self.cfg.batch * self.rows
        return {"own": self.init(device, seq_len),
                "alive": torch.ones(r, dtype=torch.bool, device=device),
                "score": self.first_scores(device)}

    def first_scores(self, device: torch.device) -> torch.Tensor:
        """[R] the rows' scores before the first step."""
        return torch.zeros(self.cfg.batch * self.rows, device=device)

    def advance(self, scores: torch.Tensor, at: At, state: dict):
        """One step: (tokens [R], parents [R] or None, new state, candidates or None)."""
        at.score, at.alive = state["score"], state["alive"]
        choice = self.step(scores, at, state["own"])
        alive, score = state["alive"], state["score"]
        if choice.parents is not None:
            alive, score = alive[choice.parents], score[choice.parents]
        tokens = torch.where(alive, choice.tokens, self.cfg.pad)
        score = torch.where(alive, choice.scores, score)
        own = state["own"] if choice.state is None else choice.state
        new = {"own": own, "alive": alive & ~self.is_eos(tokens), "score": score}
        return tokens, choice.parents, new, None

    def done(self, state: dict) -> torch.Tensor:
        """0-d bool: nothing can change any more (checked every few steps)."""
        return ~state["alive"].any()

    def stop_rows(self, state: dict, rows: torch.Tensor) -> dict:
        """Rows [R] bool whose text hit a stop string end (the beam family goes on)."""
        return {**state, "alive": state["alive"] & ~rows}

    def inclusion(self, state: dict) -> torch.Tensor | None:
        """[R] each row's log inclusion probability (a set's draw: cpsbs), or None."""
        return None

    def finalize(self, state: dict, seq: torch.Tensor, lim: dict) -> list[list[tuple[list[int], float, str]]]:
        """Per prompt: (new token ids incl. a final EOS, score, finish[, log-probs, draw[,
        inclusion]]), best first (ties in draw order); with `draws`, each keeps its row's index."""
        p, n = int(lim["prompt"]), self.rows
        ids, scores = seq[:, p:].tolist(), state["score"].tolist()
        paths = state[ROWS][:, p:].tolist() if ROWS in state else [None] * len(ids)
        incl = self.inclusion(state)
        incl = None if incl is None else incl.tolist()
        out = []
        for b in range(len(ids) // n):  # the prompts of `seq` (refill.py finalizes one at a time)
            live = [r for r in range(b * n, (b + 1) * n) if scores[r] != float("-inf")]  # -inf: never lived (sbeam)
            rows = [result(ids[r], scores[r], self.cfg.eos, paths[r]) for r in live]
            if self.draws or incl is not None:
                rows = [(*x[:3], x[3] if len(x) > 3 else None, j if self.draws else None,
                         *([] if incl is None else [incl[r]])) for j, (r, x) in enumerate(zip(live, rows))]
            if self.ranked:
                rows.sort(key=lambda x: -x[1])
            out.append(rows)
        return out


def result(ids: list[int], score: float, eos: tuple[int, ...], lp: list | None = None) -> tuple:
    """One returned sequence: (its new ids up to the first EOS, its score, why it ended),
    and its tokens' log-probs (`lp`, one vector per new token: logprobs.py) when given."""
    kept, why = trim(ids, eos)
    return (kept, score, why) if lp is None else (kept, score, why, lp[:len(kept)])


def trim(ids: list[int], eos: tuple[int, ...]) -> tuple[list[int], str]:
    """Cut new tokens after the first EOS (kept); say why the sequence ended."""
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[: i + 1], "eos"
    return ids, "max"

