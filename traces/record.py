"""Search traces: every candidate a search considered, step by step, as JSON lines.

    $ decode run "beam 4 | max 16" --prompt "ROMEO:" --trace trace.jsonl
    $ decode viz trace.jsonl --html tree.html

A trace file holds three kinds of line, told apart by "type":

    header  {"type": "header", "trace": 1, "recipe", "fingerprint", "search", "rows",
             "groups", "eos", "prompts": [{"prompt", "prompt_ids"}], "provenance"}
    cand    {"type": "cand", "step", "prompt", "row", "token", "text", "logp", "group",
             "kept", "finished", "node", "parent_node"}
    final   {"type": "final", "results": [{"prompt", "sequences": [{"ids", "text",
             "score", "finish", "node"}]}]}

A sequence of `draft` or `lookup` (speculative decoding) also has "speculative" in the final
line: {"proposed": [...], "accepted": [...]}, the drafts each of its rounds proposed and the
target accepted, as in `decode run --json`; its cand lines are those plain decoding writes
(the verify forward's scores at each position), so viz draws it as plain greedy or sampling.
The header's "provenance" (what `decode run --trace` ran: seed, model hash, versions,
device; compiler/provenance.py) is left out by a writer that was given none.
`row` is the row (within its prompt) that the candidate extends; `logp` the processed
log-prob (or the search's score for the beam family). A kept candidate becomes a tree node
with a fresh `node` id; `parent_node` names the node it extends (null: the prompt itself),
so a reader rebuilds the tree without knowing how the search assigns rows: a candidate's
`step` is its parent's plus one (the prompt's is -1). Candidates of rows that already
finished, and impossible ones (score -inf or the -1e9 filler), are left out. `SHAPES` says
what each line holds and `problem` checks a line against it. The tree is `tree.Tree`'s, the
same `decode.steps` shows. Torch-free on import: tensors are read with `.tolist()`.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import stat
from typing import IO

from decode import jsonl
from decode.traces.tree import FIELDS, Tree, per_prompt, ranks_sequences

VERSION = 1


class TraceRecorder:
    """An `on_step` callback that writes a trace while the engine runs; the tree it writes
    is `tree.Tree`'s, one per prompt, their node ids shared.

        >>> rec = TraceRecorder(open("t.jsonl", "w"), plan, model, ["ROMEO:"])
        >>> outs = engine.run(plan, model, ["ROMEO:"], on_step=rec, trace=True)
        >>> rec.finish(outs)
    """

    def __init__(self, out: IO[str], plan, model, prompts: list, ids: list[list[int]] | None = None,
                 provenance: dict | None = None):
        self.out = out
        self.provenance = provenance  # provenance.stamp of the run, in the header when given
        self.plan = plan
        self.tok = getattr(model, "tokenizer", None)
        self.eos, self.pad = eos_and_pad(model)
        self.prompts = [p if isinstance(p, str) else None for p in prompts]
        self.ids = ids or [self.tok.encode(p) if isinstance(p, str) else [int(x) for x in p] for p in prompts]
        self.search = plan.search.__name__   # shown by viz, never decided on
        self.groups = groups(plan)
        self.trees: list[Tree] = []
        self.pieces: dict[int, str | None] = {}
        self.started = False

    # -- writing ---------------------------------------------------------------------
    def _write(self, obj: dict) -> None:
        self.out.write(jsonl.dumps(obj) + "\n")

    def _start(self, k: int) -> None:
        node_ids = itertools.count()
        self.trees = [Tree(k, self.eos, self.pad, ranks_sequences(self.plan.search), node_ids) for _ in self.ids]
        self._write({"type": "header", "trace": VERSION, "recipe": self.plan.recipe.canonical,
                     "fingerprint": self.plan.recipe.fingerprint, "search": self.search,
                     "rows": k, "groups": self.groups, "eos": self.eos,
                     "prompts": [{"prompt": p, "prompt_ids": i} for p, i in zip(self.prompts, self.ids)],
                     **({"provenance": self.provenance} if self.provenance is not None else {})})
        self.started = True

    def piece(self, token: int) -> str | None:
        if token not in self.pieces:
            self.pieces[token] = token_text(self.tok, token)
        return self.pieces[token]

    # -- the callback -----------------------------------------------------------------
    def __call__(self, t, tokens, info=None) -> None:
        if not info:
            raise ValueError("a trace needs the search's candidates: run the engine with trace=True")
        chosen = [int(x) for x in tokens.tolist()]
        if not self.started:
            self._start(len(chosen) // len(self.ids))
        lists = {f: info[f].tolist() for f in (*FIELDS, "from") if f in info}
        for b, (cands, mine, sources) in enumerate(per_prompt(chosen, lists, len(self.ids))):
            for s in self.trees[b].step(cands, mine, sources):
                self._write({"type": "cand", "step": int(t), "prompt": b, "row": s.row, "token": s.token,
                             "text": self.piece(s.token), "logp": s.logp, "group": s.group, "kept": s.kept,
                             "finished": s.finished, "node": s.node, "parent_node": s.ref})
        self.out.flush()

    # -- the end ------------------------------------------------------------------------
    def finish(self, completions) -> None:
        """Write the final line: each prompt's returned sequences and the node each ends at."""
        if not self.started:
            self._start(0)
        results = []
        for b, comp in enumerate(completions):
            seqs = []
            for s in comp.sequences:
                seqs.append({"ids": list(s.ids), "text": s.text, "score": _num(s.score),
                             "finish": s.finish, "node": self.trees[b].locate(s.ids),
                             **({"speculative": s.speculative} if getattr(s, "speculative", None) else {})})
            results.append({"prompt": b, "sequences": seqs})
        self._write({"type": "final", "results": results})
        self.out.flush()


