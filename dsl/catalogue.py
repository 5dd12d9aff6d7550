"""The catalogue: every clause of the recipe language, in one place.

The parser's checks, `fmt`, `decode explain`, `--help`, docs/language.md and the
compiler's dispatch all read `CATALOGUE`; nothing else lists clauses. Add a clause here
(or `register` one from a plugin) and everything knows it.

    >>> lookup("topp").positional[0].hi
    1.0
"""
from __future__ import annotations

from typing import Any, Callable

from decode.dsl.phrases import constraints, shortest
from decode.dsl import structured
from decode.dsl.spec import (BIG_WHY, DIVISOR_WHY, HF, LENPEN, SCALE, ClauseSpec, Param, Params,
                             Problem, spell_value)

CATALOGUE: dict[str, ClauseSpec] = {}
DEFAULT_SEARCH = "greedy"  # the search of a recipe that writes none


def register(spec: ClauseSpec, *, replace: bool = False) -> ClauseSpec:
    """Add a clause to the language (plugins call this); returns the spec.

        >>> register(ClauseSpec("mystage", "logit", "my stage", impl="plugin.mystage"))
    """
    if spec.name in CATALOGUE and not replace:
        raise ValueError(f"clause {spec.name!r} is already in the catalogue")
    CATALOGUE[spec.name] = spec
    return spec


def lookup(name: str) -> ClauseSpec | None:
    """The spec of clause `name`, or None if the language has no such clause."""
    return CATALOGUE.get(name)


def setting_spec(setting: str) -> ClauseSpec:
    """The clause whose value is the engine setting `setting`, e.g. 'seed'."""
    return next(s for s in CATALOGUE.values() if s.setting == setting)


def clause_problem(c: Any, clauses: tuple) -> Problem | None:
    """What is wrong with checked clause `c` among the recipe's `clauses`: the rule of a
    beam variant, then the clause's own `check`; None when all is well.

        >>> clause_problem(parse("beam 4 return=5").search, ()).suggestion
        'return=4'
    """
    found = _beam_variant_problem(c, clauses) if c.spec.beam_variant else None
    if found is None and c.spec.check is not None:
        found = c.spec.check(c, clauses)
    return Problem(found) if isinstance(found, str) else found


def _beam_variant_problem(c: Any, clauses: tuple) -> Problem | None:
    """A modifier that turns `beam K` into another beam search needs `beam K`, its groups
    (if it has them) dividing K, and no other such modifier."""
    search = next((x for x in clauses if x.kind == "search"), None)
    groups = c.get("groups")
    if search is None or search.name != "beam":
        found = search.canonical if search is not None else f"{DEFAULT_SEARCH} (the default)"
        return Problem(f"'{c.name}' needs a 'beam K' search, found {found}",
                       suggestion=f"beam {2 * groups}" if groups else None)
    k = search["k"]
    if groups is not None and k % groups:
        divisors = ", ".join(str(d) for d in range(1, k + 1) if k % d == 0)
        return Problem(f"groups={groups} does not divide the beam width {k}: use one of {divisors}",
                       key="groups")
    others = [x.name for x in clauses if x.name != c.name and x.spec.beam_variant]
    if others:
        return Problem(f"'{c.name}' and '{others[0]}' both change how a beam search chooses; use one of them")
    return None


def sampling_clause_names() -> str:
    """'sample, sbeam, temp (when t > 0), ...': the clauses that make a recipe sample."""
    names = []
    for spec in CATALOGUE.values():
        if callable(spec.sampling):
            names.append(f"{spec.name} ({spec.sampling_doc})" if spec.sampling_doc else spec.name)
        elif spec.sampling:
            names.append(spec.name)
    return ", ".join(names)


# -- helpers of the built-in entries --------------------------------------------------------

_LENPEN_WHY = ("for lengths up to 2**20 tokens length**lenpen then stays within 2**-80..2**80, "
               "so the scores stay finite float32 numbers")


def _keep() -> Param:
    return Param("keep", "int", 1, lo=1,
                 doc="always keep at least this many tokens (transformers' min_tokens_to_keep)")


def _t_positive(params: Params) -> bool:
    return params["t"] > 0


def _t_zero(params: Params) -> bool:
    return params["t"] == 0


def _sets(**kwargs: str) -> Callable:
    """`HF.kwargs` giving each generate() argument one parameter's value: _sets(top_p="p")."""
    return lambda p, ids, kw: {name: p[param] for name, param in kwargs.items()}


def _hf(kwarg: str, param: str, neutral: Any, **facts: Any) -> HF:
    """The transformers mapping of a clause that sets one argument from one parameter."""
    return HF(_sets(**{kwarg: param}), {kwarg: neutral}, **facts)


def _truncation(kwarg: str, param: str, neutral: Any, rank: int, **facts: Any) -> HF:
    """A truncation with `keep` (min_tokens_to_keep) that keeps the top token unless told not to."""
    facts = {"keeps_argmax": True, **facts}
    return _hf(kwarg, param, neutral, rank=rank, role="truncation", keep="keep", **facts)


def _bias_kwargs(p: Params, ids: Callable, kw: Any) -> dict:
    """sequence_bias: one entry per token sequence, a text biased twice adding up."""
    key = ids(p["text"])
    key = tuple(key) if isinstance(key, list) else key
    bias = dict(kw["sequence_bias"] or {})
    bias[key] = bias.get(key, 0.0) + p["b"]
    return {"sequence_bias": bias}


def _check_return(c: Any, clauses: tuple) -> Problem | None:
    if c["return"] > c["k"]:
        return Problem(f"return={c['return']} is more than the beam width {c['k']}: a beam search "
                       "returns at most K sequences", key="return", suggestion=f"return={c['k']}")
    return None


def _check_diverse(c: Any, clauses: tuple) -> str | None:
    if c["kind"] != "ngram" and any(a.key == "n" for a in c.args):
        return f"n= is the n-gram size of kind=ngram; with kind={c['kind']} drop it or write kind=ngram"
    return None


def _warn_diverse(c: Any, clauses: tuple) -> str | None:
    if c["groups"] > 1 and c["penalty"] == 0:
        return ("diverse with penalty=0 runs independent beam searches that find the same "
                "hypotheses; set penalty > 0 (e.g. penalty=0.5)")
    return None


def _refuse_diverse(p: Params, sampling: bool) -> str | None:
    """Why transformers cannot run this diverse beam search (None: it can)."""
    if sampling:
        return ("transformers rejects diverse (group) beam search with sampling (do_sample=True); "
                "decode runs it")
    if p["kind"] != "hamming":
        return f"transformers' diversity penalty is kind=hamming; it has no kind={p['kind']}"
    if p["penalty"] == 0 and p["groups"] > 1:
        return "transformers rejects num_beam_groups > 1 with diversity_penalty=0"
    return None


def _warn_cold(c: Any, clauses: tuple) -> str | None:
    samplers = [x for x in clauses if x.sampling]
    if not (_t_zero(c.param_dict) and samplers):
        return None
    names = ", ".join(f"'{x.canonical}'" for x in samplers)
    return (f"temp 0 means argmax: it leaves only the most likely token, so {names} cannot change "
            "which token is chosen; drop temp 0 or use temp > 0")


def _check_draws(c: Any, clauses: tuple) -> Problem | None:
    """A search that is its own random design (`cpsbs`, `arith`) has nothing to draw from once a
    clause makes selection argmax; refused, as the step would have no uniforms to read."""
    cold = next((x for x in clauses if x.spec.is_argmax(x.param_dict)), None)
    if cold is None:
        return None
    likeliest = f"'beam {c.param_dict['k']}' for the likeliest sequences" if "k" in c.param_dict \
        else "'greedy' for the likeliest sequence"
    return Problem(f"'{c.canonical}' draws its sequences at random, and '{cold.canonical}' makes every "
                   f"choice argmax: drop '{cold.canonical}' (or use {likeliest})")


def _explain_diverse(p: Params) -> str:
    g, lam, kind = p["groups"], spell_value(p["penalty"]), p["kind"]
    same = {"hamming": "for every time an earlier group chose that token at this same step",
            "cumulative": "for every time an earlier group chose that token at any step so far",
            "ngram": f"for every time the {p['n']}-gram it would complete already occurs in an "
                     "earlier group's new text",
            "embedding": "times its largest cosine similarity (its row's last hidden state and the "
                         "token's output embedding) to an earlier group's choice at this step"}[kind]
    return (f"the beams form {g} groups that choose in turn each step; a token's log-probability "
            f"loses {lam} {same} (kind={kind}); then the logit stages apply")


def _explain_siblings(p: Params) -> str:
    gam = p["gamma"]
    return (f"each beam's continuations are ranked by log-probability, and the r-th best loses "
            f"{spell_value(gam)}·(r-1) ({spell_value(0.0)}, {spell_value(gam)}, "
            f"{spell_value(2 * gam)}, ...) before all beams compete, so the survivors tend to "
            f"have different parents; the penalties stay in the scores")


def _explain_iterative(p: Params) -> str:
    return (f"the beams form {p['groups']} groups searching side by side; a group may not keep a "
            f"partial text that differs in fewer than min({p['distance']}, its length) tokens from "
            "a text an earlier group kept at the same length: such continuations are dropped "
            "(score -1e9), not merely penalised")


def _check_speculative(c: Any, clauses: tuple) -> Problem | None:
    """`draft` and `lookup` verify drafts for greedy decoding or sampling, one of them at a time."""
    search = next((x for x in clauses if x.kind == "search"), None)
    if search is not None and search.name not in ("greedy", "sample"):
        return Problem(f"'{c.name}' speeds up greedy decoding and sampling, not "
                       f"'{search.canonical}' (a beam search over drafts is not supported yet); "
                       "drop the search clause, or write 'sample N'")
    other = {"draft": "lookup", "lookup": "draft"}[c.name]
    if any(x.name == other for x in clauses):
        return Problem(f"'{c.name}' and '{other}' both propose drafts; keep one of them")
    mod = next((x for x in clauses if x.kind == "modifier" and x is not c), None)  # dola: each
    if mod is not None:  # of them took the search and silently dropped the other
        return Problem(f"'{c.canonical}' verifies drafts against the final layer's logits, and "
                       f"'{mod.canonical}' changes how a token is chosen; use one of them")
    return None


def _explain_draft(p: Params) -> str:
    model = "the bundled demo draft model" if p["path"] == "demo-draft" else f"the model at {p['path']}"
    return (f"{model} proposes {p['k']} tokens with the recipe's stages and selection; the "
            f"target checks all {p['k']} in one forward over {p['k'] + 1} positions and keeps "
            "what it agrees with (greedy: its own argmax; sampling: the rejection rule of Leviathan "
            "et al. 2023), so the output is the search's own")


def _explain_lookup(p: Params) -> str:
    return (f"drafts up to {p['k']} tokens copied from after the last earlier occurrence of the "
            f"row's last {p['n']} tokens (or fewer, down to 1), checked by the target in one "
            "forward; fast when the output quotes the prompt")


def _check_dola(c: Any, clauses: tuple) -> Problem | None:
    """DoLa replaces greedy decoding or sampling (transformers runs it with nothing else), and
    takes its layers either listed or as a part of the model."""
    search = next((x for x in clauses if x.kind == "search"), None)
    if search is not None and search.name not in ("greedy", "sample"):
        return Problem(f"'dola' contrasts layers for greedy decoding or sampling, not for "
                       f"'{search.canonical}' (transformers ignores dola_layers in beam search); "
                       "drop the search clause, or write 'sample N'")
    if c["layer"] and any(a.key == "layers" for a in c.args):
        return Problem("give the candidate layers either as a list (e.g. 'dola 0 2') or as "
                       "layers=high|low, not both", key="layers")
    return None


def _warn_dola(c: Any, clauses: tuple) -> str | None:
    rep = next((x for x in clauses if x.name == "repetition"), None)
    if rep is None or rep["r"] < 1.2:
        return ("DoLa tends to repeat itself: its authors and transformers recommend it with a "
                "repetition penalty of at least 1.2; add 'repetition 1.2'")
    return None


