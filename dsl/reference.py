"""The equivalent transformers 4.55.4 `generate(...)` call, where one exists.

transformers applies its logits processors in a fixed order (`_get_logits_processor`):
sequence_bias, repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_length,
min_new_tokens, forced_bos_token_id, forced_eos_token_id, exponential_decay_length_penalty,
suppress_tokens, begin_suppress_tokens, then, only when sampling, temperature, top_k,
top_p, min_p, typical_p, epsilon, eta, and last renormalize_logits (`HF.rank`).
A recipe has a reference equivalent only if its written order gives the same result,
i.e. every pair written against that order commutes.

    >>> hf_kwargs(parse("beam 4 lenpen=0.6 | max 32"))["num_beams"]
    4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from decode.dsl.catalogue import CATALOGUE
from decode.dsl.check import parse
from decode.dsl.ir import Clause, Recipe

HF_VERSION = "4.55.4"

SCALE = "scale"  # the role of a division by one positive number (temp): a role, not cfg's parameter
WARPERS = (SCALE, "truncation")  # roles transformers applies only when sampling (`HF.role`)
POINTWISE = ("shift", "factor", SCALE)  # roles that map each logit on its own, -inf to -inf
SIGN_KEEPING = {SCALE, "factor"}  # roles (not parameter names) that keep each logit's sign


# The order `decode explain` lists generate()'s arguments in; one not listed comes after these.
SHOWN = ("do_sample", "num_beams", "num_beam_groups", "diversity_penalty", "length_penalty",
         "early_stopping", "num_return_sequences", "max_new_tokens", "min_new_tokens", "temperature",
         "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
         "no_repeat_ngram_size", "bad_words_ids", "sequence_bias", "stop_strings",
         "min_length", "forced_bos_token_id", "forced_eos_token_id", "exponential_decay_length_penalty",
         "suppress_tokens", "begin_suppress_tokens", "renormalize_logits")


def _neutral() -> dict[str, Any]:
    """Every generate() argument a clause sets (its entry's `hf.neutral`), switched off:
    transformers' own defaults, except top_k (its default 50 would truncate); what a recipe
    does not ask for is off, whatever the checkpoint's generation config says."""
    out: dict[str, Any] = {"do_sample": False}
    for spec in CATALOGUE.values():
        if spec.hf is not None:
            out.update(spec.hf.neutral)
    order = {name: i for i, name in enumerate(SHOWN)}
    return {k: out[k] for k in sorted(out, key=lambda k: order.get(k, len(SHOWN)))}


NEUTRAL: dict[str, Any] = _neutral()


class NoReference(Exception):
    """The recipe has no transformers equivalent; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenIds:
    """Placeholder for the token ids of `text` (shown as ids("text")) when no encoder is given."""

    text: str

    def __repr__(self) -> str:
        return f"ids({self.text!r})"


@dataclass(frozen=True)
class Reference:
    """`kwargs` for generate(), or None with `reason`; `notes` are caveats worth knowing."""

    kwargs: dict | None
    reason: str
    notes: tuple[str, ...] = ()


def hf_kwargs(recipe: "Recipe | str", encode: Callable[[str], Sequence[int]] | None = None) -> dict:
    """The transformers `generate(...)` kwargs equivalent to `recipe`; raises NoReference.

        >>> hf_kwargs("topp 0.9 | temp 0.7")   # written order differs from transformers'
        Traceback (most recent call last):
        NoReference: ...
    """
    ref = hf_reference(recipe, encode)
    if ref.kwargs is None:
        raise NoReference(ref.reason)
    return ref.kwargs


def hf_reference(recipe: "Recipe | str", encode: Callable[[str], Sequence[int]] | None = None) -> Reference:
    """Like `hf_kwargs`, but returns Reference(None, reason) instead of raising."""
    r = parse(recipe)
    try:
        return _reference(r, encode)
    except NoReference as err:
        return Reference(None, err.reason)


def _reference(r: Recipe, encode: Callable[[str], Sequence[int]] | None) -> Reference:
    for c in r.clauses:
        if c.spec.hf is None:
            raise NoReference(f"transformers has no equivalent of '{c.name}' ({c.spec.doc})")
    sampling, stages, notes = _selection(r)
    for c in r.clauses:
        reason = c.spec.hf.refuse(c.param_dict, sampling) if c.spec.hf.refuse else None
        if r.search.spec.hf.beams and c.spec.hf.beams_refuse:
            reason = reason or c.spec.hf.beams_refuse
        if reason:
            raise NoReference(reason)
    _check_order(stages)
    kw = _kwargs(r, stages, sampling, encode, notes)
    return Reference(kw, "equivalent", tuple(notes))


def _selection(r: Recipe) -> tuple[bool, tuple[Clause, ...], list[str]]:
    """(do_sample, the stages transformers applies, notes): an argmax clause (temp 0) makes
    sampling argmax, and without sampling transformers ignores its warpers."""
    stages, notes = r.stages, []
    sampling = any(c.sampling for c in r.clauses)  # before an argmax clause turns it off
    cold = next((c for c in stages if c.spec.is_argmax(c.param_dict)), None)
    if sampling and cold is not None:
        _check_cold(r, cold)
        sampling, stages = False, tuple(c for c in stages if c.spec.hf.role != "truncation")
        notes.append(f"{cold.spec.argmax_doc} leaves only the most likely token, so this is argmax "
                     "(do_sample=False)")
    if not sampling:
        stages = tuple(c for c in stages if c.spec.hf.role not in WARPERS)
    return sampling, stages, notes


def _kwargs(r: Recipe, stages: tuple[Clause, ...], sampling: bool, encode: Any, notes: list[str]) -> dict:
    """generate()'s arguments: what the clauses' entries set, all else neutral."""
    kw = dict(_neutral(), do_sample=sampling)
    beams = r.search.spec.hf.beams
    if beams and (any(c.spec.hf.role not in WARPERS for c in stages) or r.modifiers):
        notes.append("in beam search transformers applies its logits processors (and the "
                     "diversity penalty) to log-probabilities (log_softmax), not to raw logits")
    ids = (lambda text: list(encode(text))) if encode else TokenIds
    for c in (r.search, *r.modifiers, *stages, *r.loop_clauses):
        hf, params = c.spec.hf, c.param_dict
        kw.update(hf.kwargs(params, ids, kw))
        if hf.keep is not None:
            _keep(c, params[hf.keep], beams, notes)
        if hf.note is not None:
            notes.append(hf.note(params))
    return kw


def _keep(c: Clause, keep: int, beams: bool, notes: list[str]) -> None:
    """A truncation's `keep`: transformers' generate() cannot set min_tokens_to_keep."""
    if beams:
        notes.append(f"in beam sampling transformers keeps at least len(eos_token_id) + 1 tokens "
                     f"in {c.name} (min_tokens_to_keep); the recipe keeps {keep}")
    elif keep != 1:
        raise NoReference(f"'{c.canonical}': transformers' generate() has no min_tokens_to_keep "
                          "argument (it keeps 1 token without beams)")


def _check_cold(r: Recipe, cold: Clause) -> None:
    """An argmax clause (temp 0) with sampling clauses: equivalent to transformers' argmax
    only if nothing else could differ."""
    search = r.search
    one_draw = search.spec.hf.one_draw
    if one_draw is None or not one_draw(search.param_dict):
        raise NoReference(f"{cold.spec.argmax_doc} with '{search.canonical}': transformers cannot "
                          "express sampling from a distribution with one token here")
    odd = [c.name for c in r.stages if c.sampling and not c.spec.hf.keeps_argmax]
    if odd:
        raise NoReference(f"{cold.spec.argmax_doc} with {', '.join(odd)}: {odd[0]} may drop the most "
                          "likely token, which transformers' argmax does not")


def _commute(a: Clause, b: Clause) -> bool:
    """Whether applying a then b equals b then a, for every logit vector (their `HF.role`)."""
    roles = {a.spec.hf.role, b.spec.hf.role}
    if roles in ({"mask"}, {"shift"}):
        return True  # -inf sets, or additions
    if "mask" in roles and len(roles) == 2 and roles <= {"mask", *POINTWISE}:
        return True  # a pointwise map keeps -inf at -inf
    if roles == SIGN_KEEPING or SCALE in roles and (a.spec.hf.by_rank or b.spec.hf.by_rank):
        return True  # T > 0 keeps signs and ranks
    return False


def _check_order(stages: Sequence[Clause]) -> None:
    for i, a in enumerate(stages):
        for b in stages[i + 1:]:
            if a.spec.hf.rank > b.spec.hf.rank and not _commute(a, b):
                raise NoReference(
                    f"'{a.canonical}' is written before '{b.canonical}', but transformers always "
                    f"applies {b.name} first and the two do not commute")
