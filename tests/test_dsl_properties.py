"""Property tests: parse never fails with anything but RecipeError, errors point inside
the text, and the canonical form round-trips for every valid recipe.

The default run uses 2,000 examples per property; `pytest -m slow` runs 50,000."""
import math
import random

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from decode.dsl import CATALOGUE, RecipeError, fmt, format_error, parse
from decode.dsl.spec import Param, quote

FAST = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=50_000, deadline=None, suppress_health_check=list(HealthCheck))

RECIPEISH = " \t\n|=#\"\\.-+e0123456789abgkmnprstuxyz_'"


# Recipes are built by a random.Random seeded by hypothesis: one draw per example keeps
# 2,000 examples fast; the failing text is printed with `note`.
def spell_int(rng: random.Random, v: int) -> str:
    return rng.choice([str(v), str(v) if v < 0 else "0" + str(v)])


def spell_float(rng: random.Random, v: float) -> str:
    forms = [repr(v), f"{v:.17g}"]
    if v.is_integer() and abs(v) < 1e15:
        forms.append(str(int(v)))
    if repr(v).startswith("0."):
        forms.append(repr(v)[1:])
    return rng.choice(forms)


def random_float(rng: random.Random, p: Param) -> float:
    lo = -1e6 if p.lo is None else p.lo
    hi = 1e6 if p.hi is None else p.hi
    for _ in range(100):
        v = rng.choice([lo, hi, rng.uniform(lo, hi), round(rng.uniform(lo, hi), rng.randint(0, 3)),
                        lo + 10 ** -rng.randint(1, 12), hi - 10 ** -rng.randint(1, 12)])
        if p.in_range(v):
            return v + 0.0
    return (lo + hi) / 2


def random_text(rng: random.Random) -> str:
    alphabet = rng.choice(['ab "\\\n\t|#=', "xyz 0.9", "é\u0001\x7f\n\r\t\"\\|", "é中😀"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))  # "" is refused


def random_value(rng: random.Random, p: Param) -> str:
    """One way to write a valid value for `p`."""
    if p.type == "int":
        lo = -1000 if p.lo is None else int(p.lo)
        hi = lo + 10_000 if p.hi is None else int(min(p.hi, lo + 10_000))
        return spell_int(rng, rng.choice([lo, rng.randint(lo, hi)]))
    if p.type == "float":
        return spell_float(rng, random_float(rng, p))
    if p.type == "str":
        return quote(random_text(rng))
    if p.type == "phrase":  # force: a text, ids(...) or any(...) of distinct ones
        ids = f"ids({', '.join(str(rng.randint(0, 99)) for _ in range(rng.randint(1, 3)))})"
        a = random_text(rng)
        return rng.choice([quote(a), ids, f"any({quote(a)}, {ids})", f"any({ids},{quote(a + 'x')} , {quote(a)})"])
    v = rng.choice(p.choices)
    return p.spell(v) if not isinstance(v, str) else rng.choice([v, quote(v)])


def clause_text(rng: random.Random, name: str, k: int = 1) -> str:
    spec = CATALOGUE[name]
    words = [name]
    positional = list(spec.positional)
    while positional and not positional[-1].required and rng.random() < 0.5:
        positional.pop()  # optional trailing positionals may be left out
    for p in positional:
        if name == "beam":
            words.append(str(k))
            continue
        for _ in range(rng.randint(1, 3) if p.variadic else 1):
            words.append(random_value(rng, p))
    keywords = [p for p in spec.keywords if p.required or rng.random() < 0.5]
    with_n = any(p.name == "n" for p in keywords)
    if name == "diverse" and with_n and not any(p.name == "kind" for p in keywords):
        keywords = [p for p in keywords if p.name != "n"]  # n= goes with kind=ngram only
    rng.shuffle(keywords)
    for p in keywords:
        if name == "beam" and p.name == "return":
            value = str(rng.randint(1, k))
        elif name == "diverse" and p.name == "groups":
            value = str(rng.choice([d for d in range(1, k + 1) if k % d == 0]))
        elif name == "diverse" and p.name == "kind" and with_n:
            value = "ngram"
        elif name == "watermark" and p.name == "width" and any(q.name == "scheme" for q in keywords):
            value = "1"  # selfhash takes width 1 only
        else:
            value = random_value(rng, p)
        words.append(f"{p.name}{rng.choice(['=', ' = '])}{value}")
    return " ".join(words)


