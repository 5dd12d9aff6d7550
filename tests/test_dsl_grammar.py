"""The grammar and the catalogue: what each clause parses to, and the canonical form."""
import pytest

from decode.dsl import CATALOGUE, LANG_VERSION, Recipe, Span, fmt, lookup, parse
from decode.dsl.docs import reference_markdown
from decode.dsl.spec import REQUIRED, Call

DESIGN_CARD = "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7"

# clause -> (recipe text, the clause's resolved params)
EVERY_CLAUSE = {
    "greedy": ("greedy", {}),
    "sample": ("sample 3", {"n": 3}),
    "beam": ("beam 4 lenpen=0.6 early=never return=2",
             {"k": 4, "lenpen": 0.6, "early": "never", "return": 2}),
    "sbeam": ("sbeam 8", {"k": 8}),
    "contrastive": ("contrastive k=6 alpha=0.4", {"k": 6, "alpha": 0.4}),
    "diverse": ("beam 6 | diverse groups=3 penalty=1.5 kind=ngram n=3",
                {"groups": 3, "penalty": 1.5, "kind": "ngram", "n": 3}),
    "siblings": ("beam 4 | siblings 0.5", {"gamma": 0.5}),
    "iterative": ("beam 6 | iterative groups=3", {"groups": 3, "distance": 2}),
    "capped": ("beam 4 | capped 2", {"g": 2}),
    "arith": ("arith 4", {"n": 4}),
    "cpsbs": ("cpsbs 3", {"k": 3}),
    "cluster": ("beam 4 | cluster 3", {"c": 3}),
    "npad": ("beam 4 | npad sigma=0.3", {"sigma": 0.3}),
    "determinantal": ("beam 4 | determinantal weight=0.5", {"weight": 0.5, "n": 2}),
    "draft": ('draft "demo-draft" k=3', {"path": "demo-draft", "k": 3}),
    "lookup": ("lookup n=3 k=8", {"n": 3, "k": 8}),
    "dola": ("dola 0 2 pick=batch | repetition 1.2", {"layer": (0, 2), "layers": "high", "pick": "batch"}),
    "force": ('beam 4 | force "a b" any("c", ids(3, 4))',
              {"phrases": ("a b", Call("any", ("c", Call("ids", (3, 4)))))}),
    "temp": ("temp 0.7", {"t": 0.7}),
    "topk": ("topk 40 keep=2", {"k": 40, "keep": 2}),
    "topp": ("topp .9", {"p": 0.9, "keep": 1}),
    "minp": ("minp 0.05", {"p": 0.05, "keep": 1}),
    "typical": ("typical 0.2 keep=3", {"p": 0.2, "keep": 3}),
    "epsilon": ("epsilon 3e-4", {"e": 0.0003, "keep": 1}),
    "eta": ("eta 1E-3", {"e": 0.001, "keep": 1}),
    "topnsigma": ("topnsigma 1", {"n": 1.0}),
    "mirostat": ("mirostat tau=3 eta=0.2", {"tau": 3.0, "eta": 0.2}),
    "repetition": ("repetition 1.3", {"r": 1.3, "last": None}),
    "presence": ("presence -0.5 last=64", {"p": -0.5, "last": 64}),
    "frequency": ("frequency 0.25", {"f": 0.25, "last": None}),
    "norepeat": ("norepeat 3", {"n": 3}),
    "minlen": ("minlen 0", {"n": 0}),
    "minnew": ("minnew 3", {"n": 3}),
    "suppress": ("suppress 5 17 5", {"token_ids": (5, 17, 5)}),
    "suppress_at_start": ("suppress_at_start 2", {"token_ids": (2,)}),
    "force_bos": ("force_bos 1", {"token": 1}),
    "force_eos": ("force_eos", {}),
    "lengthdecay": ("lengthdecay start=10 factor=1.25", {"start": 10, "factor": 1.25}),
    "renormalize": ("renormalize", {}),
    "ban": ('ban "foo" "bar baz"', {"words": ("foo", "bar baz")}),
    "bias": ('bias "\\"hi\\"\\n" -2.5', {"text": '"hi"\n', "b": -2.5}),
    "watermark": ("watermark gamma=0.5 delta=1.5 key=7 scheme=selfhash",
                  {"gamma": 0.5, "delta": 1.5, "key": 7, "scheme": "selfhash", "width": 1}),
    "max": ("max 32", {"n": 32}),
    "stop": ('stop "\\n\\n" "END"', {"strings": ("\n\n", "END")}),
    "seed": ("seed 1234", {"s": 1234}),
    "cfg": ('cfg scale=1.5 negative="dull"', {"scale": 1.5, "negative": "dull"}),
    "dry": ('dry "\\n" "." multiplier=1.5 base=1.1 allowed=3 last=256',
            {"breakers": ("\n", "."), "multiplier": 1.5, "base": 1.1, "allowed": 3, "last": 256}),
    "xtc": ("xtc threshold=0.2 probability=1", {"threshold": 0.2, "probability": 1.0}),
    "dynatemp": ("dynatemp 0.7 range=0.3", {"t": 0.7, "range": 0.3, "exponent": 1.0}),
    "mirostat1": ("mirostat1 tau=3 m=50", {"tau": 3.0, "eta": 0.1, "m": 50}),
    "regex": ('regex "[0-9]{4}-[0-9]{2}"', {"pattern": "[0-9]{4}-[0-9]{2}"}),
    "json": ('json schema="{\\"type\\": \\"integer\\"}"', {"schema": '{"type": "integer"}'}),
    "grammar": ('grammar "start: NUM\\nNUM: /[0-9]+/"', {"source": "start: NUM\nNUM: /[0-9]+/"}),
    "choice": ('choice "yes" "no"', {"options": ("yes", "no")}),
}