def _dola_layers(p: Params) -> Any:
    return list(p["layer"]) if p["layer"] else p["layers"]


def _explain_dola(p: Params) -> str:
    which = (f"the layers {', '.join(map(str, p['layer']))}" if p["layer"]
             else f"the {p['layers']} layers (transformers' dola_layers={p['layers']!r})")
    over = "of the prompt's rows" if p["pick"] == "prompt" else "of every row in the batch"
    return (f"each step, the premature layer is the one among {which} whose early-exit "
            f"distribution is furthest from the final layer's (Jensen-Shannon divergence, the mean "
            f"{over}); tokens less than 0.1 times as likely as the top token are dropped, the rest "
            "score log p(final) - log p(premature); then the logit stages apply")


def _note_dola(p: Params) -> str:
    said = "transformers picks the premature layer by the divergence averaged over the whole batch"
    if p["pick"] == "batch":
        return said + ", as pick=batch does"
    return said + ": call generate() with one prompt at a time (or write pick=batch)"


def _check_force(c: Any, clauses: tuple) -> Problem | None:
    search = next(x for x in clauses if x.kind == "search")
    if search["k"] < 2:
        return Problem("'force' needs at least 2 beams (transformers' constrained beam search "
                       "refuses num_beams=1)", suggestion="beam 2")
    samplers = [x.canonical for x in clauses if x.sampling]
    if samplers:
        return Problem(f"'force' does not sample, but {', '.join(samplers)} does (transformers' "
                       "constrained beam search refuses do_sample=True); drop the sampling clauses")
    limit = _max_of(clauses)
    for options in constraints(c["phrases"]):
        n = shortest(options)
        if n is not None and n > limit:
            return Problem(f"a forced phrase of {n} tokens cannot fit in max {limit} new tokens; "
                           f"raise max or shorten the phrase", suggestion=f"max {n}")
    return None


def _spell_phrases(phrases: tuple) -> str:
    return ", ".join(spell_value(p) for p in phrases)


def _explain_force(p: Params) -> str:
    return (f"constrained beam search: a finished sequence must contain every one of "
            f"{_spell_phrases(p['phrases'])} (any(...): one of its phrases); each step the beams "
            "are chosen round robin from banks of candidates grouped by how many forced tokens "
            "they have met, best score first in each bank, so hypotheses that make progress on "
            "the phrases survive next to the most likely ones")


def _force_kwargs(p: Params, ids: Callable, kw: Any) -> dict:
    def one(o: Any) -> Any:
        return list(o) if isinstance(o, tuple) else ids(o)

    words = [[one(o) for o in opts] if len(opts) > 1 else one(opts[0]) for opts in constraints(p["phrases"])]
    return {"force_words_ids": words}


def _warn_cfg(c: Any, clauses: tuple) -> str | None:
    if c["scale"] == 1:
        return ("cfg scale=1 guides nothing (the scores are the prompt's log-probabilities) yet "
                "still decodes an unconditional row beside every row; drop cfg, or guide with "
                "scale > 1 (e.g. scale=1.5)")
    return None


def _explain_cfg(p: Params) -> str:
    s = p["scale"]
    other = ("the negative prompt " + spell_value(p["negative"]) if p["negative"] is not None
             else "only the prompt's last token")
    effect = ("tokens the prompt makes likelier than the unconditional row does gain, the others lose"
              if s > 1 else "it changes nothing" if s == 1 else "the scores lean toward the unconditional row's")
    return (f"each row is decoded beside an unconditional row that reads {other}, then the same new "
            f"tokens; a token's score becomes {spell_value(s)}·(log p(token | prompt) - log p(token | "
            f"unconditional)) + log p(token | unconditional), so {effect}; the step decodes twice the rows")


def _cfg_kwargs(p: Params, ids: Callable, kw: Any) -> dict:
    neg = p["negative"]
    return {"guidance_scale": p["scale"], **({} if neg is None else {"negative_prompt_ids": [ids(neg)]})}


def _cfg_note(p: Params) -> str:
    if p["negative"] is None:
        return "the unconditional row is the prompt's last token, as transformers' default"
    return ("negative_prompt_ids is a tensor with one row per row decoded (prompts x "
            "num_return_sequences), each the ids of the negative prompt as a prompt is encoded")


def _no_reference(reason: str) -> Exception:
    """NoReference(reason), for an `HF.kwargs` that finds a clash between clauses (a lazy
    import: dsl/reference.py imports this module)."""
    from decode.dsl.reference import NoReference

    return NoReference(reason)


def _max_of(clauses: tuple) -> int:
    """The recipe's `max`: its limit clause's value, else the default."""
    return next((x.param_dict["n"] for x in clauses if x.spec.setting == "max_new_tokens"), _MAX_NEW)


def _min_clash(minlen: int, minnew: Any) -> None:
    """transformers lets min_new_tokens override min_length (it sets min_length = prompt +
    min_new_tokens) where a recipe applies both; they agree when minlen <= minnew + 1, since
    a prompt has at least one token."""
    if minnew is not None and minlen > minnew + 1:
        raise _no_reference(f"transformers' min_new_tokens={minnew} overrides min_length={minlen}, "
                            "where the recipe applies both")


def _min_length_kwargs(p: Params, ids: Callable, kw: Any) -> dict:
    _min_clash(p["n"], kw.get("min_new_tokens"))
    return {"min_length": p["n"]}


def _min_new_kwargs(p: Params, ids: Callable, kw: Any) -> dict:
    _min_clash(kw.get("min_length") or 0, p["n"])
    return {"min_new_tokens": p["n"]}


def _lengthdecay_kwargs(p: Params, ids: Callable, kw: Any) -> dict:
    """exponential_decay_length_penalty, unless transformers' penalty would meet an EOS logit
    that min_new_tokens / min_length set to -inf: with FACTOR >= 1 it makes it NaN
    (-inf + inf, or -inf * 0), where the recipe keeps it -inf. (Written in transformers'
    order, those clauses' kwargs are in `kw` already; a prompt has at least one token.)"""
    start, minnew, minlen = p["start"], kw.get("min_new_tokens") or 0, kw.get("min_length") or 0
    if p["factor"] >= 1 and (minnew > start + 1 or minlen > start + 2):
        raise _no_reference(f"transformers' exponential_decay_length_penalty turns the EOS logit that "
                            f"min_new_tokens/min_length removed into NaN past {start} new tokens, "
                            "where the recipe keeps it removed")
    return {"exponential_decay_length_penalty": (start, p["factor"])}


def _warn_minnew(c: Any, clauses: tuple) -> str | None:
    top = _max_of(clauses)
    if c["n"] >= top:
        return (f"minnew {c['n']} with max {top}: end-of-sequence is never allowed, so every row runs "
                f"to max; lower minnew below {top}")
    return None


def _warn_lengthdecay(c: Any, clauses: tuple) -> str | None:
    top = _max_of(clauses)
    if c["start"] >= top - 1:
        return (f"lengthdecay start={c['start']} with max {top}: the EOS logits are raised only "
                f"from new token start + 2 on, which max never reaches; lower start below {top - 1}")
    return None


def _warn_renormalize(c: Any, clauses: tuple) -> str | None:
    later = [x.name for x in clauses[clauses.index(c) + 1:] if x.kind == "logit"]
    if later:
        return (f"renormalize before {', '.join(later)}: the stages after it change the scores "
                "again, so a beam search ranks unnormalised ones (transformers normalises last); "
                "write renormalize last")
    return None


class _ModelEos:
    """The model's EOS ids in an `explain --hf` call (the catalogue knows no model)."""

    def __repr__(self) -> str:
        return "model.generation_config.eos_token_id"


def _after_bos(p: Params, recipe: Any) -> dict:
    """suppress_at_start's kernel learns whether `force_bos` forces the first new token."""
    return {**p, "after_bos": recipe.get("force_bos") is not None}


def _token_ids(name: str, doc: str) -> Param:
    return Param(name, "int", lo=0, variadic=True, doc=doc)


def _check_watermark(c: Any, clauses: tuple) -> Problem | None:
    if c["scheme"] == "selfhash" and c["width"] > 1:
        return Problem("selfhash with width > 1 draws a greenlist for every candidate token and "
                       "context: decode's compiled step cannot draw them, and a table of them would "
                       "hold V² greenlists; use width=1, or scheme=lefthash (its greenlist needs only "
                       "the last token, whatever the width)", key="width", suggestion="width=1")
    return None


def _explain_watermark(p: Params) -> str:
    gam, delta = spell_value(p["gamma"]), spell_value(p["delta"])
    if p["scheme"] == "selfhash":
        rule = ("those of the 40 likeliest tokens that are green in the greenlist seeded by the "
                "token itself")
    else:
        rule = f"the green tokens, a fraction {gam} of the vocabulary seeded by the previous token"
    return (f"adds {delta} to the logits of {rule} (gamma={gam}, key={p['key']}); "
            f"rows with fewer than {p['width']} tokens of history are left as they are; "
            f"`decode detect` finds the watermark again")


def _hf_watermark(p: Params, ids: Callable, kw: Any) -> dict:
    return {"watermarking_config": {"greenlist_ratio": p["gamma"], "bias": p["delta"], "hashing_key": p["key"],
                                    "seeding_scheme": p["scheme"], "context_width": p["width"]}}




def _last() -> Param:
    """llama.cpp's penalty_last_n as a keyword of a penalty: none counts the whole history."""
    return Param("last", "int", None, lo=1, doc="count only the last N tokens of the history "
                 "(llama.cpp's penalty_last_n); none: the whole history",
                 lo_why="a window of 0 tokens counts nothing; leave `last` out to count the whole history")


def _refuse_window(p: Params, sampling: bool) -> str | None:
    if p["last"] is not None:
        return (f"transformers' repetition_penalty counts the whole history; it has no window "
                f"like last={p['last']}")
    return None


_MIROSTAT = (Param("tau", "float", 5.0, lo=0.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                   doc="target surprise, bits per token"),
             Param("eta", "float", 0.1, lo=0.0, hi=SCALE, hi_why=BIG_WHY,
                   doc="how fast the bound follows the error"))  # mirostat's and mirostat1's
_MAX_NEW = 128  # new tokens when a recipe has no `max`
_S = "decode.compiler.search."
_L = "decode.compiler.stages."

