"""No silent garbage (issue 15, items 8 and 9): numbers that overflow float32 are refused by
`check` with a caret at the value; a step whose scores leave nothing to choose stops with the
step, the prompt and the clause (or the model) to blame; beam searches never return their
filler beams; NaN and Infinity are never written as JSON."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import decode
from decode.cli import main
from decode import jsonl
from test_cli_run import make_tiny_model

pytestmark = pytest.mark.usefixtures("restore_catalogue")  # plugins register clauses


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sp_tokenizer_dir):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), sp_tokenizer_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    return decode.load(str(model_dir))


def run(capsys, *argv):
    code = main(["run", *argv, "--no-compile"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


# -- check: the value itself cannot work ---------------------------------------------------

OVERFLOWING = [  # (recipe, the value the caret must point at)
    ("temp 1e-45", "1e-45"),
    ("topp 1e-320", "1e-320"),
    ("frequency -1e38", "-1e38"),
    ("repetition 1e-38", "1e-38"),
    ('bias "the" 1e300', "1e300"),
    ("sbeam 4 | temp 1e-45", "1e-45"),
    ("beam 4 | temp 1e-45", "1e-45"),
    ("beam 4 | siblings 1e38", "1e38"),
    ("beam 4 lenpen=-1e38", "lenpen=-1e38"),
]


@pytest.mark.parametrize("recipe, value", OVERFLOWING)
def test_check_refuses_a_value_that_overflows_float32_with_a_caret_at_it(recipe, value, capsys):
    assert main(["check", recipe]) == 1
    err = capsys.readouterr().err
    assert "out of range" in err and "float32" in err
    source, carets = err.splitlines()[1:3]
    start = source.index(recipe) + recipe.index(value)
    assert carets.index("^") == start and carets.count("^") == len(value)


@pytest.mark.parametrize("recipe, value", OVERFLOWING)
def test_run_refuses_it_and_writes_nothing(recipe, value, model_dir, capsys):
    code, out, err = run(capsys, recipe + " | max 4", "--model", str(model_dir), "--prompt", "ROMEO:", "--json")
    assert code == 1 and out == "" and "out of range" in err


def test_temp_zero_still_means_argmax_and_the_limits_themselves_are_allowed():
    assert decode.parse("temp 0").stages[0]["t"] == 0.0
    assert decode.parse("temp 1e-20 | repetition 1e20 | bias \"a\" -1e20 | beam 2 lenpen=4")


# -- the step: a row with nothing left to choose ---------------------------------------------

def nan_stage(at_step: int = 0, row: int | None = None):
    """A user stage that makes the scores NaN at one step (for one row, or all)."""
    @decode.stage("nanify", doc="make the scores NaN")
    def nanify(logits, ctx):
        rows = torch.arange(logits.shape[0], device=logits.device)
        mine = rows == row if row is not None else torch.ones_like(rows, dtype=torch.bool)
        return torch.where((mine & (ctx.new_len == at_step))[:, None], float("nan"), logits)

    return nanify


def test_a_plugin_returning_nan_stops_with_the_step_the_prompt_and_its_clause(model):
    nan_stage(at_step=3, row=3)  # beam 2: row 3 is prompt 1's second beam
    seen = []
    with pytest.raises(ValueError) as info:
        decode.generate(model, "beam 2 | nanify | max 8", ["ROMEO:", "JULIET:"], compile=False,
                        on_step=lambda t, tokens, info: seen.append(t))
    msg = str(info.value)
    assert msg.startswith("step 3, prompt 1: every token was removed by 'nanify'")
    assert "test_nonfinite.py" in msg and "NaN" in msg
    assert seen == [0, 1, 2], "a broken step was handed on before the error"


def test_the_error_names_the_first_clause_that_broke_the_row(model_dir, capsys):
    # each value is in range; together they overflow: temp makes the logits ~1e21, and
    # repetition divides the prompt's tokens' by 1e-20 again
    code, out, err = run(capsys, "sample 2 | temp 1e-20 | repetition 1e-20 | topk 5 | max 4",
                         "--model", str(model_dir), "--prompt", "ROMEO:", "--json")
    assert code == 1 and out == ""
    assert "step 0, prompt 0: every token was removed by 'repetition 1e-20'" in err


def test_a_stage_that_removes_every_token_is_named(model_dir, capsys, tmp_path):
    plugin = tmp_path / "void.py"
    plugin.write_text("import decode, torch\n\n"
                      "@decode.stage('void', doc='remove every token')\n"
                      "def void(logits, ctx):\n"
                      "    return torch.full_like(logits, float('-inf'))\n")
    code, out, err = run(capsys, "sbeam 4 | void | max 4", "--stage", str(plugin), "--model", str(model_dir),
                         "--prompt", "ROMEO:", "--json")
    assert code == 1 and out == ""
    assert "step 0, prompt 0: every token was removed by 'void'" in err and "all -inf" in err


def test_nan_weights_are_blamed_on_the_checkpoint(model_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan"
    shutil.copytree(model_dir, bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    code, out, err = run(capsys, "greedy | max 4", "--model", str(bad), "--prompt", "ROMEO:", "--json")
    assert code == 1 and out == ""
    assert "the model's logits are NaN or infinite at step 0, prompt 0" in err
    assert "weights contain NaN/Inf" in err and "layers.1" in err


# -- beam searches: real sequences or an error ------------------------------------------------

def test_a_cold_beam_search_returns_real_sequences_not_its_filler(model):
    # temp 1e-20 scales the log-probs far below the reference's -1e9 filler score
    out = decode.generate(model, "beam 4 | temp 1e-20 | max 6", ["ROMEO:"], compile=False)[0]
    assert len(out.sequences) == 4
    for s in out.sequences:
        assert s.ids and s.score > -float("inf") and s.score != -1e9
    assert len({tuple(s.ids) for s in out.sequences}) == 4


def test_huge_sibling_penalties_still_pick_real_siblings(model):
    """Every token a beam search keeps is among the 2K most likely continuations of its
    prefix: with 1e20 per rank the log-probs round away in the scores, and siblings tied
    there used to be picked by token id (the id-0 token, again and again)."""
    k = 4
    out = decode.generate(model, f"beam {k} | siblings 1e20 | max 6", ["ROMEO:"], compile=False)[0]
    assert len(out.sequences) == k
    for s in out.sequences:
        ids = out.prompt_ids + s.ids
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0]
        for pos, tok in enumerate(s.ids):
            top = torch.topk(logits[len(out.prompt_ids) + pos - 1], 2 * k).indices.tolist()
            assert tok in top, f"{s.ids}: token {tok} at {pos} is not a likely sibling"


def test_scores_are_finite_for_extreme_lenpen(model):
    out = decode.generate(model, "beam 4 lenpen=-4 | max 6", ["ROMEO:"], compile=False)[0]
    assert len(out.sequences) == 4 and all(s.ids and abs(s.score) < float("inf") for s in out.sequences)


# -- JSON --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_the_json_writer_refuses_nan_and_infinity(bad):
    with pytest.raises(ValueError):
        jsonl.dumps({"score": bad})
    assert json.loads(jsonl.dumps({"score": -1e9})) == {"score": -1e9}


@pytest.mark.parametrize("result, problem", [([], "found no sequence"),
                                             ([([5], float("nan"), "max")], "gave sequence 0 the score nan")])
def test_a_search_that_returns_nothing_or_a_nan_score_is_an_error(model, result, problem):
    from decode.compiler.search.greedy import Greedy

    @decode.search("broken", doc="greedy, but its results are broken")
    class Broken(Greedy):
        def finalize(self, state, seq, lim):
            return [list(result) for _ in range(self.cfg.batch)]

    with pytest.raises(ValueError, match=f"prompt 0: 'broken' {problem}"):
        decode.generate(model, "broken | max 3", ["ROMEO:"], compile=False)