def test_every_catalogue_clause_is_pinned():
    assert set(EVERY_CLAUSE) == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(EVERY_CLAUSE))
def test_clause_parses_to_its_params(name):
    text, params = EVERY_CLAUSE[name]
    clause = parse(text).get(name)
    assert clause.name == name
    assert clause.param_dict == params
    assert [p for p, _ in clause.params] == [p.name for p in lookup(name).params]
    for key, value in params.items():
        assert clause[key] == value and type(clause[key]) is type(value)


def test_design_card_example():
    r = parse(DESIGN_CARD)
    assert [c.name for c in r.clauses] == ["beam", "diverse", "topp", "temp"]
    assert r.search.name == "beam" and r.search["k"] == 4 and r.search["return"] == 4
    assert [c.name for c in r.modifiers] == ["diverse"]
    assert r.get("diverse").param_dict == {"groups": 2, "penalty": 0.5, "kind": "hamming", "n": 2}
    assert [c.name for c in r.stages] == ["topp", "temp"]
    assert r.stages[0]["p"] == 0.9 and r.stages[1]["t"] == 0.7
    assert r.sampling and "topp 0.9" in r.sampling_reason
    assert r.canonical == "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 | temp 0.7"
    assert r.warnings == ()


def test_spans_point_at_the_text():
    text = "beam 4 lenpen=0.6\n| topp 0.9  # nucleus"
    r = parse(text)
    beam, topp = r.clauses
    assert beam.span == Span(0, 17) and beam.span.slice(text) == "beam 4 lenpen=0.6"
    assert [a.span.slice(text) for a in beam.args] == ["4", "lenpen=0.6"]
    assert topp.span.slice(text) == "topp 0.9" and topp.span.line_col(text) == (2, 3)


def test_bare_name_starts_a_new_clause_but_not_after_equals():
    assert [c.name for c in parse("topp 0.9 temp 0.7").clauses] == ["topp", "temp"]
    assert parse("beam 4 early=true").search["early"] is True
    assert parse("beam 4 early = never").search["early"] == "never"


def test_separators_newlines_and_comments_are_layout():
    a = parse("beam 4 | topp 0.9 | max 16")
    b = parse("# header\nbeam 4   # search\n\ntopp 0.9\nmax 16\n")
    c = parse("beam 4 topp 0.9 max 16")
    assert a == b == c and hash(a) == hash(b)
    assert a.text != b.text


def test_numbers_are_spelled_canonically():
    assert fmt("temp 1") == "greedy | temp 1.0"
    assert fmt("topp .50") == "greedy | topp 0.5"
    assert fmt("epsilon 3e-4") == "greedy | epsilon 0.0003"
    assert fmt("epsilon 0.00001") == "greedy | epsilon 1e-05"
    assert fmt("presence -0.0") == "greedy | presence 0.0"
    assert fmt("beam 004") == "beam 4"


def test_canonical_order_defaults_and_max():
    assert fmt("max 32 | topp 0.9 | seed 1 | stop \"x\" | beam 4 lenpen=1.0 early=false") == \
        'beam 4 | topp 0.9 | max 32 | stop "x" | seed 1'
    assert fmt("topp 0.9 keep=1 | max 128") == "greedy | topp 0.9"
    assert fmt("beam 4 return=4") == "beam 4" and fmt("beam 4 return=2") == "beam 4 return=2"
    assert fmt("sample 1") == "sample"
    assert parse("beam 4 return=4") == parse("beam 4")


