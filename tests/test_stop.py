"""Stop strings: a greedy or sampled row, or a sampled set's (sbeam, cpsbs), ends at the token
that completes one (its score is the kept tokens'); a beam search searches on and its cut
hypotheses come back distinct."""
import math

import pytest

import decode


@pytest.fixture(scope="module")
def demo():
    return decode.load()


@pytest.mark.parametrize("recipe,strings", [('greedy | stop "am" | max 12', ["am"]),
                                            ('sample 3 | stop "," " the" | max 12', [",", " the"]),
                                            ('sbeam 4 | stop "\\n" "," | max 12', ["\n", ","]),
                                            ('cpsbs 4 | stop "\\n" "," | max 12', ["\n", ","])])
def test_a_row_ends_at_its_stop_string_and_scores_only_what_it_kept(demo, recipe, strings):
    out = decode.generate(demo, recipe, ["ROMEO:", "JULIET:"], seed=4, compile=False, logprobs=1)
    stopped = [s for c in out for s in c.sequences if s.finish == "stop"]
    assert stopped  # the prompts were chosen so that some rows stop
    for s in stopped:  # the last kept token completes the first stop string
        assert any(x in s.text for x in strings)
        assert not any(x in demo.tokenizer.decode(s.ids[:-1]) for x in strings)
        assert math.isclose(s.score, sum(t.processed for t in s.logprobs), rel_tol=1e-5, abs_tol=1e-4)
    if recipe.startswith(("sbeam", "cpsbs")):  # a set drawn without replacement: no two alike
        for c in out:
            assert len({tuple(s.ids) for s in c.sequences}) == len(c.sequences)


def test_beams_cut_at_a_stop_string_come_back_distinct(demo):
    out = decode.generate(demo, 'beam 3 | stop "," | max 8', ["ROMEO:"], compile=False)
    ids = [tuple(s.ids) for s in out[0].sequences]
    assert len(ids) == len(set(ids)) >= 1
    assert [s.score for s in out[0].sequences] == sorted((s.score for s in out[0].sequences), reverse=True)
