"""Re-running one result line: its recipe, prompt ids, seeds and settings, on the model,
device and dtype its provenance names (compiler/provenance.py), compared token for token.

    >>> models = Models(None)
    >>> found = replay(line, 3, models)       # a Verdict
    >>> found.verdict, found.why
    ('identical', '2 sequences, 16 tokens')

A line without provenance, whose model cannot be loaded here, whose checkpoint hashes to
something else, or that ran on a device this machine lacks is "not reproducible here",
saying which. A recipe edited after the run (it no longer has the line's fingerprint) is
"different" even when its tokens happen to agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FORMAT = 1  # of `Verdict.to_json`
IDENTICAL, DIFFERENT, ELSEWHERE = "identical", "different", "not reproducible here"
SCORE_TOL = 1e-4


@dataclass
class Verdict:
    line: int
    id: str | int | None
    recipe: str
    verdict: str                # IDENTICAL, DIFFERENT or ELSEWHERE
    why: str
    first: dict | None = None   # the first differing token: sequence, index, expected, got

    def first_text(self) -> str:
        """The first differing token for a table cell: 'seq J token I: ID 'text' -> ID 'text''."""
        if self.first is None:
            return ""
        shown = [f"{t['id']} {t['text']!r}" if t else "(ended)" for t in (self.first["expected"], self.first["got"])]
        return f"seq {self.first['sequence']} token {self.first['index']}: {shown[0]} -> {shown[1]}"

    def to_json(self) -> dict:
        return {"replay": FORMAT, "line": self.line, "id": self.id, "recipe": self.recipe,
                "verdict": self.verdict, "why": self.why, "first_difference": self.first}


class Models:
    """The models lines ask for, each loaded once per (model, device, dtype); `override`
    (`--model`) stands in for whatever the lines name."""

    def __init__(self, override: str | None):
        self.override, self.loaded = override, {}

    def get(self, prov: dict):
        import decode
        from decode.runtime import ModelError

        key = (self.override or prov["model"], prov["device"], prov["dtype"])
        if key not in self.loaded:
            try:
                self.loaded[key] = decode.load(key[0], device=key[1], dtype=key[2])
            except (ModelError, OSError, RuntimeError, ValueError) as err:  # said on each line that needs it
                self.loaded[key] = err
        return self.loaded[key]


def replay(obj: dict, n: int, models: Models) -> Verdict:
    """The verdict on result line `n` (a parsed `decode run --json`/`--out` object)."""
    from decode.compiler.provenance import problem

    def made(verdict: str, why: str, first: dict | None = None) -> Verdict:
        return Verdict(n, obj.get("id"), obj["recipe"], verdict, why, first)

    prov = obj.get("provenance")
    if prov is None:
        return made(ELSEWHERE, "the line records no provenance (written before decode recorded seeds and "
                               "model hashes): rerun it with `decode run` to get a line that replays")
    bad = problem(prov)
    if bad:
        return made(ELSEWHERE, f"its provenance is not decode's: {bad}")
    where = _elsewhere(prov)
    if where:
        return made(ELSEWHERE, where)
    model = models.get(prov)
    if isinstance(model, Exception):
        name = models.override or prov["model"] or "the demo model"
        return made(ELSEWHERE, f"model {name} cannot be loaded here: {' '.join(str(model).split())}")
    from decode.compiler.provenance import stamp

    here = stamp(model, prov["compiled"])
    if prov["model_hash"] is None or here["model_hash"] != prov["model_hash"]:
        return made(ELSEWHERE, _other_model(prov, here, models.override))
    return _compare(obj, prov, model, here, made)


def _elsewhere(prov: dict) -> str | None:
    """Why this machine cannot run on the recorded device, or None."""
    import torch

    try:
        dev = torch.device(prov["device"])
    except (RuntimeError, ValueError):
        return f"it ran on {prov['device']!r}, which this torch does not know"
    if dev.type == "cpu":
        return None
    kind = getattr(torch, dev.type, None)  # torch.cuda, torch.mps, ...
    count = getattr(kind, "device_count", lambda: 1)
    if kind is None or not kind.is_available() or (dev.index or 0) >= count():
        return f"it ran on {prov['device']} ({prov['dtype']}), a device this machine lacks"
    return None


def _other_model(prov: dict, here: dict, override: str | None) -> str:
    if prov["model_hash"] is None:
        return "the line names no model hash (its model was built in memory, not loaded from files)"
    name = override or prov["model"] or "the demo model"
    return (f"another model: the line was made with {_short(prov['model_hash'])}, {name} here is "
            f"{_short(here['model_hash'])} (its weights, config or tokenizer differ)")


def _short(digest: str | None) -> str:
    return (digest or "no hash")[:19]


def _compare(obj: dict, prov: dict, model, here: dict, made) -> Verdict:
    from decode.compiler.engine import run
    from decode.compiler.plan import compile as lower
    from decode.dsl import RecipeError, parse
    from decode.runtime import ModelError

    try:
        recipe = parse(obj["recipe"])
    except RecipeError as err:
        return made(DIFFERENT, f"its recipe no longer parses: {err}")
    edited = (f"the recipe was edited: it fingerprints as {recipe.fingerprint}, the line says {obj['fingerprint']}"
              if recipe.fingerprint != obj["fingerprint"] else None)
    seeds = [prov["prompt_seed"]] if prov["prompt_seed"] is not None else None
    top = obj["logprobs"].get("top", 0) if isinstance(obj.get("logprobs"), dict) else 0
    try:
        done = run(lower(recipe), model, [obj["prompt_ids"]], seed=prov["seed"], seeds=seeds,
                   compiled=prov["compiled"], logprobs=top)[0]
    except (ValueError, RuntimeError, TypeError, ModelError) as err:
        return made(DIFFERENT, f"the rerun stopped: {' '.join(str(err).split())}")
    got, draft = done.sequences, done.provenance.get("draft_hash")
    if draft != prov.get("draft_hash"):  # the recipe's draft model: its files changed
        was = prov.get("draft_hash")
        return made(ELSEWHERE, "the line records no draft model hash (written before decode recorded it)"
                    if was is None else f"another draft model: the line was made with {_short(was)}, the "
                    f"recipe's draft here is {_short(draft)} (its weights, config or tokenizer differ)")
    first, why = _first_difference(obj["sequences"], got, model)
    notes = [w for w in (edited, _versions(prov, here)) if w]
    if first is None and why is None and edited is None:
        tokens = sum(len(s.ids) for s in got)
        return made(IDENTICAL, "; ".join([f"{len(got)} sequence{'s' * (len(got) != 1)}, {tokens} tokens", *notes]))
    return made(DIFFERENT, "; ".join(w for w in [why, *notes] if w), first)


def _first_difference(want: list, got: list, model) -> tuple[dict | None, str | None]:
    """(the first differing token, a sentence) between the recorded and the new sequences."""
    for j, (w, g) in enumerate(zip(want, got)):
        ids = w.get("ids") if isinstance(w, dict) else None
        if not isinstance(ids, list):
            return None, f"sequence {j} of the line has no token ids"
        for i in range(max(len(ids), len(g.ids))):
            a, b = (ids[i] if i < len(ids) else None), (g.ids[i] if i < len(g.ids) else None)
            if a != b:
                first = {"sequence": j, "index": i, "expected": _token(a, model), "got": _token(b, model)}
                return first, f"sequence {j} differs at token {i}"
        if w.get("finish") != g.finish:
            return None, f"sequence {j} has the same tokens but ended by {g.finish!r}, not {w.get('finish')!r}"
        score = w.get("score")
        if not (isinstance(score, (int, float)) and math.isclose(score, g.score, rel_tol=SCORE_TOL, abs_tol=SCORE_TOL)):
            return None, f"sequence {j} has the same tokens but scores {g.score:.6g}, not {score!r}"
    if len(want) != len(got):
        return None, f"the line has {len(want)} sequences, the rerun {len(got)}"
    return None, None


def _token(token: int | None, model) -> dict | None:
    """A token as {"id", "text"} (None past a sequence's end)."""
    from decode.traces.record import token_text  # its leading space kept

    return None if token is None else {"id": token, "text": token_text(model.tokenizer, token)}


def _versions(prov: dict, here: dict) -> str | None:
    moved = [f"{k} {prov[k]} (here {here[k]})" for k in ("decode", "torch") if prov[k] != here[k]]
    return ("recorded with " + ", ".join(moved)) if moved else None
