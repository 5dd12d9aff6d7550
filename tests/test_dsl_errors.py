"""Every kind of mistake: the message, the span it points at, and the "did you mean"."""
import pytest

from decode.dsl import RecipeError, format_error, parse

# (kind, text, message, (start, end), suggestion)
MISTAKES = [
    ("unknown clause", "beam 4 | topq 0.9", "unknown clause 'topq'", (9, 13), "topp"),
    ("unknown clause, other library's name", "temperature 0.7", "unknown clause 'temperature'",
     (0, 11), "temp"),
    ("unknown key", "beam 4 lenpn=0.6",
     "unknown key 'lenpn': 'beam' takes lenpen=, early=, return=", (7, 12), "lenpen"),
    ("key on a clause without keys", "temp abc=1",
     "unknown key 'abc': 'temp' takes no key=value arguments", (5, 8), None),
    ("positional given as a key", "topp p=0.9", "'p' of 'topp' is positional: write 'topp 0.9'",
     (5, 10), "topp 0.9"),
    ("wrong type: float for int", "beam 4.5",
     "wrong type: 'beam' k must be a whole number, found 4.5", (5, 8), None),
    ("wrong type: whole float for int", "beam 4.0",
     "wrong type: 'beam' k must be a whole number, found 4.0", (5, 8), "4"),
    ("wrong type: name for number", "beam 4 lenpen=fast",
     "wrong type: 'beam' lenpen must be a number, found fast", (7, 18), None),
    ("wrong type: string for number", 'temp "hot"',
     "wrong type: 'temp' t must be a number, found \"hot\"", (5, 10), None),
    ("wrong enum value", "beam 4 early=nevr",
     "wrong value: 'beam' early must be one of false, true, never; found nevr", (7, 17), "never"),
    ("out of range (open bound)", "topp 1.5",
     "out of range: 'topp' p must satisfy 1e-20 <= p <= 1, found 1.5", (5, 8), None),
    ("out of range (int)", "max 0", "out of range: 'max' n must satisfy 1 <= n, found 0", (4, 5), None),
    ("missing argument", "beam",
     "missing argument: 'beam' needs K (beam width); write 'beam K [lenpen=1.0] [early=false] "
     "[return=K]'", (0, 4), None),
    ("missing string: bare word", "ban foo",
     "missing argument: 'ban' needs a \"string\"; a bare word starts a new clause, so write "
     "ban \"foo\"", (0, 7), 'ban "foo"'),
    ("too many positionals", "topp 0.9 0.8",
     "too many positional values: 'topp' takes 1 (topp P [keep=1])", (9, 12), None),
    ("positional on a clause without any", "greedy 3", "'greedy' takes no positional values",
     (7, 8), None),
    ("duplicate key", "beam 4 lenpen=1 lenpen=2", "duplicate key 'lenpen' in 'beam'", (16, 24), None),
    ("two search clauses", "beam 4 | sample 2",
     "two search clauses, 'beam 4' and 'sample 2': a recipe has exactly one", (9, 17), None),
    ("duplicate clause", "topp 0.9 | topp 0.8",
     "duplicate 'topp': it may appear only once (already written as 'topp 0.9')", (11, 19), None),
    ("diverse without beam", "diverse groups=2",
     "'diverse' needs a 'beam K' search, found greedy (the default)", (0, 16), "beam 4"),
    ("diverse with sbeam", "sbeam 4 | diverse groups=2 penalty=1",
     "'diverse' needs a 'beam K' search, found sbeam 4", (10, 36), "beam 4"),
    ("groups not dividing K", "beam 4 | diverse groups=3",
     "groups=3 does not divide the beam width 4: use one of 1, 2, 4", (17, 25), None),
    ("return more than K", "beam 4 return=5",
     "return=5 is more than the beam width 4: a beam search returns at most K sequences", (7, 15),
     "return=4"),
    ("unterminated string", 'stop "abc',
     "unterminated string: close it with '\"' on the same line (write a newline inside a string "
     "as \\n)", (5, 9), None),
    ("bad escape", r'stop "a\qb"',
     "bad escape '\\q' in a string: use \\n, \\t, \\r, \\\\, \\\" or \\uXXXX", (7, 9), None),
    ("unexpected character", "topp 0.9 % 3",
     "unexpected character '%': a recipe holds clause names, numbers, \"strings\", key=value, '|' "
     "and # comments", (9, 10), None),
    ("comma as separator", "beam 4,topp 0.9",
     "unexpected character ',': separate clauses with '|' or a space", (6, 7), "|"),
    ("single quotes", "topp 'x'", "unexpected character \"'\": strings use double quotes", (5, 6), None),
    ("malformed number", "topp 0.9.1",
     "malformed number '0.9.1': write numbers like 4, -1, 0.9, .5 or 1e-3", (5, 10), None),
    ("number too large", "temp 1e999", "number 1e999 is too large", (5, 10), None),
    ("leading separator", "| beam 4", "a recipe cannot start with '|': write a clause name first",
     (0, 1), None),
    ("double separator", "beam 4 | | topp 0.9", "expected a clause name after '|', found '|'",
     (9, 10), None),
    ("trailing separator", "beam 4 |",
     "expected a clause name after '|', found the end of the recipe", (8, 8), None),
    ("positional after keyword", "beam 4 lenpen=0.6 2",
     "positional value 2 after a key=value argument: write positional values first", (18, 19), None),
    ("missing value", "beam 4 lenpen=", "missing value after 'lenpen='", (14, 14), None),
    ("stray equals", "beam 4 =3",
     "'=' must follow a key inside a clause, as in 'beam 4 lenpen=0.6'", (7, 8), None),
    ("number where a clause belongs", "4 beam", "expected a clause name, found number 4", (0, 1), None),
    ("cpsbs under temp 0", "cpsbs 3 | temp 0",
     "'cpsbs 3' draws its sequences at random, and 'temp 0.0' makes every choice argmax: "
     "drop 'temp 0.0' (or use 'beam 3' for the likeliest sequences)", (0, 7), None),
    ("arith under an argmax dynatemp", "arith 2 | dynatemp 0 range=0",
     "'arith 2' draws its sequences at random, and 'dynatemp 0.0 range=0.0' makes every choice argmax: "
     "drop 'dynatemp 0.0 range=0.0' (or use 'greedy' for the likeliest sequence)", (0, 7), None),
    ("lookup with dola", "greedy | lookup | dola layers=low",
     "'lookup' verifies drafts against the final layer's logits, and 'dola layers=low' changes how "
     "a token is chosen; use one of them", (9, 15), None),
    ("dola before draft", "dola 0 2 | draft k=2",
     "'draft k=2' verifies drafts against the final layer's logits, and 'dola 0 2' changes how "
     "a token is chosen; use one of them", (11, 20), None),
    ("empty recipe", "  # only a comment\n",
     "empty recipe: write at least one clause, e.g. 'greedy' or 'beam 4'", (0, 19), "greedy"),
]


