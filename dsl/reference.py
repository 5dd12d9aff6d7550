"""The equivalent transformers 4.55.4 `generate(...)` call, where one exists.

transformers applies its logits processors in a fixed order (`_get_logits_processor`):
sequence_bias, repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_new_tokens,
then, only when sampling, temperature, top_k, top_p, min_p, typical_p, epsilon, eta.
A recipe has a reference equivalent only if its written order gives the same result,
i.e. every pair written against that order commutes.

    >>> hf_kwargs(parse("beam 4 lenpen=0.6 | max 32"))["num_beams"]
    4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from decode.dsl.check import parse
from decode.dsl.ir import Clause, Recipe

HF_VERSION = "4.55.4"

# Position of each stage in transformers' fixed processor order.
HF_RANK = {"bias": 0, "repetition": 1, "norepeat": 2, "ban": 3, "minlen": 4,
           "temp": 5, "topk": 6, "topp": 7, "minp": 8, "typical": 9, "epsilon": 10, "eta": 11}
_MASKS = {"ban", "norepeat", "minlen"}  # set logits to -inf: commute with pointwise maps
_TRUNCATIONS = {"topk", "topp", "minp", "typical", "epsilon", "eta"}
_KEEP_ARGMAX = {"topk", "topp", "minp", "epsilon", "eta"}  # never drop the top token
_WARPER_KW = {"temp": ("temperature", "t"), "topk": ("top_k", "k"), "topp": ("top_p", "p"),
              "minp": ("min_p", "p"), "typical": ("typical_p", "p"),
              "epsilon": ("epsilon_cutoff", "e"), "eta": ("eta_cutoff", "e")}

# transformers' own defaults, except top_k (its default 50 would truncate): what a
# recipe does not ask for is switched off, whatever the checkpoint's generation config says.
NEUTRAL: dict[str, Any] = {
    "do_sample": False, "num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0,
    "length_penalty": 1.0, "early_stopping": False, "num_return_sequences": 1,
    "max_new_tokens": 128, "min_new_tokens": None, "temperature": 1.0, "top_k": None,
    "top_p": 1.0, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
    "sequence_bias": None, "stop_strings": None,
}


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
    search, stages, notes = r.search, r.stages, []
    for c in r.clauses:
        if c.spec.reference is None or (c.kind == "logit" and c.name not in HF_RANK):
            raise NoReference(f"transformers has no equivalent of '{c.name}' ({c.spec.doc})")
    diverse = r.get("diverse")
    sampling = any(c.sampling for c in r.clauses)  # before temp 0 turns it into argmax
    cold = any(c.name == "temp" and c["t"] == 0 for c in stages)
    if sampling and cold:
        _check_cold(r)
        sampling, stages = False, tuple(c for c in stages if c.name not in _TRUNCATIONS)
        notes.append("temp 0 leaves only the most likely token, so this is argmax (do_sample=False)")
    if not sampling:  # transformers ignores warpers without do_sample; temp 0 is argmax anyway
        stages = tuple(c for c in stages if c.name != "temp")
    if diverse is not None and sampling:
        raise NoReference("transformers rejects diverse (group) beam search with sampling "
                          "(do_sample=True); decode runs it")
    if diverse is not None and diverse["kind"] != "hamming":
        raise NoReference(f"transformers' diversity penalty is kind=hamming; it has no "
                          f"kind={diverse['kind']}")
    if diverse is not None and diverse["penalty"] == 0 and diverse["groups"] > 1:
        raise NoReference("transformers rejects num_beam_groups > 1 with diversity_penalty=0")
    _check_order(stages, cold=cold)

    kw = dict(NEUTRAL, do_sample=sampling, max_new_tokens=r.max_new_tokens)
    if search.name == "sample":
        kw["num_return_sequences"] = search["n"]
    elif search.name == "beam":
        kw.update(num_beams=search["k"], length_penalty=search["lenpen"],
                  early_stopping=search["early"], num_return_sequences=search["return"])
        if any(c.name in HF_RANK and c.name not in _WARPER_KW for c in stages) or diverse:
            notes.append("in beam search transformers applies its logits processors (and the "
                         "diversity penalty) to log-probabilities (log_softmax), not to raw logits")
    if diverse is not None:
        kw.update(num_beam_groups=diverse["groups"], diversity_penalty=diverse["penalty"])
    for c in stages:
        _stage_kwargs(c, kw, encode, beam=search.name == "beam", notes=notes)
    if r.stop_strings:
        kw["stop_strings"] = list(r.stop_strings)
        notes.append("stop_strings needs generate(..., tokenizer=tokenizer)")
    if r.seed is not None:
        notes.append(f"call torch.manual_seed({r.seed}) right before generate()")
    return Reference(kw, "equivalent", tuple(notes))


def _stage_kwargs(c: Clause, kw: dict, encode: Any, *, beam: bool, notes: list[str]) -> None:
    ids = (lambda text: list(encode(text))) if encode else TokenIds
    if c.name in _WARPER_KW:
        name, key = _WARPER_KW[c.name]
        kw[name] = c[key]
        keep = c.get("keep", 1)
        if beam and c.name in _TRUNCATIONS:
            notes.append(f"in beam sampling transformers keeps at least len(eos_token_id) + 1 tokens "
                         f"in {c.name} (min_tokens_to_keep); the recipe keeps {keep}")
        elif keep != 1:
            raise NoReference(f"'{c.canonical}': transformers' generate() has no min_tokens_to_keep "
                              "argument (it keeps 1 token without beams)")
    elif c.name == "repetition":
        kw["repetition_penalty"] = c["r"]
    elif c.name == "norepeat":
        kw["no_repeat_ngram_size"] = c["n"]
    elif c.name == "minlen":
        kw["min_new_tokens"] = c["n"]
    elif c.name == "ban":
        kw["bad_words_ids"] = [ids(w) for w in c["words"]]
    elif c.name == "bias":
        key = tuple(ids(c["text"])) if encode else ids(c["text"])
        bias = dict(kw["sequence_bias"] or {})
        bias[key] = bias.get(key, 0.0) + c["b"]
        kw["sequence_bias"] = bias


def _check_cold(r: Recipe) -> None:
    """temp 0 with sampling clauses: equivalent to argmax only if nothing else could differ."""
    search = r.search
    if search.name not in ("greedy", "sample") or search.get("n", 1) != 1:
        raise NoReference(f"temp 0 with '{search.canonical}': transformers cannot express sampling "
                          "from a distribution with one token here")
    odd = [c.name for c in r.stages if c.sampling and c.name not in _KEEP_ARGMAX and c.name != "temp"]
    if odd:
        raise NoReference(f"temp 0 with {', '.join(odd)}: {odd[0]} may drop the most likely token, "
                          "which transformers' argmax does not")


def _commute(a: Clause, b: Clause, cold: bool) -> bool:
    """Whether applying a then b equals b then a, for every logit vector."""
    names = {a.name, b.name}
    hot = "temp" in names and not cold
    if names <= _MASKS or names == {"bias"}:
        return True
    if names & _MASKS and len(names) == 2 and (names - _MASKS) <= {"temp", "repetition", "bias"}:
        return hot or "temp" not in names
    if hot and names in ({"temp", "repetition"}, {"temp", "topk"}):
        return True  # T > 0 keeps signs and ranks
    if cold and "temp" in names and (names - {"temp"}) <= _KEEP_ARGMAX:
        return True
    if cold and names <= _TRUNCATIONS:
        return True  # all dropped once temp 0 collapses the distribution
    return False


def _check_order(stages: Sequence[Clause], *, cold: bool) -> None:
    ranked = [c for c in stages if c.name in HF_RANK]
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            if HF_RANK[a.name] > HF_RANK[b.name] and not _commute(a, b, cold):
                raise NoReference(
                    f"'{a.canonical}' is written before '{b.canonical}', but transformers always "
                    f"applies {b.name} first and the two do not commute")
