"""`decode.steps`: a search, step by step, for debugging by eye.

    for st in decode.steps(m, "beam 4 | diverse groups=2 penalty=0.5 | max 8", "ROMEO:"):
        print(st)                      # rows, candidates, what was kept and why, finished
    st.result                          # on the last step: the Completion `generate` returns

The engine runs eagerly in a worker thread with the search's trace on (`run(...,
trace=True, on_step=...)`); each step's record is handed over as it is made, so a `break`
stops the decoding. Rows, texts and hypotheses are rebuilt from what the search reported
(`search.record.candidates` plus the rows each new row continues), so they agree with
`generate` token for token. Torch stays in the worker; records are plain Python.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator

from decode.compiler.arguments import check_model, logprobs_value, one_prompt, recipe_plan, seed_value
from decode.compiler.engine import Completion, run
from decode.compiler.logprobs import TokenLogprobs, tokens as token_logprobs
from decode.compiler.plan import Plan
from decode.traces.record import eos_and_pad, token_text
from decode.traces.tree import Seen, Tree, choice, per_prompt, ranks_sequences


@dataclass
class Candidate:
    """A continuation the search considered: row `row` + `token`.

    `score` is what the search ranked: the processed log-prob of the token (greedy,
    sample) or the sequence score (beam family), the diversity `penalty` already taken off.
    """

    row: int
    token: int
    piece: str | None
    score: float
    penalty: float
    group: int
    kept: bool
    finished: bool
    becomes: int | None = None  # the row it continues as, if kept and not finished

    @property
    def why(self) -> str:
        """What happened to it, in words: 'kept as row 2 (group 1, penalty 0.5)'."""
        if self.kept and self.finished:
            what = "finished: a hypothesis"
        elif self.kept:
            what = f"kept as row {self.becomes}" if self.becomes is not None else "kept"
        else:
            what = "pruned"
        extra = [f"group {self.group}"] if self.group else []
        if self.penalty:
            extra.append(f"penalty {self.penalty:.3g}")
        return what + (f" ({', '.join(extra)})" if extra else "")


@dataclass
class Row:
    """One row after a step: its new tokens so far, their text, the row it continued."""

    index: int
    ids: list[int]
    text: str
    parent: int
    score: float | None     # the search's score of the row (a sum of log-probs for greedy/sample)
    active: bool = True     # False: the row has ended (or its group is done) and writes padding
    logprobs: list[TokenLogprobs] | None = None  # per token of `ids`, with `logprobs=N`; else None


@dataclass
class Hypothesis:
    ids: list[int]
    text: str
    score: float | None     # sum of processed log-probs (before any length penalty)
    step: int
    logprobs: list[TokenLogprobs] | None = None  # per token of `ids`, with `logprobs=N`; else None


@dataclass
class Step:
    """What the search did at step `t` (0-based; token t + 1 of every row)."""

    t: int
    recipe: str
    rows: list[Row]
    candidates: list[Candidate]
    finished: list[Hypothesis]          # hypotheses that ended so far, in order of ending
    result: Completion | None = field(default=None, repr=False)  # on the last step only

    @property
    def chosen(self) -> list[Candidate]:
        return [c for c in self.candidates if c.kept]

    def __str__(self) -> str:
        lines = [f"step {self.t}  ({self.recipe})", "  rows: score, text so far, the row it continued"]
        for r in self.rows:
            score = "" if r.score is None else f"{r.score:9.3f}"
            state = "" if r.active else "  (ended)"
            lines.append(f"  row {r.index}  {score}  {r.text!r}  <- row {r.parent}{state}")
        if self.candidates:
            lines.append("  candidates: row + token, score (penalty taken off), what happened")
        for c in self.candidates:
            lines.append(f"    row {c.row} + {c.piece!r:<12} {c.score:9.3f}  {c.why}")
        for h in self.finished:
            score = "" if h.score is None else f"  {h.score:.3f}"
            lines.append(f"  finished at step {h.step}: {h.text!r}{score}")
        if self.result is not None:
            lines.append("  result: " + "; ".join(f"{s.text!r} {s.score:.3f}" for s in self.result.sequences))
        return "\n".join(lines)


class _Stopped(Exception):
    """The consumer closed the generator: end the worker's run."""


def steps(model, recipe, prompt: str | list[int], seed: int | None = None, logprobs: int = 0) -> Iterator[Step]:
    """Decode one prompt eagerly, yielding a `Step` per step; see the module docstring.
    `logprobs=N`: each row carries its tokens' log-probs (`Row.logprobs`), as `generate`'s
    sequences do.

    The arguments are checked on the call, not on the first step."""
    check_model(model)
    return _steps(recipe_plan(recipe), model, one_prompt(prompt), seed_value(seed),
                  logprobs_value(logprobs, model.config.vocab_size))