def test_written_order_of_stages_is_kept_and_matters():
    assert parse("topp 0.9 temp 0.7") != parse("temp 0.7 topp 0.9")
    assert parse("topp 0.9 | beam 4") == parse("beam 4 | topp 0.9")


def test_strings_round_trip_with_escapes():
    r = parse(r'stop "a\"b" "tab\there" "\u00e9\\"')
    assert r.stop_strings == ('a"b', "tab\there", "é\\")
    assert fmt(r) == r'greedy | stop "a\"b" "tab\there" "é\\"'
    assert parse(fmt(r)) == r


def test_recipe_api():
    r = parse('beam 4 | repetition 1.2 | max 32 | stop "\\n" | seed 7')
    assert r.max_new_tokens == 32 and r.stop_strings == ("\n",) and r.seed == 7
    assert r.param("beam", "lenpen", None) == 1.0 and r.param("topp", "p", 1.0) == 1.0
    assert r.get("topp") is None and not r.sampling and r.sampling_reason.startswith("argmax")
    assert r.search.impl == "decode.compiler.search.beam"
    assert r.stages[0].impl == "decode.compiler.stages.repetition"
    default = parse("topp 0.9")
    assert default.search.name == "greedy" and default.get("greedy") is default.search
    assert default.max_new_tokens == 128 and default.seed is None and default.stop_strings == ()


def test_selection_mode_and_reason():
    assert not parse("greedy").sampling
    assert parse("sample").sampling
    assert parse("beam 4 | topp 0.9").sampling
    assert not parse("temp 0").sampling
    assert parse("temp 0").sampling_reason == "argmax, because temp 0 means argmax"
    cold = parse("topp 0.9 | temp 0")
    assert not cold.sampling
    assert cold.sampling_reason == "argmax, because temp 0 means argmax (topp 0.9 cannot change the choice)"
    assert parse("temp 0.5").sampling_reason == "sampling, because temp 0.5 samples"


def test_fingerprint_is_stable_and_names_the_decoding():
    r = parse(DESIGN_CARD)
    assert len(r.fingerprint) == 12 and int(r.fingerprint, 16) >= 0
    assert r.fingerprint == parse(fmt(r)).fingerprint
    assert r.fingerprint != parse("beam 4 | diverse groups=2 penalty=0.6 | topp 0.9 temp 0.7").fingerprint
    assert LANG_VERSION == "1"


def test_parse_accepts_a_recipe():
    r = parse("greedy")
    assert parse(r) is r and isinstance(r, Recipe)


def test_catalogue_entries_are_complete():
    for spec in CATALOGUE.values():
        assert spec.doc and spec.kind
        if spec.kind in ("search", "modifier", "logit"):
            assert spec.impl.startswith("decode.compiler.") and spec.impl.endswith("." + spec.name)
        for p in spec.positional + spec.keywords:
            assert p.doc
            assert p.default is REQUIRED or p.default_from or p.in_range(p.default) if \
                isinstance(p.default, (int, float)) and not isinstance(p.default, bool) else True


def test_language_reference_doc_is_generated_from_the_catalogue():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "language.md"
    assert doc.read_text() == reference_markdown(), \
        "docs/language.md is stale: python -c 'from decode.dsl.docs import reference_markdown as m; " \
        "open(\"docs/language.md\", \"w\").write(m())'"


def test_registered_clause_is_known_everywhere():
    from decode.dsl import ClauseSpec, Param, register
    from decode.dsl.reference import hf_reference
    from decode.dsl.catalogue import CATALOGUE

    spec = ClauseSpec("mystage", "logit", "scale the logits", positional=(Param("s", "float", 2.0, lo=0.0),),
                      impl="plugin.mystage")
    register(spec)
    try:
        r = parse("mystage | topp 0.9")
        assert r.stages[0].name == "mystage" and r.stages[0]["s"] == 2.0 and r.stages[0].impl == "plugin.mystage"
        assert fmt(r) == "greedy | mystage | topp 0.9"
        assert "no equivalent of 'mystage'" in hf_reference(r).reason
        assert "mystage [S]" in reference_markdown()
        with pytest.raises(ValueError, match="already in the catalogue"):
            register(spec)
    finally:
        CATALOGUE.pop("mystage")
    with pytest.raises(Exception, match="unknown clause 'mystage'"):
        parse("mystage")
