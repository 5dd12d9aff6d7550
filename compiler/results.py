"""What a run returns (Completions of Sequences), and the messages when it cannot: a row
the model or a stage broke, a search that found nothing or a score that is not a number.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from decode import jsonl
from decode.compiler.logprobs import TokenLogprobs, tokens
from decode.compiler.step import MODEL, STAGE
from decode.runtime.errors import ModelError


@dataclass
class Sequence:
    ids: list[int]          # new tokens only (a final EOS included)
    text: str
    score: float
    finish: str             # "eos" | "max" | "stop"
    logprobs: list[TokenLogprobs] | None = None  # per token, with `logprobs=N` (logprobs.py)
    draw: int | None = None  # `sample n`: which of the n draws it is (results are best first)
    speculative: dict | None = None  # draft / lookup: drafts "proposed" and "accepted" per round
    inclusion: float | None = None  # `cpsbs`: the log of its estimated inclusion probability


@dataclass
class Completion:
    prompt: str | None
    prompt_ids: list[int]
    recipe: str             # canonical form
    fingerprint: str
    sequences: list[Sequence] = field(default_factory=list)
    logprobs: dict | None = None  # what the sequences' log-probs mean (logprobs.meaning), if asked for
    provenance: dict | None = None  # seed, model hash, versions, device (provenance.py)

    def to_json(self) -> dict:
        d = asdict(self)
        for s in d["sequences"]:  # a field a run did not fill is left out, as before it existed
            for k in ("logprobs", "draw", "speculative", "inclusion"):
                if s[k] is None:
                    del s[k]
        keys = ("prompt", "prompt_ids", "recipe", "fingerprint", "sequences")
        return {k: d[k] for k in keys + tuple(k for k in ("logprobs", "provenance") if d[k] is not None)}

    def dumps(self) -> str:
        return jsonl.dumps(self.to_json())


def completions(results, recipe, model, texts, ids, stops, logprobs: dict | None = None,
                distinct: bool = False) -> list[Completion]:
    """The search's results (per prompt: (new ids, score, finish[, log-prob vectors or None[,
    draw or None[, log inclusion]]])) as Completions, each text cut at its first stop string;
    `logprobs`: what the vectors mean. `distinct` (beams, which search on past a stop string):
    of hypotheses cut to the same tokens, only the best is kept."""
    out = []
    for i, found in enumerate(results):
        seqs, seen = [], set()
        for new_ids, score, finish, *rest in found:
            lp, draw, inclusion = (rest + [None, None, None])[:3]
            cut = stops.cut(new_ids) if stops.strings else None
            if cut is not None:
                new_ids, finish = new_ids[:cut], "stop"
                if distinct and tuple(new_ids) in seen:
                    continue
            seen.add(tuple(new_ids))
            text = model.tokenizer.decode(new_ids) if model.tokenizer is not None else ""
            per = tokens(lp[:len(new_ids)], new_ids, model.tokenizer) if lp is not None else None
            seqs.append(Sequence(ids=list(new_ids), text=text, score=float(score), finish=finish, logprobs=per,
                                 draw=draw, inclusion=inclusion))
        _check_result(i, seqs, recipe)
        out.append(Completion(prompt=texts[i], prompt_ids=ids[i], recipe=recipe.canonical,
                              fingerprint=recipe.fingerprint, sequences=seqs, logprobs=logprobs or None))
    return out


def check_health(health: list[int], plan, model, k: int) -> None:
    """Raise if the step noted a broken row: ModelError when the model's logits were not
    finite, ValueError naming the logit stage that removed every token (or made NaN)."""
    t, row, code = health
    if t < 0:
        return
    where = f"step {t}, prompt {row // k}"
    if code == MODEL:
        raise ModelError(f"the model's logits are NaN or infinite at {where}: {_weights_problem(model)}")
    clause = plan.recipe.stages[(code - STAGE) // 2]
    kernel = plan.stages[(code - STAGE) // 2].kernel
    who = f"'{clause.canonical}'"
    if getattr(kernel, "where", None):  # a user stage: say where its code is
        who += f" (the user stage {kernel.where})"
    if (code - STAGE) % 2 == 0:
        raise ValueError(f"{where}: every token was removed by {who}: its scores were all -inf; "
                         "loosen it (or the clauses before it) so that at least one token stays")
    raise ValueError(f"{where}: every token was removed by {who}: it made the scores NaN or "
                     "infinite; its numbers (or the scores the clauses before it gave it) "
                     "overflow float32: use smaller values")


def _weights_problem(model) -> str:
    """Why a model's logits are not finite: NaN/Inf weights (named), else the activations."""
    source = getattr(model, "source", None) or "the checkpoint"
    for name, p in getattr(model, "named_parameters", lambda: ())():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            return (f"the checkpoint's weights contain NaN/Inf ({name} in {source}); "
                    "re-download or re-convert it")
    return ("its weights are finite, so the activations overflowed; load the model in float32 "
            "(--dtype float32)")


def _check_result(i: int, seqs: list[Sequence], recipe) -> None:
    """Every prompt gets at least one sequence, and every score is a finite number."""
    search = f"'{recipe.search.canonical}'"
    if not seqs:
        raise ValueError(f"prompt {i}: {search} found no sequence: the logit stages removed "
                         "every continuation; loosen them")
    for j, s in enumerate(seqs):
        if not math.isfinite(s.score):
            raise ValueError(f"prompt {i}: {search} gave sequence {j} the score {s.score}: the "
                             "scores overflowed float32; use smaller penalties, biases or lenpen")