for _spec in (
    ClauseSpec(
        "greedy", "search", "pick the most likely token at each step",
        reference="do_sample=False, num_beams=1", impl=_S + "greedy", aliases=("argmax",),
        hf=HF(one_draw=lambda p: True)),
    ClauseSpec(
        "sample", "search", "draw n independent samples from the (processed) distribution; "
                            "returned best first, each with its draw index",
        positional=(Param("n", "int", 1, lo=1, doc="number of samples per prompt"),),
        sampling=True, reference="do_sample=True, num_return_sequences=N", impl=_S + "sample",
        hf=_hf("num_return_sequences", "n", 1, one_draw=lambda p: p["n"] == 1)),
    ClauseSpec(
        "beam", "search", "beam search keeping the K best partial sequences",
        positional=(Param("k", "int", lo=1, doc="beam width"),),
        keywords=(
            Param("lenpen", "float", 1.0, lo=-LENPEN, hi=LENPEN, lo_why=_LENPEN_WHY, hi_why=_LENPEN_WHY,
                  doc="length penalty: final score = logprob / length**lenpen"),
            Param("early", "enum", False, choices=(False, True, "never"),
                  doc="stop when K hypotheses are done (true), on a heuristic (false), or never"),
            Param("return", "int", None, lo=1, default_from="k",
                  doc="how many finished beams to return (at most K)"),
        ),
        reference="num_beams=K, length_penalty=LENPEN, early_stopping=EARLY, num_return_sequences=RETURN",
        cite="Graves 2012; Sutskever et al. 2014", impl=_S + "beam", check=_check_return,
        aliases=("beam_search", "num_beams"),
        hf=HF(_sets(num_beams="k", length_penalty="lenpen", early_stopping="early",
                    num_return_sequences="return"),
              {"num_beams": 1, "length_penalty": 1.0, "early_stopping": False, "num_return_sequences": 1},
              beams=True),
        details="With a sampling stage this is beam sampling, as transformers' `do_sample=True, "
                "num_beams=K`: each step, 2·K continuations are drawn without replacement from the "
                "softmax of (beam score + processed log-prob) over all K·V candidates (successive "
                "sampling, one uniform per draw); "
                "those ending in EOS among the first K drawn become finished hypotheses, and the K "
                "best-scoring drawn ones that do not end continue. Truncation stages then keep at "
                "least 1 + (number of EOS ids) tokens, as in transformers. Where transformers "
                "scores a beam that cannot continue -1e9, it scores -inf here, so a real score "
                "below -1e9 (a cold temp, a large penalty) still ranks above it; if fewer than "
                "RETURN hypotheses survive the logit stages, fewer are returned."),
    ClauseSpec(
        "sbeam", "search",
        "stochastic beam search: K samples without replacement from the sequence tree (Gumbel-top-k)",
        positional=(Param("k", "int", lo=1, doc="number of sequences drawn without replacement"),),
        sampling=True, reference=None,
        cite="Kool, van Hoof & Welling 2019, Stochastic Beams and Where to Find Them",
        impl=_S + "sbeam",
        details="Each step, every child of every beam gets a perturbed score: a Gumbel with "
                "location log P(sequence so far), conditioned on its parent's score being the "
                "maximum over the parent's subtree; the K children with the largest perturbed "
                "scores survive (a finished beam is its own only child). The K sequences returned "
                "are a sample without replacement from the sequence distribution the logit stages "
                "define (fewer if fewer sequences exist), best log-probability first; `score` is "
                "the sequence's log-probability under that distribution."),
    ClauseSpec(
        "diverse", "modifier", "split the beams into groups penalised for choosing what earlier groups chose",
        keywords=(
            Param("groups", "int", lo=1, doc="number of beam groups; must divide K"),
            Param("penalty", "float", 0.0, lo=0.0, hi=SCALE, hi_why=BIG_WHY,
                  doc="subtracted per earlier group's choice (see kind)"),
            Param("kind", "enum", "hamming", choices=("hamming", "cumulative", "ngram", "embedding"),
                  doc="what counts as the same choice: the token at this step (hamming), the "
                      "token at any step so far (cumulative), the n-gram it completes (ngram), "
                      "the largest cosine of hidden-state vectors (embedding)"),
            Param("n", "int", 2, lo=1, doc="n-gram size, for kind=ngram"),
        ),
        reference="num_beam_groups=GROUPS, diversity_penalty=PENALTY (kind=hamming only)",
        cite="Vijayakumar et al. 2016, Diverse Beam Search (arXiv:1610.02424; AAAI 2018), "
             "§4 Hamming and n-gram diversity", impl=_S + "diverse", beam_variant=True,
        explain=_explain_diverse, check=_check_diverse, warn=_warn_diverse, aliases=("diverse_beam",),
        hf=HF(_sets(num_beam_groups="groups", diversity_penalty="penalty"),
              {"num_beam_groups": 1, "diversity_penalty": 0.0}, refuse=_refuse_diverse),
        details="The K beams form GROUPS groups of K/GROUPS. Each step the groups choose in "
                "order, and group g does, in this order: (1) the diversity penalty: from each "
                "continuation's log-probability subtract PENALTY times a count of how often groups "
                "0..g-1 made the same choice, the count depending on `kind`: **hamming** (the "
                "default; Vijayakumar et al.'s Hamming diversity, transformers' definition): the "
                "number of times the token was chosen by groups 0..g-1 at this step, a finished "
                "group's padding included as in transformers; **cumulative**: the number of times "
                "groups 0..g-1 chose the token at any step so far, this one included, counting only "
                "choices made while a group was still searching (a group that used a word once "
                "keeps later groups off it for the rest of the search; related to, but simpler "
                "than, the paper's cumulative diversity); **ngram** (the paper's n-gram diversity): "
                "the number of times the N-gram the token would complete (the row's last N-1 new "
                "tokens, then the token) occurs among the new tokens of the rows of groups 0..g-1 as "
                "they stand after their choice at this step, n-grams a group wrote after it "
                "finished left out; no penalty while a row has fewer than N-1 new tokens; "
                "**embedding** (not a count; after Vijayakumar et al.'s embedding diversity): the "
                "largest cosine similarity between the continuation's vector and those of the "
                "choices groups 0..g-1 made at this step while still searching (0 for group 0), a "
                "continuation's vector being unit(h) + unit(w): h the last hidden state (after the "
                "final norm) of the row it continues, w the token's output embedding (its row of "
                "the output head), both from the forward that gave this step's logits; it needs a "
                "model that gives its hidden states. "
                "(2) the recipe's logit stages, in written order; "
                "(3) it picks 2·K/GROUPS of its (K/GROUPS)·V continuations (beam score + processed "
                "log-prob): the best ones, or, when the recipe samples (diverse beam sampling, "
                "which transformers refuses), a draw without replacement from their softmax "
                "(successive sampling), kept in draw order. Continuations ending in EOS among the first "
                "K/GROUPS become finished hypotheses (score: sum of log-probs / length ** LENPEN); "
                "the first K/GROUPS that do not end continue. A group stops when it holds K/GROUPS "
                "hypotheses that no running beam can beat; the best RETURN hypotheses over all "
                "groups are returned. With kind=hamming and without sampling this is transformers' "
                "group beam search, token for token."),
    ClauseSpec(
        "siblings", "modifier",
        "penalise each beam's continuations by their rank among the continuations of the same beam",
        positional=(Param("gamma", "float", lo=0.0, hi=SCALE, hi_why=BIG_WHY,
                          doc="penalty per rank below the best sibling"),),
        cite="Li, Monroe & Jurafsky 2016, A Simple, Fast Diverse Decoding Algorithm for Neural "
             "Generation (arXiv:1611.08562); cf. fairseq's DiverseSiblingsSearch",
        impl=_S + "siblings", beam_variant=True, explain=_explain_siblings,
        details="A modifier of `beam K`. Each step, after the recipe's logit stages, the "
                "continuations of each beam (its children, siblings of one another) are ranked by "
                "processed log-prob, 1 = the most likely; each child's score (beam score + "
                "log-prob) loses GAMMA·(rank − 1). The beam search then picks (or, when the recipe "
                "samples, draws) its 2·K continuations over all beams from these penalised scores, "
                "exactly as `beam` does, so the K survivors tend to have different parents. The "
                "penalised score is the beam's score from then on (as in fairseq), so the returned "
                "`score` includes the penalties. fairseq's DiverseSiblingsSearch differs in two "
                "details: it subtracts GAMMA·rank (the same ranking, every score GAMMA lower) and "
                "skips the penalty at the first step. GAMMA = 0 is plain beam search."),
    ClauseSpec(
        "iterative", "modifier",
        "iterative beam search: groups that may not keep a partial text close to one an earlier group kept",
        keywords=(
            Param("groups", "int", lo=1, doc="number of passes (beam groups); must divide K"),
            Param("distance", "int", 2, lo=1,
                  doc="a kept partial text differs from earlier groups' in at least this many tokens"),
        ),
        cite="Kulikov, Miller, Cho & Weston 2019, Importance of Search and Evaluation Strategies "
             "in Neural Dialogue Modeling (INLG 2019; arXiv:1811.00907), iterative beam search",
        beam_variant=True, impl=_S + "iterative", explain=_explain_iterative,
        details="Iterative beam search runs GROUPS beam searches of K/GROUPS beams one after "
                "another, and pass g discards every partial hypothesis too close to one that an "
                "earlier pass kept at the same length. Here the passes run side by side, one step at "
                "a time, which gives the same result: what pass g may keep at length L depends only "
                "on what passes 0..g-1 kept at length L. A continuation of length L (new tokens) is "
                "discarded, its score set to the -1e9 filler before the recipe's logit stages, if it "
                "differs in fewer than min(DISTANCE, L) positions from one of the beams that an "
                "earlier group, still searching, keeps at length L; the cap at L lets the passes "
                "start at all, since any two texts of length L differ in at most L positions. "
                "distance=1 forbids repeating an earlier pass's partial text exactly. Otherwise a "
                "group searches, finishes and is returned as in `diverse` (which see); when every "
                "continuation of a group is discarded, its beams carry the filler score and rank "
                "last. Why it is here: it is the diversity rule stated on whole partial texts rather "
                "than tokens, with a guarantee a penalty cannot give (no two passes keep texts "
                "closer than DISTANCE), and it needs no penalty scale to tune."),
    ClauseSpec(
        "dola", "modifier",
        "DoLa: score tokens by how much more likely the last layer finds them than an earlier layer",
        positional=(Param("layer", "int", (), lo=0, variadic=True,
                          doc="candidate premature layers (0: the embeddings' output); given, "
                              "they replace layers="),),
        keywords=(
            Param("layers", "enum", "high", choices=("high", "low"),
                  doc="the candidates as a part of the model: its upper or lower half, every "
                      "second layer (transformers' dola_layers='high' / 'low')"),
            Param("pick", "enum", "prompt", choices=("prompt", "batch"),
                  doc="the rows whose mean divergence picks the layer: each prompt's own, or the "
                      "whole batch's (as transformers' batched generate)"),
        ),
        reference="dola_layers=LAYERS",
        cite="Chuang et al. 2023, DoLa: Decoding by Contrasting Layers Improves Factuality in "
             "Large Language Models (ICLR 2024, arXiv:2309.03883); transformers' _dola_decoding",
        impl=_S + "dola", check=_check_dola, warn=_warn_dola, explain=_explain_dola,
        aliases=("dola_layers",),
        hf=HF(lambda p, ids, kw: {"dola_layers": _dola_layers(p)}, {"dola_layers": None},
              note=_note_dola),
        details="A modifier of greedy decoding or `sample N` (transformers runs DoLa with no other "
                "search). The candidate premature layers are transformers': for a model of N "
                "layers, `layers=high` is every second layer from N/2 (rounded down) up, "
                "`layers=low` every second from 0 below N/2, where layer i is the residual "
                "stream entering block i (0: the embeddings' output) and the lowest two are "
                "skipped when the embeddings are tied to the output head (one when N = 2); "
                "beyond 40 layers, the 20 highest or lowest. A list (`dola 0 2 4`) names them. "
                "Each step, every candidate's early exit (its stream through the output head, "
                "without the final norm, in the same forward) is compared with the final "
                "distribution by Jensen-Shannon divergence, averaged over the rows of one prompt "
                "(`pick=prompt`, the paper's per-sequence choice) or of the whole batch "
                "(`pick=batch`, what transformers' batched generate does); the furthest layer is "
                "the premature one. Tokens whose final probability is below 0.1 times the top "
                "one's are dropped (transformers' relative top filter: no probability), the others "
                "score log p(final) - log p(premature). A dropped token scores log p(final) - 10^4 "
                "rather than -inf: when a constraint (`regex`, `json`, ...) allows none of the kept "
                "tokens, the ones it allows stay, ranked by the final layer (transformers then "
                "takes token 0, or fails on NaN probabilities when sampling). The logit stages (`repetition 1.2` is the recommended "
                "companion) and the selection, argmax or a draw, work on these scores. A model "
                "of one layer, or layers outside 0..N-1, are refused when the run starts."),
    ClauseSpec(
        "draft", "modifier", "speculative decoding: a small model drafts K tokens, the target "
        "verifies them in one forward",
        positional=(Param("path", "str", "demo-draft",
                          doc='the draft model: a checkpoint path, or "demo-draft" (the bundled '
                              "2-layer model of the demo's tokenizer)"),),
        keywords=(Param("k", "int", 4, lo=1, hi=16,
                        doc="tokens drafted per round",
                        lo_why="a round drafts at least one token",
                        hi_why="beyond 16 nearly every round rejects a late draft: wasted forwards"),),
        reference="assistant_model=AutoModelForCausalLM.from_pretrained(PATH), num_assistant_tokens=K",
        cite="Leviathan, Kalman & Matias 2023, Fast Inference from Transformers via Speculative "
             "Decoding (ICML 2023); Chen et al. 2023, Accelerating Large Language Model Decoding "
             "with Speculative Sampling (arXiv:2302.01318); transformers' assistant_model",
        impl=_S + "draft", check=_check_speculative, explain=_explain_draft,
        hf=HF(lambda p, ids, kw: {"num_assistant_tokens": p["k"], "num_assistant_tokens_schedule": "constant"},
              {"num_assistant_tokens": None, "num_assistant_tokens_schedule": None},
              note=lambda p: "also pass assistant_model=AutoModelForCausalLM.from_pretrained(PATH), "
                             f"PATH the draft model ({p['path']})"),
        aliases=("assistant_model", "assistant", "speculative"),
        details="A modifier of greedy decoding and `sample N`. Each round the draft model (same "
                "tokenizer as the target: another vocabulary is refused when it loads) proposes K "
                "tokens, each chosen by the recipe's own logit stages and selection on the draft's "
                "logits; the target runs the row's last token and the K drafts in one forward over "
                "K+1 positions of its static cache, with the same stages on its own logits. Greedy "
                "keeps drafts while each is the target's argmax and then takes the target's "
                "argmax: plain greedy's tokens. Sampling keeps draft d with probability "
                "min(1, p(d)/q(d)) and at the first rejection draws from max(0, p - q) "
                "normalised (after K kept drafts: from p), so the output distribution is plain "
                "sampling's with the same stages. Rejected slots are rolled back by not advancing "
                "the row's length. Stages that keep state (mirostat, repetition with state, dry, "
                "constraints) are refused. `--json` gives each sequence `speculative`: the drafts "
                "proposed and accepted in each round (so do a trace's final line and `decode "
                "viz`); `--trace` and `--logprobs` read the verify forward's scores, so both are "
                "plain decoding's. The provenance gains `draft_hash`, the draft's content hash."),
    ClauseSpec(
        "lookup", "modifier", "prompt lookup decoding: drafts copied from where the last n tokens "
        "appeared before",
        keywords=(Param("n", "int", 2, lo=1, hi=8, doc="longest n-gram matched",
                        lo_why="a match needs at least one token",
                        hi_why="longer n-grams rarely repeat exactly"),
                  Param("k", "int", 10, lo=1, hi=32, doc="tokens drafted per round",
                        lo_why="a round drafts at least one token",
                        hi_why="a verification forward grows with K")),
        reference="prompt_lookup_num_tokens=K, max_matching_ngram_size=N",
        cite="Saxena 2023, Prompt Lookup Decoding (github.com/apoorvumang/prompt-lookup-decoding); "
             "transformers' PromptLookupCandidateGenerator",
        impl=_S + "lookup", check=_check_speculative, explain=_explain_lookup,
        hf=HF(lambda p, ids, kw: {"prompt_lookup_num_tokens": p["k"], "max_matching_ngram_size": p["n"]},
              {"prompt_lookup_num_tokens": None, "max_matching_ngram_size": None}),
        aliases=("prompt_lookup_num_tokens", "prompt_lookup"),
        details="A modifier of greedy decoding and `sample N`, with no second model: each round "
                "a row's last n tokens (else n-1, .. 1) are looked for earlier in its prompt and "
                "output; the up to K tokens that followed the last match are the drafts, which the "
                "target verifies in one forward as `draft` does (greedy: its tokens; sampling: "
                "each draft is certain, so it is kept with probability p(d)). transformers takes "
                "the first match rather than the last: other drafts, the same tokens. A prompt "
                "shorter than n is refused. `--json` gives each sequence `speculative`: the drafts "
                "proposed and accepted in each round (so do a trace's final line and `decode "
                "viz`); `--trace` and `--logprobs` are plain decoding's, as with `draft`."),
    ClauseSpec(
        "force", "modifier", "constrained beam search: every phrase must appear in the output",
        positional=(Param("phrases", "phrase", variadic=True,
                          doc='one or more phrases: "text", ids(N, ...) or any(...) of those'),),
        reference="force_words_ids=[ids(PHRASE), [ids(A), ids(B)] for any(A, B), ...]",
        cite="Anderson et al. 2017, Guided Open Vocabulary Image Captioning with Constrained Beam "
             "Search (EMNLP 2017); Hokamp & Liu 2017, Lexically Constrained Decoding for Sequence "
             "Generation Using Grid Beam Search (ACL 2017); transformers' ConstrainedBeamSearchScorer",
        impl=_S + "force", beam_variant=True, check=_check_force, explain=_explain_force,
        aliases=("force_words", "force_words_ids", "constraints"),
        hf=HF(_force_kwargs, {"force_words_ids": None}),
        details="A modifier of `beam K` (K >= 2): transformers' constrained beam search "
                "(`_constrained_beam_search` with `ConstrainedBeamSearchScorer`, 4.55.4), token "
                "for token. Each PHRASE is one constraint: a \"text\" (its tokens as `ban` finds "
                "them: the tokenizer's, without BOS; a word inside a text has its leading space, "
                "so write \" love\" for the word), `ids(N, ...)` (token ids) or `any(...)` of two or more "
                "of those (a disjunctive constraint: one of them must appear; none may be the "
                "start of another). A phrase written twice must appear twice. A beam's progress "
                "is transformers' ConstraintListState read over its whole text, the prompt "
                "included (a phrase the prompt holds is met): one constraint at a time is in "
                "progress; a token that continues it steps it, any other token sends it to the "
                "end of the pending list and is not tried against the others (so `a a b` does "
                "not meet \"a b\"); a token that starts pending constraints steps the first in "
                "that list. Each step takes the 2·K best continuations (beam score + processed "
                "log-prob). Those ending in EOS among the first K become finished hypotheses "
                "(score / length ** LENPEN) only if their beam has met every constraint; the "
                "first K that do not end are candidates, and so is every token that advances a "
                "beam that has not met them all (its constraint in progress, else any pending "
                "one) unless that text is a candidate already. A candidate's bank is (constraints "
                "met)·M + (M - tokens left of the one in progress), M the longest phrase; "
                "candidates are sorted by bank·100 + score and the K beams taken round robin over "
                "the runs of equal bank in that order (the first of each run, then the second, "
                "...); when no beam adds a token, the K keep score order. A prompt stops as "
                "`beam` does, judged on the best of the 2·K. At `max`, each beam that met every "
                "constraint is offered as a hypothesis, and if fewer than RETURN did, every other "
                "beam too: a returned sequence can then miss a phrase. Kept from the reference: "
                "a second token advancing the same in-progress any(...) gets its bank from the "
                "progress the first one left (the reference's copies share that list); a score "
                "gap over 100 outranks a bank. Not kept: the reference also reads a batch's left "
                "padding as text (the same unless a pad id starts a phrase), and it breaks ties "
                "in bank·100 + score by an unstable sort (here: candidate order)."),
    ClauseSpec(
        "temp", "logit", "divide the logits by T (T=0 means argmax)",
        positional=(Param("t", "float", lo=1 / SCALE, hi=SCALE, or_zero=True, doc="temperature",
                          lo_why=DIVISOR_WHY + "; for argmax write temp 0",
                          hi_why=DIVISOR_WHY),),
        sampling=_t_positive, sampling_doc="when t > 0", argmax=_t_zero, argmax_doc="temp 0",
        warn=_warn_cold, aliases=("temperature",),
        reference="temperature=T", cite="Ackley, Hinton & Sejnowski 1985", impl=_L + "temp",
        hf=_hf("temperature", "t", 1.0, rank=11, role="scale")),
    ClauseSpec(
        "topk", "logit", "keep only the K most likely tokens",
        positional=(Param("k", "int", lo=1, doc="tokens kept"),), keywords=(_keep(),),
        sampling=True, reference="top_k=K", aliases=("top_k",),
        cite="Fan, Lewis & Dauphin 2018, Hierarchical Neural Story Generation", impl=_L + "topk",
        hf=_truncation("top_k", "k", None, rank=12, by_rank=True)),
    ClauseSpec(
        "topp", "logit", "nucleus: keep the smallest set of tokens whose probability reaches P",
        positional=(Param("p", "float", lo=1 / SCALE, hi=1.0, doc="nucleus mass",
                          lo_why="a smaller P is 0 to float32 sums; any P below 6e-8 already "
                                 "keeps only the most likely token"),),
        keywords=(_keep(),), sampling=True, reference="top_p=P",
        cite="Holtzman et al. 2019, The Curious Case of Neural Text Degeneration", impl=_L + "topp",
        aliases=("top_p", "nucleus"), hf=_truncation("top_p", "p", 1.0, rank=13),
        details="A token stays unless the tokens less likely than it, it included, hold at most "
                "1 - P of the mass (transformers' definition). P = 1 keeps every token, as "
                "transformers' generate does for top_p=1.0."),
    ClauseSpec(
        "minp", "logit", "keep tokens whose probability is at least P times the top token's",
        positional=(Param("p", "float", lo=0.0, hi=1.0, doc="fraction of the top probability"),),
        keywords=(_keep(),), sampling=True, reference="min_p=P",
        cite="Nguyen et al. 2024, Turning Up the Heat: Min-p Sampling", impl=_L + "minp",
        aliases=("min_p",), hf=_truncation("min_p", "p", None, rank=14)),
    ClauseSpec(
        "typical", "logit", "locally typical sampling: keep tokens whose surprisal is closest to the entropy",
        positional=(Param("p", "float", lo=0.0, hi=1.0, lo_open=True, doc="mass kept"),),
        keywords=(_keep(),), sampling=True, reference="typical_p=P",
        cite="Meister et al. 2022, Locally Typical Sampling", impl=_L + "typical",
        aliases=("typical_p",), hf=_truncation("typical_p", "p", 1.0, rank=15, keeps_argmax=False)),
    ClauseSpec(
        "epsilon", "logit", "drop tokens whose probability is below E",
        positional=(Param("e", "float", lo=0.0, hi=1.0, lo_open=True, hi_open=True, doc="probability cutoff"),),
        keywords=(_keep(),), sampling=True, reference="epsilon_cutoff=E",
        cite="Hewitt, Manning & Liang 2022, Truncation Sampling as Language Model Desmoothing",
        impl=_L + "epsilon", aliases=("epsilon_cutoff",),
        hf=_truncation("epsilon_cutoff", "e", 0.0, rank=16)),
    ClauseSpec(
        "eta", "logit", "drop tokens below min(E, sqrt(E) * exp(-entropy))",
        positional=(Param("e", "float", lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                          doc="cutoff scale"),),
        keywords=(_keep(),), sampling=True, reference="eta_cutoff=E",
        cite="Hewitt, Manning & Liang 2022, Truncation Sampling as Language Model Desmoothing",
        impl=_L + "eta", aliases=("eta_cutoff",), hf=_truncation("eta_cutoff", "e", 0.0, rank=17)),
    ClauseSpec(
        "topnsigma", "logit", "keep logits within N standard deviations of the largest",
        positional=(Param("n", "float", lo=0.0, lo_open=True, doc="width in standard deviations"),),
        sampling=True, reference=None,
        cite="Tang et al. 2024, Top-nσ: Not All Logits Are You Need", impl=_L + "topnsigma",
        aliases=("top_n_sigma",)),
    ClauseSpec(
        "mirostat", "logit",
        "Mirostat 2.0: drop tokens more surprising than a bound that adapts so the text's "
        "surprise per token tracks TAU",
        keywords=_MIROSTAT,
        sampling=True, reference=None,
        cite="Basu et al. 2021, Mirostat (ICLR 2021, arXiv:2007.14966); the 2.0 update as in llama.cpp",
        impl=_L + "mirostat",
        details="Each row keeps a bound mu in bits, 2·TAU at first. The stage drops every token "
                "whose surprise -log2 p exceeds mu (never the most likely one); a token is drawn "
                "from what is left, renormalised (by Gumbel-max: like llama.cpp's, the stage "
                "selects when the search draws one token per row), and mu moves by ETA·(the drawn "
                "token's surprise under that renormalised distribution - TAU). mu is state kept "
                "per row (it moves with the rows of a beam search). As in llama.cpp, write it "
                "last: it is meant to see the distribution the token is drawn from."),
    ClauseSpec(
        "repetition", "logit", "CTRL repetition penalty: shrink the logits of tokens already seen by R",
        positional=(Param("r", "float", lo=1 / SCALE, hi=SCALE, doc="penalty (1 = none)",
                          lo_why=DIVISOR_WHY, hi_why=DIVISOR_WHY),),
        keywords=(_last(),), reference="repetition_penalty=R",
        cite="Keskar et al. 2019, CTRL", impl=_L + "repetition", aliases=("repetition_penalty",),
        hf=_hf("repetition_penalty", "r", 1.0, rank=1, role="factor", refuse=_refuse_window)),
    ClauseSpec(
        "presence", "logit", "subtract P from the logit of every token already seen",
        positional=(Param("p", "float", lo=-SCALE, hi=SCALE, doc="additive penalty",
                          lo_why=BIG_WHY, hi_why=BIG_WHY),),
        keywords=(_last(),),
        aliases=("presence_penalty",), cite="OpenAI API presence_penalty (also vLLM)", impl=_L + "presence"),
    ClauseSpec(
        "frequency", "logit", "subtract F times its count from the logit of every token seen",
        positional=(Param("f", "float", lo=-SCALE, hi=SCALE, doc="additive penalty per occurrence",
                          lo_why=BIG_WHY, hi_why=BIG_WHY),),
        keywords=(_last(),),
        reference=None, cite="OpenAI API frequency_penalty (also vLLM)", impl=_L + "frequency",
        aliases=("frequency_penalty",)),
    ClauseSpec(
        "norepeat", "logit", "forbid any n-gram of size N from appearing twice",
        positional=(Param("n", "int", lo=1, doc="n-gram size"),),
        reference="no_repeat_ngram_size=N",
        cite="Paulus, Xiong & Socher 2017; Klein et al. 2017 (OpenNMT)", impl=_L + "norepeat",
        aliases=("no_repeat_ngram_size",), hf=_hf("no_repeat_ngram_size", "n", 0, rank=2, role="mask")),
    ClauseSpec(
        "minlen", "logit", "forbid end-of-sequence while a row holds fewer than N tokens, its prompt included",
        positional=(Param("n", "int", lo=0, doc="minimum length in tokens, prompt included"),),
        reference="min_length=N", impl=_L + "minlen", aliases=("min_length",),
        hf=HF(_min_length_kwargs, {"min_length": 0}, rank=4, role="mask"),
        details="transformers' `min_length` (MinLengthLogitsProcessor): the EOS ids score -inf while "
                "the row's tokens, prompt included, number fewer than N. A row's length is its own: "
                "in a left-padded batch transformers counts the padding too. For new tokens only, "
                "write `minnew N` (until issue 18, `minlen` meant that)."),
    ClauseSpec(
        "minnew", "logit", "forbid end-of-sequence before N new tokens",
        positional=(Param("n", "int", lo=0, doc="minimum new tokens"),),
        reference="min_new_tokens=N", impl=_L + "minnew", aliases=("min_new_tokens",),
        warn=_warn_minnew,
        hf=HF(_min_new_kwargs, {"min_new_tokens": None}, rank=5, role="mask")),
    ClauseSpec(
        "ban", "logit", "forbid the token sequences of these strings",
        positional=(Param("words", "str", variadic=True, doc="one or more strings", tokens=True),),
        reference="bad_words_ids=[ids(WORDS)...]", impl=_L + "ban", aliases=("bad_words",),
        hf=HF(lambda p, ids, kw: {"bad_words_ids": [ids(w) for w in p["words"]]}, {"bad_words_ids": None},
              rank=3, role="mask")),
    ClauseSpec(
        "bias", "logit", "add B to the logit that completes the token sequence of TEXT",
        positional=(Param("text", "str", doc="the biased string", tokens=True),
                    Param("b", "float", lo=-SCALE, hi=SCALE, doc="bias added",
                          lo_why=BIG_WHY, hi_why=BIG_WHY)),
        repeatable=True, reference="sequence_bias={ids(TEXT): B}", impl=_L + "bias",
        aliases=("sequence_bias",), hf=HF(_bias_kwargs, {"sequence_bias": None}, rank=0, role="shift"),
        details="transformers' `sequence_bias` (SequenceBiasLogitsProcessor). TEXT becomes its token ids "
                "(no BOS). A one-token text adds B to that token's logit at every step; a longer one "
                "adds B to its last token's logit only when the row's history ends with all its other "
                "tokens (and so is at least as long as the text): the token that would complete it. "
                "Biases landing on one token add up, one-token texts' first."),
    ClauseSpec(
        "suppress", "logit", "never choose these tokens",
        positional=(_token_ids("token_ids", "token ids, e.g. suppress 13 198"),),
        reference="suppress_tokens=[TOKEN_IDS...]", impl=_L + "suppress", aliases=("suppress_tokens",),
        cite="transformers' SuppressTokensLogitsProcessor (after Whisper, Radford et al. 2022)",
        hf=HF(lambda p, ids, kw: {"suppress_tokens": list(p["token_ids"])}, {"suppress_tokens": None},
              rank=9, role="mask"),
        details="The tokens' scores are -inf at every step. Ids outside the model's vocabulary stop "
                "the run with a message naming the clause. To forbid a text, write `ban`."),
    ClauseSpec(
        "suppress_at_start", "logit", "the first new token is none of these tokens",
        positional=(_token_ids("token_ids", "token ids, e.g. suppress_at_start 2 198"),),
        reference="begin_suppress_tokens=[TOKEN_IDS...]", impl=_L + "suppress_at_start",
        aliases=("begin_suppress_tokens",), lower=_after_bos,
        cite="transformers' SuppressTokensAtBeginLogitsProcessor (after Whisper, Radford et al. 2022)",
        hf=HF(lambda p, ids, kw: {"begin_suppress_tokens": list(p["token_ids"])}, {"begin_suppress_tokens": None},
              rank=10, role="mask"),
        details="The tokens score -inf while the first new token is chosen (e.g. EOS or a blank "
                "at the start). As transformers for a decoder-only model: with `force_bos` in the "
                "recipe, a row of a one-token prompt (whose first new token force_bos forces) is "
                "suppressed at its second new token instead."),
    ClauseSpec(
        "force_bos", "logit", "after a one-token prompt, the first new token is TOKEN",
        positional=(Param("token", "int", lo=0, doc="the token id forced"),),
        reference="forced_bos_token_id=TOKEN", impl=_L + "force_bos", aliases=("forced_bos_token_id",),
        cite="transformers' ForcedBOSTokenLogitsProcessor (for mBART-style target language ids)",
        hf=_hf("forced_bos_token_id", "token", None, rank=6, role="other"),
        details="When a row's history is exactly one token (for a decoder-only model: a one-token "
                "prompt, at the first step), every token but TOKEN scores -inf and TOKEN scores 0; "
                "otherwise nothing. The history counted is the row's own: transformers counts a "
                "left-padded batch's padding, so there it forces nothing once any prompt is longer."),
    ClauseSpec(
        "force_eos", "logit", "the last new token that max allows is end-of-sequence",
        reference="forced_eos_token_id=<the EOS ids>", impl=_L + "force_eos", aliases=("forced_eos_token_id",),
        cite="transformers' ForcedEOSTokenLogitsProcessor",
        hf=HF(lambda p, ids, kw: {"forced_eos_token_id": _ModelEos()}, {"forced_eos_token_id": None},
              rank=7, role="other"),
        details="While new token `max` is chosen, every token but the model's EOS ids scores -inf and "
                "the EOS ids score 0, so a row that reaches `max` ends with EOS (finish \"eos\"). In "
                "`decode.transform` every history token counts as new, so it acts when the history "
                "holds max - 1 tokens."),
    ClauseSpec(
        "lengthdecay", "logit", "past START new tokens, raise the end-of-sequence logits exponentially",
        keywords=(Param("start", "int", lo=0, doc="new tokens before the rise begins"),
                  Param("factor", "float", lo=0.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                        doc="growth per token (> 1 raises EOS)")),
        reference="exponential_decay_length_penalty=(START, FACTOR)", impl=_L + "lengthdecay",
        aliases=("exponential_decay_length_penalty",), warn=_warn_lengthdecay,
        cite="transformers' ExponentialDecayLengthPenalty",
        hf=HF(_lengthdecay_kwargs, {"exponential_decay_length_penalty": None}, rank=8, role="other"),
        details="While new token START + k + 1 is chosen (k >= 1), each EOS logit x becomes "
                "x + |x|·(FACTOR**k - 1): shorter texts without a hard cut. |x| makes it raise a "
                "negative logit too. FACTOR**k - 1 stops at 1e20 (EOS is certain long before). "
                "An EOS logit already -inf (`minnew`, `minlen`) stays -inf, where transformers makes "
                "it NaN: `explain --hf` finds no equivalent when that can happen."),
    ClauseSpec(
        "renormalize", "logit", "log-softmax the scores (a beam search then adds normalised log-probs)",
        reference="renormalize_logits=True", impl=_L + "renormalize", aliases=("renormalize_logits",),
        warn=_warn_renormalize, cite="transformers' LogitNormalization",
        hf=HF(lambda p, ids, kw: {"renormalize_logits": True}, {"renormalize_logits": False},
              rank=20, role="other"),
        details="Replaces the scores by their log-softmax, as transformers does after all its "
                "processors when renormalize_logits=True. It changes the scores a beam search adds "
                "up (after stages that removed or moved mass); greedy and sampling choose the same "
                "tokens with or without it. Write it last."),
    ClauseSpec(
        "cfg", "logit",
        "classifier-free guidance: push the scores away from an unconditional (or negative) prompt's by SCALE",
        keywords=(Param("scale", "float", lo=0.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                        lo_why="scale=0 ignores the prompt (the scores become the unconditional "
                               "row's alone: to decode from the negative prompt, make it the "
                               "prompt), and a scale below 0 rewards what the prompt makes "
                               "unlikely and makes a token an earlier stage removed (-inf) certain "
                               "(+inf); guide toward the prompt with scale > 1, e.g. scale=1.5",
                        doc="guidance strength: 1 = none, > 1 toward the prompt, < 1 toward the "
                            "unconditional row"),
                  Param("negative", "str", None,
                        doc="the negative prompt the unconditional row reads (default: the "
                            "prompt's last token alone)")),
        reference="guidance_scale=SCALE, negative_prompt_ids=ids(NEGATIVE)",
        cite="Sanchez et al. 2023, Stay on topic with Classifier-Free Guidance (arXiv:2306.17806); "
             "transformers' UnbatchedClassifierFreeGuidanceLogitsProcessor",
        impl=_L + "cfg", warn=_warn_cfg, explain=_explain_cfg,
        aliases=("guidance_scale", "classifier_free_guidance"),
        hf=HF(_cfg_kwargs, {"guidance_scale": None}, rank=-1, role="mix", note=_cfg_note,
              beams_refuse="transformers' guidance keeps each unconditional row in place when the "
                           "beams reorder (its own cache, never reordered) and cannot take a "
                           "negative prompt with beams; decode moves the row with its beam"),
        details="Each row of the search has an unconditional row: NEGATIVE encoded as a prompt is "
                "(with BOS), or, without NEGATIVE, the prompt's last token alone (transformers' "
                "default). It is decoded in the same batched step as the rows, with its own KV "
                "cache rows, and reads the same new tokens; a beam search moves it with its beam. "
                "The stage replaces its input x by SCALE·(log_softmax(x) - u) + u, u the "
                "log_softmax of the unconditional row's logits (Sanchez et al.'s formula in log "
                "space; transformers' processor, which it always applies first: write cfg first "
                "to match it). SCALE = 1 leaves log_softmax(x); SCALE > 1 favours what the prompt "
                "makes likelier than the unconditional row does; 0 < SCALE < 1 leans toward the "
                "unconditional row. The step runs the model on twice the rows. Token for token "
                "transformers' generate(guidance_scale=SCALE, negative_prompt_ids=...) without "
                "beams; with beams transformers leaves each unconditional row where it was when "
                "the beams reorder, so it has no equivalent there."),
    ClauseSpec(
        "watermark", "logit", "add DELTA to a pseudo-random green fraction GAMMA of the vocabulary, "
        "seeded by the previous tokens (detect it with `decode detect`)",
        keywords=(Param("gamma", "float", 0.25, lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                        doc="green fraction of the vocabulary (transformers' greenlist_ratio)"),
                  Param("delta", "float", 2.0, lo=0.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                        lo_why="0 adds nothing, and a negative DELTA would mark the red tokens instead",
                        doc="added to the green logits (transformers' bias)"),
                  Param("key", "int", 15485863, lo=0, hi=2**63 - 1, doc="hashing key (keep yours private)",
                        hi_why="transformers multiplies it into 64-bit integers"),
                  Param("scheme", "enum", "lefthash", choices=("lefthash", "selfhash"),
                        doc="greenlist seeded by the previous token (lefthash) or by the candidate "
                            "itself (selfhash)"),
                  Param("width", "int", 1, lo=1, hi=2**20, doc="tokens of context that seed the greenlist")),
        reference="watermarking_config=WatermarkingConfig(...)",
        cite="Kirchenbauer et al. 2023, A Watermark for Large Language Models (ICML 2023, arXiv:2301.10226)",
        impl=_L + "watermark", aliases=("watermarking_config",),
        check=_check_watermark, explain=_explain_watermark,
        hf=HF(_hf_watermark, {"watermarking_config": None}, rank=20, role="shift",
              note=lambda p: "transformers applies the watermark after every other processor"),
        details="transformers' WatermarkLogitsProcessor, token for token: with scheme=lefthash "
                "the greenlist, int(V·GAMMA) ids, is the start of torch.randperm(V) from a CPU "
                "generator seeded with KEY·(previous token), whatever WIDTH (as in transformers); "
                "with scheme=selfhash each of the 40 likeliest tokens (found by transformers' sort, "
                "ties included) is green if it is in the greenlist seeded from KEY and its own id "
                "(selfhash with WIDTH > 1 is refused: it needs a greenlist per candidate and "
                "context, which the compiled step cannot draw). DELTA is added to the green "
                "logits. A row with fewer than WIDTH tokens of history is left as it is. The "
                "greenlists are drawn once per "
                "vocabulary, GAMMA and KEY (a table of V of them; with lefthash a V×V table of bits, 2 MB for "
                "4096 tokens, 128 MB for 32000), so the compiled step only looks them up. "
                "`decode detect` counts the green tokens of a text and gives transformers' "
                "WatermarkDetector z-score and p-value. transformers on a GPU draws its "
                "greenlists with the CUDA generator, which gives others: decode's are the CPU "
                "ones on every device."),
    ClauseSpec(
        "max", "limit", "stop after at most N new tokens",
        positional=(Param("n", "int", _MAX_NEW, lo=1, doc="new tokens"),),
        reference="max_new_tokens=N", setting="max_new_tokens", aliases=("max_new_tokens", "max_tokens"),
        hf=_hf("max_new_tokens", "n", _MAX_NEW)),
    ClauseSpec(
        "stop", "stop", "stop a sequence when it produces one of these strings",
        positional=(Param("strings", "str", variadic=True, doc="one or more stop strings"),),
        reference="stop_strings=[STRINGS...]", setting="stop_strings", aliases=("stop_strings",),
        hf=HF(lambda p, ids, kw: {"stop_strings": list(p["strings"])}, {"stop_strings": None},
              note=lambda p: "stop_strings needs generate(..., tokenizer=tokenizer)"),
        details="A sequence's text is cut right after the first stop string it produces (the "
                "token that completes it is kept, finish \"stop\"). Greedy decoding, sampling and "
                "the sampled sets (`sbeam`, `cpsbs`: a stopped row is a finished hypothesis, as "
                "at EOS) end the row at that token, so its score and log-probs are those of the "
                "kept tokens. A beam search searches on (the stop string ends no hypothesis) and cuts "
                "each returned hypothesis: its score is the whole hypothesis', and of hypotheses "
                "cut to the same tokens only the best is returned (fewer than RETURN may come "
                "back)."),
    ClauseSpec(
        "seed", "control", "seed the random number generator",
        positional=(Param("s", "int", lo=0, hi=2**64 - 1, doc="seed"),),
        reference="torch.manual_seed(S)", setting="seed",
        hf=HF(note=lambda p: f"call torch.manual_seed({p['s']}) right before generate()")),
):
    register(_spec)