def groups(plan) -> int:
    """How many groups the plan's search splits its rows into, as the search itself says
    (`.groups`; 1 when it has none). Builds the search, so torch is imported here, not above.

        >>> from decode.compiler.plan import compile as lower
        >>> groups(lower("beam 4 | diverse groups=2")), groups(lower("beam 4"))
        (2, 1)
    """
    from decode.compiler.search.base import SearchConfig

    search = plan.search(SearchConfig(batch=1, params=plan.search_params, modifiers=plan.modifiers,
                                      sampling=plan.sampling))
    return int(getattr(search, "groups", 1))


def eos_and_pad(model) -> tuple[list[int], int]:
    """The model's EOS ids and the token a row writes once it stopped, by the engine's rule.

        >>> eos_and_pad(decode.load())
        ([2], 2)
    """
    from decode.compiler.engine import eos_ids, pad_id  # a model is loaded: so is torch

    eos = eos_ids(model)
    return list(eos), pad_id(model, eos)


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def token_text(tok, token: int) -> str | None:
    """A token's surface text, its leading space kept (sentencepiece '▁' -> ' ')."""
    if tok is None:
        return None
    sp = getattr(tok, "sp", None)
    if sp is not None:
        piece = sp.IdToPiece(int(token))
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            code = int(piece[3:5], 16)
            return chr(code) if code < 0x80 else piece   # a lone UTF-8 byte is not text
        return piece.replace("\u2581", " ")
    tk = getattr(tok, "tk", None)
    if tk is not None:
        piece = tk.id_to_token(int(token))
        if piece is not None:
            return piece.replace("\u0120", " ").replace("\u010a", "\n").replace("\u2581", " ")
    try:
        return tok.decode([int(token)])
    except Exception:  # a tokenizer that cannot decode a lone id: show the id instead
        return None


# ----------------------------------------------------------------------------- the shape


def target_problem(path: str, others: dict[str, str]) -> str | None:
    """Why `--trace PATH` may not be written, or None. A trace is rewritten on every run, so
    an existing file is replaced only if it is a trace (its first line a trace header) and
    none of the run's other files (`others`: flag -> path) under another name.

        >>> target_problem("notes.txt", {}) is None   # True unless notes.txt exists
    """
    for flag, other in others.items():
        if other and os.path.exists(other) and os.path.exists(path) and os.path.samefile(path, other):
            return f"--trace {path} is the {flag} file: writing the trace would destroy it; give another name"
    return replace_problem("--trace", path, "a trace `decode run --trace` wrote", ".jsonl", _is_trace)


def _is_trace(f) -> bool:
    first = f.readline(1 << 16)
    try:
        header = json.loads(first) if first else None
    except ValueError:
        return False
    return not first or (isinstance(header, dict) and header.get("type") == "header")