def _steps(plan: Plan, model, prompt: str | list[int], seed: int | None, logprobs: int) -> Iterator[Step]:
    handoff: queue.Queue = queue.Queue(maxsize=1)
    closed = threading.Event()

    def on_step(t, tokens, info):
        if closed.is_set():
            raise _Stopped
        handoff.put(("step", int(t), tokens.tolist(), {k: v.tolist() for k, v in info.items()}))

    def work():
        try:
            out = run(plan, model, [prompt], seed=seed, compiled=False, on_step=on_step, trace=True,
                      logprobs=logprobs)
            handoff.put(("done", out[0]))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            handoff.put(("error", err))

    worker = threading.Thread(target=work, name="decode-steps", daemon=True)
    worker.start()
    build = _Builder(plan, model, prompt)
    held = None
    try:
        while True:
            kind, *msg = handoff.get()
            if kind == "error":
                raise msg[0]
            if kind == "done":
                if held is not None:
                    held.result = msg[0]
                    yield held
                return
            if held is not None:
                yield held
            held = build.step(*msg)
    finally:
        closed.set()
        while worker.is_alive():  # let a worker blocked on the hand-over reach _Stopped
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


class _Builder:
    """Rows, candidates and hypotheses from one prompt's step records, on `tree.Tree`'s tree.

    A row goes on while the tree gives it a new node; a node that ends is a finished
    hypothesis; a row with no new node (it ended, its group is done, the search dropped it)
    writes padding and is shown frozen. A token the step did not list (greedy and sampling
    list only a few per row) has no candidate, and its score is unknown (None).
    """

    def __init__(self, plan: Plan, model, prompt):
        self.recipe = plan.recipe.canonical
        self.tok = getattr(model, "tokenizer", None)
        self.summed = not ranks_sequences(plan.search)  # a row's score sums its tokens' log-probs
        self.eos, self.pad = eos_and_pad(model)
        self.tree: Tree | None = None  # made on the first step, which says how many rows
        self.rows: list[Row] = []
        self.finished: list[Hypothesis] = []

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids) if self.tok is not None else " ".join(map(str, ids))

    def step(self, t: int, tokens: list[int], info: dict) -> Step:
        if self.tree is None:
            self.tree = Tree(len(tokens), self.eos, self.pad, not self.summed)
            logged = "logprobs" in info
            self.rows = [Row(i, [], "", i, 0.0 if self.summed else None, logprobs=[] if logged else None)
                         for i in range(len(tokens))]
        prev = self.rows
        entries = info.pop("logprobs", None)  # [R][F]: each row's entry for this step's token
        offered = info.pop("offered", [[]])[0]  # [C][F]: each candidate's (its row and token decide it)
        (cands, _, sources), = per_prompt(tokens, info, 1)
        by_choice = {choice(c): e for c, e in zip(cands, offered)}

        def logged(s: Seen, entry) -> list[TokenLogprobs] | None:  # its row's tokens', then this one's
            if entries is None or entry is None:
                return None
            return prev[s.row].logprobs + token_logprobs([entry], [s.token], self.tok)

        seen = self.tree.step(cands, tokens, sources)
        made = {s.node: self._grown(s, prev) for s in seen if s.node is not None}
        shown = {id(s): Candidate(s.row, s.token, token_text(self.tok, s.token), s.logp, s.penalty,
                                  s.group, s.kept, s.finished) for s in seen if s.logp is not None}
        rows, lps = [], {}
        for r, (src, node) in enumerate(zip(sources, self.tree.rows)):
            if node not in made:
                before = prev[src]
                rows.append(Row(r, before.ids, before.text, src, before.score, False, before.logprobs))
                continue
            s, ids, score = made[node]
            if id(s) in shown and not s.finished:
                shown[id(s)].becomes = r
            lps[node] = logged(s, entries and entries[r])
            rows.append(Row(r, ids, self.text(ids), src, score, not s.finished, lps[node]))
        self.finished += [Hypothesis(ids, self.text(ids), score, t,
                                     lps[node] if node in lps else logged(s, by_choice.get((s.row, s.token))))
                          for node, (s, ids, score) in made.items() if s.finished]
        self.rows = rows
        return Step(t, self.recipe, rows, list(shown.values()), list(self.finished))

    def _grown(self, s: Seen, prev: list[Row]) -> tuple[Seen, list[int], float | None]:
        """A new node: its candidate, its tokens, its score (the search's own, or a running sum)."""
        before = prev[s.row]
        score = s.logp
        if self.summed:
            score = None if s.logp is None or before.score is None else before.score + s.logp
        return s, before.ids + [s.token], score