# -- issue 17: the searches researchers compare against -------------------------------------

def _check_contrastive(c: Any, clauses: tuple) -> Problem | None:
    samplers = [x for x in clauses if x.sampling]
    if samplers:
        return Problem(f"contrastive search chooses by its own score, never by a draw: drop "
                       f"'{samplers[0].canonical}' (it makes the recipe sample), or use 'sample' "
                       "or 'beam K' with it instead of contrastive")
    return None


def _explain_contrastive(p: Params) -> str:
    k, a = p["k"], p["alpha"]
    return (f"each step the {k} most likely tokens (after the logit stages) each run one step "
            f"ahead; each scores {spell_value(round(1.0 - a, 12))}·p - {spell_value(a)}·(its largest cosine "
            "similarity with the last hidden states of the text so far), and the best is taken"
            + (" (alpha=0: greedy)" if a == 0 else ""))


register(ClauseSpec(
    "contrastive", "search",
    "contrastive search: of the K most likely tokens, take the one whose hidden state is least "
    "like the text's so far, weighed against its probability",
    keywords=(Param("k", "int", 4, lo=1, doc="candidates per step (transformers' top_k)"),
              Param("alpha", "float", 0.6, lo=0.0, hi=1.0,
                    doc="weight of the degeneration penalty (0: greedy)")),
    reference="penalty_alpha=ALPHA, top_k=K",
    cite="Su et al. 2022, A Contrastive Framework for Neural Text Generation (NeurIPS 2022, "
         "arXiv:2202.06417)",
    impl=_S + "contrastive", check=_check_contrastive, explain=_explain_contrastive,
    aliases=("contrastive_search", "penalty_alpha"),
    hf=HF(_sets(penalty_alpha="alpha", top_k="k"), {"penalty_alpha": None},
          note=lambda p: "transformers 4.55.4 runs contrastive search itself and warns that it "
                         "will move to a hub repository; trust_remote_code=True silences that "
                         "(without custom_generate it loads nothing)"),
    details="Each step, the logit stages process each row's logits; its K most likely tokens "
            "(softmax probabilities p) run one step ahead of the row, all K·rows in one batched "
            "forward, each attending to the row's text and itself. Candidate j's degeneration "
            "penalty s_j is the largest cosine similarity between its last hidden state (after the "
            "final norm) and those of the row's text so far (the prompt without its padding, and "
            "the tokens chosen); the row takes the candidate with the largest (1-ALPHA)·p_j - "
            "ALPHA·s_j (the first on a tie), and that candidate's look-ahead is its next step (no "
            "second forward). ALPHA=0 or K=1 is greedy search. As transformers' "
            "generate(penalty_alpha=ALPHA, top_k=K), token for token; `score` is the sum of the "
            "chosen tokens' processed log-probabilities."))