def replace_problem(flag: str, path: str, what: str, ext: str, ours) -> str | None:
    """Why an existing `path` may not be replaced, or None: it is not a regular file, or
    `ours(binary file)` says it is not `what` (a file decode wrote), so it is the user's.

        >>> replace_problem("--trace", "t.jsonl", "a trace", ".jsonl", _is_trace) is None
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(mode):
        return f"{flag} {path} is not a regular file: give the path of a new {ext} file"
    with open(path, "rb") as f:
        if not ours(f):
            return (f"{flag} {path} exists and is not {what}; it is left as it is: give another "
                    f"name, or remove it first")
    return None


# What each kind of line holds, for readers (viz checks every line with `problem`). A key
# maps to the JSON kinds its value may take; [shape] is a list of values of that shape and
# a dict an object with those keys. Keys beyond these are ignored, so a newer writer may add.
COUNT, INT, NUMBER, TEXT, BOOL, NULL = "count", "integer", "number", "text", "bool", "null"
SHAPES: dict[str, dict] = {
    "header": {"type": TEXT, "trace": INT, "recipe": TEXT, "fingerprint": TEXT, "search": TEXT,
               "rows": COUNT, "groups": COUNT, "eos": [COUNT],
               "prompts": [{"prompt": (TEXT, NULL), "prompt_ids": [COUNT]}]},
    "cand": {"type": TEXT, "step": COUNT, "prompt": COUNT, "row": COUNT, "token": COUNT,
             "text": (TEXT, NULL), "logp": (NUMBER, NULL), "group": COUNT, "kept": BOOL,
             "finished": BOOL, "node": (COUNT, NULL), "parent_node": (COUNT, NULL)},
    "final": {"type": TEXT, "results": [{"prompt": COUNT, "sequences": [
        {"ids": [COUNT], "text": (TEXT, NULL), "score": (NUMBER, NULL), "finish": TEXT,
         "node": (COUNT, NULL)}]}]},
}
_SAID = {COUNT: "a whole number >= 0", INT: "a whole number", NUMBER: "a finite number",
         TEXT: "a string", BOOL: "true or false", NULL: "null"}


def problem(line) -> str | None:
    """What is wrong with one parsed trace line (its kind from "type"), or None.

        >>> problem({"type": "final", "results": [{"prompt": -1, "sequences": []}]})
        '"results[0].prompt" must be a whole number >= 0, got -1'
    """
    if not isinstance(line, dict):
        return f"a trace line is a JSON object, got {brief(line)}"
    kind = line.get("type")
    if not isinstance(kind, str) or kind not in SHAPES:
        return f'"type" must be one of {", ".join(SHAPES)}, got {brief(kind)}'
    return _mismatch(line, SHAPES[kind], "")


def _mismatch(value, shape, where: str) -> str | None:
    """The first place where `value` differs from `shape` (the schema nests a few levels;
    the data's own nesting is walked by these loops, not by recursion)."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f'"{where}" must be an object, got {brief(value)}'
        for key, inner in shape.items():
            path = f"{where}.{key}" if where else key
            if key not in value:
                return f'"{path}" is missing'
            found = _mismatch(value[key], inner, path)
            if found:
                return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f'"{where}" must be a list, got {brief(value)}'
        for i, item in enumerate(value):
            found = _mismatch(item, shape[0], f"{where}[{i}]")
            if found:
                return found
        return None
    kinds = shape if isinstance(shape, tuple) else (shape,)
    if any(_is(value, k) for k in kinds):
        return None
    return f'"{where}" must be {" or ".join(_SAID[k] for k in kinds)}, got {brief(value)}'


def _is(value, kind: str) -> bool:
    if kind in (COUNT, INT):  # bool is an int to Python, never to a trace
        return type(value) is int and (kind == INT or value >= 0)
    if kind == NUMBER:
        return type(value) in (int, float) and math.isfinite(value)
    if kind == TEXT:
        return isinstance(value, str) and _unicode(value)
    if kind == BOOL:
        return type(value) is bool
    return value is None


def _unicode(text: str) -> bool:
    """False for a lone surrogate ("\\ud800" is valid JSON but no text can show it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def brief(value) -> str:
    """A JSON value short enough to quote in a message."""
    if isinstance(value, (dict, list)):  # never dumped: it may nest thousands deep
        return "an object" if isinstance(value, dict) else f"a list of {len(value)}"
    shown = json.dumps(value, ensure_ascii=True)
    return shown if len(shown) <= 40 else shown[:37] + "..."