@pytest.mark.parametrize("kind,text,message,span,suggestion", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_reported_with_span_and_suggestion(kind, text, message, span, suggestion):
    with pytest.raises(RecipeError) as info:
        parse(text)
    err = info.value
    assert err.message == message
    assert (err.span.start, err.span.end) == span
    assert err.suggestion == suggestion
    assert err.text == text


def test_at_least_fifteen_kinds_of_mistake_are_pinned():
    assert len({m[0] for m in MISTAKES}) >= 15


def test_recipe_error_is_a_value_error():
    assert issubclass(RecipeError, ValueError)


def test_format_error_draws_a_caret_under_the_span():
    text = "beam 4\n| topq 0.9"
    with pytest.raises(RecipeError) as info:
        parse(text)
    assert format_error(text, info.value) == (
        "error: unknown clause 'topq'\n"
        "  2 | | topq 0.9\n"
        "    |   ^^^^\n"
        "  did you mean 'topp'?")


def test_format_error_marks_the_end_of_the_text():
    with pytest.raises(RecipeError) as info:
        parse("beam 4 |")
    assert format_error("beam 4 |", info.value, source="x.dec").splitlines() == [
        "x.dec:1:9: error: expected a clause name after '|', found the end of the recipe",
        "  1 | beam 4 |",
        "    |         ^"]


def test_temp_zero_with_sampling_stages_warns_and_explains():
    r = parse("topp 0.9 | temp 0")
    (w,) = r.warnings
    assert w.message == ("temp 0 means argmax: it leaves only the most likely token, so 'topp 0.9' "
                         "cannot change which token is chosen; drop temp 0 or use temp > 0")
    assert (w.span.start, w.span.end) == (11, 17)
    assert parse("temp 0").warnings == () and parse("temp 0.7 | topp 0.9").warnings == ()


def test_diverse_without_penalty_warns():
    (w,) = parse("beam 4 | diverse groups=2").warnings
    assert "penalty=0" in w.message


def test_warnings_do_not_change_equality():
    assert parse("temp 0 | topp 0.9") == parse("greedy | temp 0.0 | topp 0.9")