# -- from llama.cpp's samplers (issue 18): DRY, XTC, dynamic temperature, Mirostat 1.0 ----------

_DRY_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's default sequence breakers


def _explain_dry(p: Params) -> str:
    m, b, n = spell_value(p["multiplier"]), spell_value(p["base"]), p["allowed"]
    where = f"the last {p['last']} tokens" if p["last"] is not None else "the history"
    return (f"a token that would extend a repeat of {n} or more tokens in {where} loses "
            f"{m}·{b}^(length - {n}) from its logit ({m} for a repeat of {n}, {m}·{b} for "
            f"{n + 1}, ...); a repeat never reaches back past {spell_value(p['breakers'])}, and those "
            "breakers are never penalised themselves")


def _explain_xtc(p: Params) -> str:
    return (f"at each step, with chance {spell_value(p['probability'])} (drawn from the row's seed), every "
            f"token of probability {spell_value(p['threshold'])} or more is removed except the least "
            "likely of them, so the text takes a less obvious of its likely continuations; with only "
            "one such token nothing changes")


def _explain_dynatemp(p: Params) -> str:
    t, d = p["t"], p["range"]
    lo, hi = spell_value(round(max(0.0, t - d), 9)), spell_value(round(t + d, 9))  # 0.3, not 0.30000000000000004
    return (f"each row's temperature is {lo} + ({hi} - {lo})·(H / log n)^{spell_value(p['exponent'])}, "
            f"H its entropy and n its possible tokens: {lo} when one token is certain, {hi} when all "
            "are equally likely")