def valid_recipe(rng: random.Random) -> str:
    search = rng.choice([None, "greedy", "sample", "beam", "sbeam"])
    parts = []
    forced = search == "beam" and rng.random() < 0.3
    if search == "beam":
        k = rng.randint(2 if forced else 1, 12)
        parts.append(clause_text(rng, "beam", k))
        if forced:  # constrained beam search: no sampling clause, no other beam variant
            parts.append(clause_text(rng, "force"))
        elif rng.random() < 0.5:
            parts.append(clause_text(rng, "diverse", k))
    elif search:
        parts.append(clause_text(rng, search))
    singles = [n for n, s in CATALOGUE.items() if s.kind in ("logit", "limit", "stop", "control")
               and not s.repeatable and not (forced and (s.sampling or s.name == "max"))
               and getattr(s, "constraint", None) is None]  # a random regex or file name is no constraint
    parts += [clause_text(rng, n) for n in rng.sample(singles, rng.randint(0, 5))]
    parts += [clause_text(rng, "bias") for _ in range(rng.randint(0, 2))]
    rng.shuffle(parts)
    parts = parts or ["greedy"]
    out = parts[0]
    for part in parts[1:]:
        out += rng.choice([" | ", " ", "\n", "|", "  # note | x\n", "\n| ", "\t"]) + part
    return out


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(text))
        ch = rng.choice([rng.choice(RECIPEISH), chr(rng.randint(0, 0x2FFF))])
        op = rng.choice(["insert", "delete", "replace"])
        if op == "insert":
            text = text[:i] + ch + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1:]
        else:
            text = text[:i] + ch + text[i + 1:]
    return text


seeds = st.integers(0, 2**63)
valid_recipes = seeds.map(lambda s: valid_recipe(random.Random(s)))
mutated_recipes = seeds.map(lambda s: mutate(random.Random(s), valid_recipe(random.Random(s))))
any_text = st.text(alphabet=st.sampled_from(RECIPEISH), max_size=40) | st.text(max_size=30)


def check_any(text: str) -> None:
    """Only RecipeError escapes; its span lies inside the text; valid ones round-trip."""
    note(repr(text))
    try:
        r = parse(text)
    except RecipeError as err:
        assert 0 <= err.span.start <= err.span.end <= len(text), (text, err.span)
        assert err.message
        format_error(text, err)
        return
    check_round_trip(text, r)


def check_round_trip(text, r) -> None:
    note(repr(text))
    canonical = fmt(r)  # a Recipe is not parsed again
    again = parse(canonical)
    assert again == r and hash(again) == hash(r)  # parse(fmt(r)) == parse(r)
    assert fmt(again) == canonical  # fmt(fmt(x)) == fmt(x)
    assert again.fingerprint == r.fingerprint
    assert "\n" not in canonical
    for c in r.clauses:
        for _, v in c.params:
            assert not (isinstance(v, float) and not math.isfinite(v))


@FAST
@given(valid_recipes)
def test_valid_recipes_round_trip(text):
    check_round_trip(text, parse(text))


@FAST
@given(mutated_recipes | any_text)
def test_any_text_raises_only_recipe_error_inside_the_text(text):
    check_any(text)


@pytest.mark.slow
@SLOW
@given(valid_recipes)
def test_valid_recipes_round_trip_long(text):
    check_round_trip(text, parse(text))


@pytest.mark.slow
@SLOW
@given(mutated_recipes | any_text)
def test_any_text_raises_only_recipe_error_long(text):
    check_any(text)
