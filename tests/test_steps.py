"""`decode.steps` shows the search one step at a time and agrees with `generate` token for
token: every returned sequence is a path through the rows (or finished hypotheses) that the
steps show, the last step carries the same result, and what is shown hangs together
(each row extends the row it names, kept candidates become rows, penalties are reported).
"""
from __future__ import annotations

import threading

import pytest

import decode

PROMPT = "ROMEO:"
RECIPES = ["greedy | max 8", "beam 4 | max 8", "beam 4 | diverse groups=2 penalty=0.8 | max 8",
           "beam 4 lenpen=0.6 | diverse groups=2 penalty=1 kind=ngram | max 6",
           "sample 3 | topk 20 | max 6 | seed 4", "sbeam 3 | max 5 | seed 2",
           "beam 4 | siblings 0.5 | max 6", "beam 4 | iterative groups=2 | max 6"]


@pytest.fixture(scope="module")
def demo():
    return decode.load()


@pytest.mark.parametrize("recipe", RECIPES)
def test_steps_agree_with_generate_token_for_token(demo, recipe):
    steps = list(decode.steps(demo, recipe, PROMPT))
    want = decode.generate(demo, recipe, [PROMPT], compile=False)[0]
    got = steps[-1].result
    assert [(s.ids, s.text, s.finish) for s in got.sequences] == \
           [(s.ids, s.text, s.finish) for s in want.sequences]
    assert [s.score for s in got.sequences] == pytest.approx([s.score for s in want.sequences], abs=1e-5)
    assert [st.t for st in steps] == list(range(len(steps)))
    for seq in want.sequences:  # every prefix of every result was a row (or ended) at its step
        for t in range(len(seq.ids)):
            shown = [r.ids for r in steps[t].rows] + [h.ids for h in steps[t].finished]
            assert seq.ids[: t + 1] in shown, (recipe, seq.ids, t)


@pytest.mark.parametrize("recipe", RECIPES[1:3])
def test_each_row_extends_the_row_it_names_with_a_kept_candidate(demo, recipe):
    before = None
    for st in decode.steps(demo, recipe, PROMPT):
        k = int(recipe.split()[1])
        assert len(st.rows) == k
        for row in st.rows:
            if before is not None:
                parent = before.rows[row.parent]
                assert row.ids[: len(parent.ids)] == parent.ids
            if row.active:
                came = [c for c in st.candidates if c.becomes == row.index]
                assert len(came) == 1 and came[0].kept and came[0].token == row.ids[-1]
                assert came[0].score == pytest.approx(row.score)
        assert all(c.becomes is None for c in st.candidates if not c.kept)
        before = st


def test_diverse_steps_report_the_group_and_the_penalty_applied(demo):
    first = next(iter(decode.steps(demo, "beam 4 | diverse groups=2 penalty=0.8 | max 4", PROMPT)))
    g0 = [c for c in first.candidates if c.group == 0 and c.kept]
    g1 = [c for c in first.candidates if c.group == 1]
    taken = {c.token for c in g0}
    assert g1 and all(c.penalty == pytest.approx(0.8 * (c.token in taken)) for c in g1)
    hit = next(c for c in g1 if c.penalty)
    assert "group 1" in hit.why and "penalty 0.8" in hit.why


def test_a_step_prints_rows_candidates_and_why(demo):
    st = list(decode.steps(demo, "beam 2 | max 3", PROMPT))[1]
    text = str(st)
    assert text.startswith("step 1  (beam 2 | max 3)")
    assert all(repr(r.text) in text for r in st.rows)
    assert "kept as row 0" in text and "pruned" in text


def test_breaking_out_stops_the_decoding(demo):
    alive = threading.active_count()
    for st in decode.steps(demo, "beam 4 | max 200", PROMPT):
        if st.t == 1:
            break
    assert threading.active_count() == alive


def test_a_bad_recipe_or_prompt_raises_from_the_generator(demo):
    with pytest.raises(decode.RecipeError):
        next(iter(decode.steps(demo, "beam 4 | topq 0.9", PROMPT)))
    with pytest.raises(Exception, match="context"):
        next(iter(decode.steps(demo, "greedy | max 1000", PROMPT)))


def test_the_readme_shows_what_steps_prints(demo):
    """The tour's step-by-step output is the real output (it would go stale otherwise)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split("which prints, at step 1:\n\n```text\n")[1].split("```")[0].rstrip("\n")
    steps = list(decode.steps(demo, "beam 4 | diverse groups=2 penalty=1.0 | max 4", PROMPT))
    assert str(steps[1]) == shown


# -- searches of independent rows (sbeam, a user's): scores and rows as the search carries them

def test_sbeam_rows_carry_their_sequence_scores(demo):
    steps = list(decode.steps(demo, "sbeam 3 | max 5 | seed 2", "ROMEO:"))
    want = sorted(round(s.score, 4) for s in steps[-1].result.sequences)
    assert sorted(round(r.score, 4) for r in steps[-1].rows if r.score is not None) == want


def test_rows_that_never_lived_are_not_traced(demo):
    """sbeam 40 over a vocabulary where fewer than 40 first tokens survive topk: the rows
    left at -inf are no branch of the tree."""
    from decode.compiler.engine import generate

    kept = []
    generate(demo, "sbeam 40 | topk 3 | max 2 | seed 1", ["ROMEO:"], compile=False, trace=True,
             on_step=lambda t, tokens, info: kept.append(int(info["kept"].sum())))
    assert kept[0] == 3 and kept[1] <= 9