def _explain_mirostat1(p: Params) -> str:
    return (f"from the {p['m']} most likely tokens the row's Zipf exponent s is estimated; the k most "
            f"likely tokens are kept, k set so that the expected surprise is mu bits (mu starts at "
            f"{spell_value(2 * p['tau'])}), one is drawn, and mu moves by {spell_value(p['eta'])}·(its "
            f"surprise - {spell_value(p['tau'])}), so the text's surprise per token tracks "
            f"{spell_value(p['tau'])} bits")


def _dynatemp_samples(p: Params) -> bool:
    return p["t"] > 0 or p["range"] > 0


for _spec in (
    ClauseSpec(
        "dry", "logit", "DRY: penalise a token that would extend a repeat of the history, the more the "
                        "longer the repeat",
        positional=(Param("breakers", "str", _DRY_BREAKERS, variadic=True,
                          doc="sequence breakers: a repeat never reaches back past one"),),
        keywords=(Param("multiplier", "float", 0.8, lo=0.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                        lo_why="a multiplier of 0 penalises nothing; leave `dry` out instead",
                        doc="the penalty of a repeat of ALLOWED tokens"),
                  Param("base", "float", 1.75, lo=1.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                        lo_why="the penalty is MULTIPLIER·BASE^(length - ALLOWED): with BASE <= 1 it "
                               "does not grow with the repeat (llama.cpp switches DRY off)",
                        doc="how fast the penalty grows with each token of the repeat"),
                  Param("allowed", "int", 2, lo=1, doc="repeats shorter than this are not penalised"),
                  _last()),
        cite="Weidmann (p-e-w) 2024, DRY: a modern repetition penalty (text-generation-webui PR #5677); "
             "as llama.cpp's dry sampler", impl=_L + "dry", explain=_explain_dry,
        aliases=("dry_multiplier",),
        details="For each earlier slot j of the history (the last LAST tokens with `last`), n(j) is "
                "the number of tokens before and at j that equal the tokens at the end of the history "
                "(the repeat that the token after j would extend), capped at the tokens written after "
                "the last sequence breaker. A token that follows some j with n(j) >= ALLOWED loses "
                "MULTIPLIER·BASE^(n - ALLOWED), n its largest n(j) (the exponent capped so the power "
                "stays a float32, as llama.cpp does). Each breaker text is tokenised as `ban` does; "
                "llama.cpp also treats every token whose text contains a breaker as one. A one-token "
                "breaker is never penalised. The repeats are kept as running state, one pass over "
                "the history per token."),
    ClauseSpec(
        "xtc", "logit", "exclude top choices: now and then drop the likely tokens but the least likely of them",
        keywords=(Param("threshold", "float", 0.1, lo=0.0, lo_open=True, hi=0.5,
                        hi_why="above 0.5 at most one token reaches it, and xtc keeps one, so it "
                               "would never remove anything",
                        doc="the probability that makes a token a top choice"),
                  Param("probability", "float", 0.5, lo=0.0, hi=1.0,
                        doc="the chance, at each step, that xtc acts")),
        sampling=True, reference=None,
        cite="Weidmann (p-e-w) 2024, Exclude Top Choices (text-generation-webui PR #6335); as "
             "llama.cpp's xtc sampler", impl=_L + "xtc", explain=_explain_xtc,
        details="At each step each row draws u in (0, 1) from its own random key (a stream apart "
                "from the draws of selection, so a seed repeats it); if u <= PROBABILITY, every token "
                "whose probability is at least THRESHOLD is removed except the least likely of them "
                "(the first of tied ones), which is nothing when only one reaches THRESHOLD. A recipe "
                "that selects by argmax draws nothing, and there xtc removes nothing (so does "
                "`decode.transform`)."),
    ClauseSpec(
        "dynatemp", "logit", "dynamic temperature: divide the logits by a temperature that grows "
                             "with the row's entropy",
        positional=(Param("t", "float", 1.0, lo=1 / SCALE, hi=SCALE, or_zero=True,
                          doc="the temperature in the middle of the range", lo_why=DIVISOR_WHY,
                          hi_why=DIVISOR_WHY),),
        keywords=(Param("range", "float", lo=0.0, hi=SCALE, hi_why=BIG_WHY,
                        doc="the temperature lies within T - RANGE (at least 0) and T + RANGE"),
                  Param("exponent", "float", 1.0, lo=0.0, lo_open=True, hi=SCALE, hi_why=BIG_WHY,
                        doc="the normalised entropy is raised to this power")),
        sampling=_dynatemp_samples, sampling_doc="unless t = 0 and range = 0",
        argmax=lambda p: not _dynatemp_samples(p), argmax_doc="dynatemp 0 range=0",
        reference=None, impl=_L + "dynatemp", explain=_explain_dynatemp,
        cite="kalomaze 2023, dynamic temperature (llama.cpp PR #4972: temp_ext, --dynatemp-range, "
             "--dynatemp-exp)",
        details="With RANGE > 0 each row's temperature is lo + (hi - lo)·(H / log n)^EXPONENT, where "
                "lo = max(0, T - RANGE), hi = T + RANGE, H is the entropy of the row's softmax and n "
                "the number of its finite logits; a row with one finite logit is left alone. A "
                "temperature below 1e-20 keeps only the most likely token (the first of tied ones), "
                "as llama.cpp's temperature 0 does. RANGE = 0 is plain temperature T."),
    ClauseSpec(
        "mirostat1", "logit",
        "Mirostat 1.0: keep the k most likely tokens, k set from a Zipf fit so that the text's "
        "surprise per token tracks TAU",
        keywords=(*_MIROSTAT,
                  Param("m", "int", 100, lo=2, lo_why="the Zipf fit needs the probabilities of two tokens",
                        doc="tokens the Zipf exponent is estimated from")),
        sampling=True, reference=None,
        cite="Basu et al. 2021, Mirostat (ICLR 2021, arXiv:2007.14966), Algorithm 1; as llama.cpp's mirostat",
        impl=_L + "mirostat1", explain=_explain_mirostat1,
        details="Each row keeps mu in bits, 2·TAU at first. With p_1 >= p_2 >= ... its probabilities, "
                "s = Σ t_i·b_i / Σ t_i² over the first M - 1 pairs of possible tokens, t_i = "
                "log((i+1)/i), b_i = log(p_i / p_(i+1)); with e = s - 1 and V the vocabulary size, the "
                "k = max(1, floor((e·2^mu / (1 - V^-e))^(1/s))) most likely tokens are kept (all tied "
                "with the k-th; k = 1 where the fit is undefined) and one is drawn, renormalised (by "
                "Gumbel-max: like llama.cpp's, the stage selects when the search draws one token per "
                "row); mu then moves by ETA·(the drawn token's surprise - TAU). mu is state kept per "
                "row. As in llama.cpp, write it last. M is static: changing it compiles a new step."),
):
    register(_spec)


# -- issue 23: more diversity methods, each one short file on the search interface -----------

def _explain_capped(p: Params) -> str:
    g = p["g"]
    return (f"each beam contributes at most {g} continuation{'s' if g > 1 else ''}: only its {g} most "
            "likely children (after the logit stages) compete for the beam's candidates, the rest are "
            "dropped" + (" (every beam continues only its best child)" if g == 1 else ""))


def _explain_arith(p: Params) -> str:
    n = p["n"]
    return (f"{n} samples per prompt from {n} evenly spaced codes (one random offset) read through the "
            "arithmetic code of the processed distribution: each sample is distributed as plain "
            f"sampling, and the {n} split the probability mass between them instead of drawing it "
            "independently")


def _explain_determinantal(p: Params) -> str:
    return (f"each step the beam's candidates are chosen as a set: in turn, the continuation adding most "
            f"to (sum of scores + {spell_value(p['weight'])}·log det of the set's {p['n']}-gram "
            "similarity matrix) joins it, from a pool of the 2·K² best, so continuations repeating "
            "the n-grams of those already in lose; the first K that do not end go on")


def _explain_cluster(p: Params) -> str:
    c = p["c"]
    return (f"each step the 2·K best continuations are grouped into {c} cluster{'s' if c > 1 else ''} by "
            "k-means on their vectors (the last hidden state of the row each continues and the token's "
            "output embedding), and the beams go on round-robin from the clusters' best"
            + (" (one cluster: beam search)" if c == 1 else ""))


def _check_cluster(c: Any, clauses: tuple) -> Problem | None:
    search = next((x for x in clauses if x.kind == "search"), None)
    k = search["k"] if search is not None and search.name == "beam" else None
    if k is not None and c["c"] > 2 * k:
        return Problem(f"cluster {c['c']} asks for more clusters than the {2 * k} candidates `beam {k}` "
                       f"takes each step; use cluster {2 * k} or fewer", key="c", suggestion=f"cluster {2 * k}")
    return None


def _explain_npad(p: Params) -> str:
    return (f"the beam's K rows are K decoders that never meet: each takes its most likely token (a draw "
            f"when the recipe samples) after its last hidden state gains Gaussian noise of scale "
            f"{spell_value(p['sigma'])}/t at step t (its own draws, seeded), and the K sequences come back "
            "ranked by the model's noise-free log-probability"
            + (" (sigma 0: K copies of greedy decoding)" if p["sigma"] == 0 else ""))


def _warn_npad(c: Any, clauses: tuple) -> str | None:
    search = next((x for x in clauses if x.kind == "search"), None)
    if search is None or search.name != "beam" or (search["lenpen"] == 1.0 and search["early"] is False):
        return None
    return ("npad's decoders are greedy and ranked by their log-probability, so beam's lenpen and "
            "early change nothing; drop them")


for _spec in (
    ClauseSpec(
        "cluster", "modifier",
        "clustered beam search: the candidates are clustered by hidden state and taken round-robin",
        positional=(Param("c", "int", lo=1, lo_why="k-means needs at least one cluster",
                          doc="clusters of the 2·K candidates (at most 2·K)"),),
        cite="Tam 2020, Cluster-based beam search for pointer-generator chatbot grounded by knowledge "
             "(Computer Speech & Language 64); Kriz et al. 2019, Complexity-Weighted Loss and Diverse "
             "Reranking for Sentence Simplification (NAACL 2019)",
        impl=_S + "cluster", beam_variant=True, explain=_explain_cluster, check=_check_cluster,
        details="A modifier of `beam K`. Each step the recipe's logit stages run as in `beam`, and the "
                "2·K best continuations by beam score + processed log-prob are taken (drawn without "
                "replacement when the recipe samples). Each has a vector unit(h) + unit(w): h the last "
                "hidden state (after the final norm) of the row it continues, w the token's output "
                "embedding (its row of the output head), both from the forward that gave this step's "
                "logits. k-means groups the vectors into C clusters: the first centre is the best "
                "candidate, each next one the candidate farthest from the centres so far, then 10 "
                "Lloyd iterations (squared Euclidean distance, float64; an empty cluster keeps its "
                "centre; ties go to the lower index). The candidates are then ordered round-robin: "
                "each cluster's best, the clusters in the order of their bests, then each cluster's "
                "second, and so on (impossible ones last). Those ending in EOS among the first K become "
                "finished hypotheses, the first K that do not end go on, with their plain scores. "
                "C = 1 is beam search; C is part of the compiled step's structure. It needs a model "
                "that gives its hidden states."),
    ClauseSpec(
        "npad", "modifier",
        "noisy parallel approximate decoding: K independent greedy decoders, each with Gaussian noise "
        "on its hidden state, ranked by the noise-free score",
        keywords=(Param("sigma", "float", lo=0.0, hi=SCALE, hi_why=BIG_WHY,
                        lo_why="a noise scale is a standard deviation, never negative",
                        doc="noise scale S at the first step (S/t at step t; 0: K copies of greedy)"),),
        cite="Cho 2016, Noisy Parallel Approximate Decoding for Conditional Recurrent Language Model "
             "(arXiv:1605.03835)",
        impl=_S + "npad", beam_variant=True, explain=_explain_npad, warn=_warn_npad, draws=True,
        details="A modifier of `beam K`: the K rows of a prompt become K decoders that run side by "
                "side and never meet, as the paper's parallel decoders (it wraps greedy decoding or "
                "beam search; here each decoder is greedy). At step t (t = 1 for the first new "
                "token) a row's last hidden state h (after the final norm) gains sigma_t·z, z a "
                "vector of independent standard normal draws and sigma_t = SIGMA / t, the paper's "
                "annealing; each row draws from its own random key (Box-Muller on a stream apart "
                "from selection's), so a seed repeats the noise and the run is seeded like a "
                "sampling one. The recipe's logit stages process the noisy logits W(h + sigma_t·z) "
                "and the row takes the argmax (a draw when the recipe samples). The noise reaches a "
                "later step only through the tokens it chose: the forward itself stays noise-free "
                "(a transformer has no recurrent state to carry it). A row's `score` is the sum of "
                "log_softmax(W·h) at its tokens: the model's own log-probability of the sequence, "
                "noise-free and before the logit stages, by which the paper picks its best; the K "
                "sequences (RETURN of them, best first) come back ranked by it, and with `--logprobs` "
                "`raw` sums to it while `processed` is the noisy distribution the token was chosen "
                "from. lenpen and early do not apply. The noisy logits are computed as W·h + "
                "sigma_t·W·z: one more product with the output head per step. SIGMA = 0 is K "
                "copies of greedy decoding; SIGMA is a number of the compiled step. It needs a "
                "model that gives its hidden states."),
    ClauseSpec(
        "cpsbs", "search",
        "conditional Poisson stochastic beam search: each step K of the beams' children drawn as a set",
        positional=(Param("k", "int", lo=1, doc="beams, and sequences drawn"),),
        sampling=True, reference=None,
        cite="Meister, Amini, Vieira & Cotterell 2021, Conditional Poisson Stochastic Beam Search "
             "(EMNLP 2021, arXiv:2109.11034); the design: Hájek 1964",
        impl=_S + "cpsbs", aliases=("conditional_poisson",), check=_check_draws,
        details="Each step the logit stages process every beam's logits; a child's weight is the "
                "odds q/(1 - q) of q, its sequence probability under the processed distribution (the "
                "beam's probability times the token's) normalised over all K·V children (q capped "
                "at 0.99), as the authors' code weighs children (a softmax over the candidates, then "
                "the odds). Their code draws 2K and keeps the K likeliest of those that do not end "
                "(fairseq's EOS handling); the paper's design, done here, draws K. K children are drawn without replacement from all K·V by the "
                "conditional Poisson design: a set S of K with probability proportional to the product "
                "of its members' weights (the largest member first, each by one uniform, from the "
                "design's elementary symmetric polynomials; exact, in float64). A finished beam is its "
                "own only child (padding, weight unchanged). At the first step only one beam lives. "
                "Each sequence comes back with `inclusion`, the log of the product over the steps of "
                "the design's probability of keeping its prefix given the set before (the paper's "
                "estimate of its inclusion probability; exact after one step): the sum over the set "
                "of f(y)·p(y)/exp(inclusion) estimates E[f] without bias. The authors' temperature "
                "is `temp T` written before it. Because a set's weight is a product, K children of "
                "the likeliest beam outweigh one child of each beam by a power of that beam's lead, "
                "so the beams tend to collapse onto one lineage: the set is less diverse than "
                "`sbeam`'s. The sequences come back best log-probability first; `score` is that "
                "log-probability; fewer come back if fewer sequences exist."),
    ClauseSpec(
        "determinantal", "modifier",
        "determinantal beam search: the candidates are the greedy MAP of a DPP of score and n-gram overlap",
        keywords=(Param("weight", "float", lo=0.0, hi=SCALE, hi_why=BIG_WHY,
                        doc="weight W of log det(similarity) against the scores (0: beam search)"),
                  Param("n", "int", 2, lo=1, hi=8, hi_why="an n-gram's id is exact in 64 bits up to n=8 "
                        "for vocabularies of 256 tokens; larger vocabularies allow less (a message says)",
                        doc="n-gram size of the similarity")),
        cite="Meister, Forster & Cotterell 2021, Determinantal Beam Search (ACL 2021, arXiv:2106.07400); "
             "greedy MAP as Chen, Zhang & Zhou 2018 (NeurIPS)",
        impl=_S + "determinantal", beam_variant=True, explain=_explain_determinantal,
        details="A modifier of `beam K`. Each step the recipe's logit stages run as in `beam`; the "
                "pool is the min(K·V, 2·K²) best continuations by beam score + processed log-prob "
                "(drawn without replacement from their softmax when the recipe samples). The "
                "similarity of two continuations is the cosine of the count vectors of the n-grams of "
                "their new tokens (1 with itself, 0 with others while a text has no n-gram). The "
                "2·K candidates are chosen greedily from the pool: each time, the continuation with "
                "the largest score + WEIGHT·log d² joins, d² the squared distance of its similarity "
                "vector from the span of those chosen (the factor by which det(S_Y) grows; below "
                "1e-30 it counts as 1e-30), which is the greedy MAP of the DPP with kernel "
                "diag(e^score/2)·S^WEIGHT·diag(e^score/2) restricted to log det = sum of scores + "
                "WEIGHT·log det S_Y: the quality is the score, the diversity the n-gram overlap, "
                "weighted by WEIGHT (the paper writes the kernel as D + w·K; this is its "
                "quality-diversity form). Candidates ending in EOS among the first K chosen become "
                "finished hypotheses; the first K chosen that do not end go on, with their plain "
                "scores. WEIGHT = 0 is beam search; WEIGHT is a number of the compiled step."),
    ClauseSpec(
        "arith", "search", "arithmetic sampling: N samples from evenly spaced codes of the distribution",
        positional=(Param("n", "int", 1, lo=1, doc="samples per prompt"),),
        sampling=True, reference=None,
        cite="Vilnis, Zemlyanskiy, Murray, Passos & Sanghai 2023, Arithmetic Sampling: Parallel "
             "Diverse Decoding for Large Language Models (ICML 2023, arXiv:2210.15458)",
        impl=_S + "arith", explain=_explain_arith, aliases=("arithmetic",), check=_check_draws,
        details="Row i of a prompt's N rows starts from the code (i + U)/N mod 1, U one uniform per "
                "prompt. Each step the logit stages process each row's logits (as `sample` does: raw "
                "logits in), and the row takes the token whose interval [F(token-), F(token)) of the "
                "cumulative distribution of their softmax holds its code; the code becomes "
                "(code - F(token-)) / P(token), its place in that interval. Every row alone is "
                "ancestral sampling from the processed distribution; together the N rows are one "
                "randomly shifted lattice, so a token of probability P is taken by floor or ceil of "
                "N·P of them at the first step, and the set repeats itself less than N independent "
                "samples. Codes are float64; so that they never run out of bits over a long text, all "
                "codes of a prompt move by one fresh shared uniform (mod 1) before each step, which "
                "keeps each row's code uniform given its text and the codes of rows that share a "
                "text evenly spaced (the move before the first step is U). `score` is the sum of "
                "the processed log-probs; sequences come back in row order. A stage that draws "
                "itself (mirostat) does not draw here: the code decides. The division by P(token) "
                "magnifies rounding: a batch of other prompts, or the compiled step, rounds the "
                "logits' last bits differently and turns a row into other tokens within a few steps "
                "(each as likely); the same batch in the same mode repeats it exactly."),
    ClauseSpec(
        "capped", "modifier", "top-g capping: each beam contributes at most G continuations",
        positional=(Param("g", "int", lo=1, hi=2**31 - 1,
                          lo_why="a beam must be allowed one continuation, or no beam could go on",
                          doc="continuations per beam that may compete"),),
        cite="Ippolito, Kriz, Sedoc, Kustikova & Callison-Burch 2019, Comparison of Diverse Decoding "
             "Methods from Conditional Language Models (ACL 2019), top-g capping",
        impl=_S + "capped", beam_variant=True, explain=_explain_capped,
        details="A modifier of `beam K`. Each step, after the recipe's logit stages, the continuations "
                "of each beam are ranked by processed log-prob (of equal ones, the lower token id "
                "first); only the G best of each beam keep their score, the others become impossible "
                "(-inf). The beam search then picks (or, when the recipe samples, draws) its 2·K "
                "continuations from what is left, exactly as `beam` does, so no beam has more than G "
                "children among the candidates. With G·K < 2·K fewer than 2·K candidates exist and "
                "beams may die. G >= the vocabulary size is plain beam search; G is a number of the "
                "compiled step, so a sweep over it does not recompile."),
):
    register(_spec)


# -- issue 19: structured output (the llguidance engine; dsl/structured.py) ---------------------

_ENGINE = ("Moskal et al. 2025, llguidance (github.com/guidance-ai/llguidance); after Willard & Louf "
           "2023, Efficient Guided Generation for Large Language Models (arXiv:2307.09702)")
_CONSTRAINED = ("Each row keeps its own matcher of the engine, on the host; before every step it "
                "gives the row's allowed tokens as a bitmask, which the stage applies inside the "
                "compiled step (every other token scores -inf), and end-of-sequence is allowed exactly "
                "when the text so far is complete. A beam search copies a row's matcher with its "
                "beam; a row that has ended stops advancing. The text is the new tokens' bytes as "
                "the tokenizer spells them (a sentencepiece token's leading space counts, though "
                "decoding drops it from a text's first token). Written order is application order: "
                "stages after it see the constrained scores. A row left with no allowed token (a "
                "text the tokenizer cannot go on with) ends with finish \"constraint\" and a "
                "warning, never with a token the constraint refuses. transformers has no such "
                "processor; generate(prefix_allowed_tokens_fn=...) with the same matcher's allowed "
                "tokens is its equivalent, token for token (greedy and beam search).")


def _warn_truncated_first(c: Any, clauses: tuple) -> str | None:
    before = [x for x in clauses[:clauses.index(c)] if x.kind == "logit" and x.sampling]
    if before:
        return (f"'{before[0].canonical}' comes before the constraint, so it truncates first and may "
                "keep only tokens the constraint refuses (then every token is removed): write the "
                "constraint first, as its clauses apply in written order")
    return None


def _inline(text: str, mark: str) -> bool:
    return "\n" in text or mark in text


def _json_source(p: Params):
    schema = p["schema"]
    if schema is None:
        return structured.Source("json_schema", "{}", what="JSON schema")
    inline = schema.lstrip().startswith("{")
    return structured.Source("json_schema", schema, key="schema", file=not inline, what="JSON schema")


for _spec in (
    ClauseSpec(
        "regex", "logit", "the text must match a regular expression, in full",
        positional=(Param("pattern", "str", doc="a regular expression (Rust regex syntax, as "
                          "llguidance reads it) that the whole new text must match"),),
        constraint=lambda p: structured.Source("regex", p["pattern"], key="pattern", what="regex",
                                               wrapped=True),
        check=structured.check, warn=_warn_truncated_first, cite=_ENGINE, impl=_L + "regex", aliases=("pattern", "regexp"),
        explain=lambda p: f"only texts matching {spell_value(p['pattern'])} in full; EOS once one is complete",
        details="The new text matches PATTERN from its first byte to its last (anchored at both "
                "ends). " + _CONSTRAINED),
    ClauseSpec(
        "json", "logit", "the text must be JSON: any value, or one valid under a JSON schema",
        keywords=(Param("schema", "str", None, doc="a JSON schema: the path of a .json file, or "
                        "the schema itself written inline ({...}); unset: any JSON value"),),
        constraint=_json_source, check=structured.check, cite=_ENGINE, impl=_L + "json",
        aliases=("json_schema", "response_format"),
        explain=lambda p: ("only JSON valid under the schema " + spell_value(p["schema"])
                           if p["schema"] is not None else "only a JSON value") + "; EOS once it is complete",
        details="The new text is one JSON value (llguidance's JSON grammar: whitespace between "
                "tokens allowed), valid under SCHEMA when given (the keywords llguidance supports; "
                "one it does not is a check error naming it). A SCHEMA that starts with { is the "
                "schema itself; otherwise it is a file path, relative to the folder of the .dec "
                "file the recipe is in (recipe text: the working directory); the recipe's "
                "fingerprint holds the file's contents. "
                + _CONSTRAINED),
    ClauseSpec(
        "grammar", "logit", "the text must parse with a Lark-style grammar",
        positional=(Param("source", "str", doc="a Lark grammar (llguidance's Lark syntax, rule "
                          "`start`): the path of a .lark file, or the grammar itself"),),
        constraint=lambda p: structured.Source("lark", p["source"], key="source", what="Lark grammar",
                                               file=not _inline(p["source"], ":")),
        check=structured.check, warn=_warn_truncated_first, impl=_L + "grammar", aliases=("cfg_grammar", "gbnf", "lark"),
        cite="Geng et al. 2023, Grammar-Constrained Decoding for Structured NLP Tasks without "
             "Finetuning (EMNLP 2023); " + _ENGINE,
        explain=lambda p: f"only texts the grammar {spell_value(p['source'])} derives from `start`; "
                          "EOS once one is complete",
        details="SOURCE holding a newline or a colon is the grammar itself; otherwise it is a file "
                "path, relative to the folder of the .dec file the recipe is in (recipe text: the "
                "working directory); the recipe's fingerprint holds the file's contents. The "
                "syntax is Lark's, as llguidance reads "
                "it (rules in lower case, terminals in upper case, /regex/ terminals, %ignore), the "
                "syntax of decode's own grammar. " + _CONSTRAINED),
    ClauseSpec(
        "choice", "logit", "the text must be one of these strings",
        positional=(Param("options", "str", variadic=True, doc="the texts allowed"),),
        constraint=lambda p: structured.Source("choice", __import__("json").dumps(list(p["options"])),
                                               key="options", what="choice", wrapped=True),
        check=structured.check, warn=_warn_truncated_first, cite=_ENGINE, impl=_L + "choice", aliases=("choices", "one_of"),
        explain=lambda p: "only one of " + ", ".join(spell_value(o) for o in p["options"])
                          + "; EOS right after it",
        details="The new text is exactly one of OPTIONS (as the regex of their alternation). "
                + _CONSTRAINED),
):
    register(_spec)
