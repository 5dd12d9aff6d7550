"""Sweeps: sets and ranges of numbers in a recipe, the grid they span, run on one compiled step."""
import json

import pytest

import decode
from decode.cli import main
from decode.dsl import RecipeError, fmt, parse
from decode.dsl.format import fmt_file
from decode.dsl.sweep import sweep
from decode.jobs.sweep import compiled_axes


def test_a_sweep_spans_the_grid_of_its_sets_and_ranges_last_axis_fastest():
    sw = decode.sweep("sample 4 | topp {0.8, 0.9, 0.95} | temp 0.6..1.0 step 0.2")
    assert [a.label for a in sw.axes] == ["topp.p", "temp.t"]
    assert [p.canonical for p in sw.points[:4]] == [
        "sample 4 | topp 0.8 | temp 0.6", "sample 4 | topp 0.8 | temp 0.8",
        "sample 4 | topp 0.8 | temp 1.0", "sample 4 | topp 0.9 | temp 0.6"]
    assert len(sw.points) == 9 and len({p.fingerprint for p in sw.points}) == 9
    assert sw.at(5) == {"topp.p": 0.9, "temp.t": 1.0}
    assert sw.points[5] == parse("sample 4 | topp 0.9 | temp 1.0")
    assert sw.canonical == "sample 4 | topp {0.8, 0.9, 0.95} | temp {0.6, 0.8, 1.0}"
    assert fmt(sw.canonical) == sw.canonical                      # fmt is stable on sweeps
    assert sweep("beam 4 lenpen=0..2 step 1").points[2].canonical == "beam 4 lenpen=2.0"
    assert sweep("topp 0.5..0.75 step 0.2").at(1) == {"topp.p": 0.7}  # 0.75 is not reached
    assert sweep("greedy | max {128, 8}").canonical == "greedy | max {128, 8}"  # a default kept


def test_fmt_write_keeps_the_sets_and_the_comments():
    text = "# my sweep\ntopp {0.9, .8}  # nucleus\nsample 2\n"
    assert fmt_file(text) == "# my sweep\nsample 2\ntopp {0.9, 0.8}  # nucleus\n"


@pytest.mark.parametrize("text, message, where", [
    ("temp {}", "an empty set {}", "{}"),
    ("temp 0.5..1 step 0", "a step of 0 never gets there", "0.5..1 step 0"),
    ("temp 1..0.5 step 0.1", "the step goes the other way", "1..0.5 step 0.1"),
    ("topp {0.5, 1.5}", "'topp' p must satisfy", "{0.5, 1.5}"),
    ("beam 4 | diverse groups={2, 3}", "groups=3 does not divide the beam width 4", "groups={2, 3}"),
    ("topk 1..101 step 1 | temp 1..100 step 1", "this sweep has 10,100 points", "1..101 step 1"),
    ("topk 1..1000000 step 1", "has 1000000 values", "1..1000000 step 1"),
])
def test_bad_sweeps_get_one_message_with_a_caret(text, message, where):
    with pytest.raises(RecipeError) as err:
        sweep(text)
    assert message in err.value.message
    assert err.value.span.slice(text) == where


def test_parse_of_a_sweep_says_it_is_one_and_how_to_run_it():
    with pytest.raises(RecipeError, match="makes this recipe a sweep") as err:
        parse("sample | topp {0.8, 0.9}")
    assert err.value.span.slice("sample | topp {0.8, 0.9}") == "{0.8, 0.9}"
    with pytest.raises(RecipeError, match="separate clauses with"):
        parse("topp 0.9, temp 0.7")                                 # a comma outside a set


def test_structural_sets_are_named_and_numeric_ones_are_not():
    assert compiled_axes(sweep("sample 2 | topk {5, 10} | topp {0.8, 0.9} | temp 0.5..1 step 0.5")) == []
    assert [a.label for a in compiled_axes(sweep("beam {2, 4} lenpen={0.5, 1} | max 8"))] == ["beam.k"]


def test_check_fmt_explain_take_sweeps(capsys):
    text = "beam {2, 4} | topp 0.5..0.9 step 0.2"
    assert main(["check", text]) == 0
    assert "ok  sweep of 6 points" in capsys.readouterr().out
    assert main(["fmt", text]) == 0
    assert capsys.readouterr().out == "beam {2, 4} | topp {0.5, 0.7, 0.9}\n"
    assert main(["explain", text]) == 0
    out = capsys.readouterr().out
    assert "sweep: 6 points over beam.k in {2, 4}, topp.p in {0.5, 0.7, 0.9}" in out
    assert "beam.k changes the compiled step: each of its values compiles once" in out
    assert main(["run", "topk 1..200 step 1 | temp 1..60 step 1", "--prompt", "x"]) == 1
    assert "confirm with --yes" in capsys.readouterr().err


def test_a_12_point_sweep_on_the_demo_model_compiles_once_and_writes_a_line_per_point(tmp_path, capsys):
    import torch._dynamo.utils as dyn

    out = tmp_path / "sweep.jsonl"
    before = dyn.counters["stats"]["unique_graphs"]
    rc = main(["run", "sample 2 | topp {0.8, 0.9, 0.95} | temp 0.6..1.2 step 0.2 | max 4", "--prompt-ids",
               "1,5,9", "--seed", "3", "--out", str(out)])
    assert rc == 0
    assert dyn.counters["stats"]["unique_graphs"] - before == 1     # 12 points, one compile
    err = capsys.readouterr().err
    assert "sweep of 12 points over topp.p (3) x temp.t (4)" in err and "1 new compiled step" in err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["point"]["index"] for x in lines] == list(range(12))
    assert lines[7]["point"] == {"index": 7, "of": 12, "values": {"topp.p": 0.9, "temp.t": 1.2}}
    assert lines[7]["recipe"] == parse("sample 2 | topp 0.9 | temp 1.2 | max 4").canonical
    point = parse(lines[7]["recipe"])  # the same point run alone gives the same text
    alone = decode.generate(decode.load(), point, [[1, 5, 9]], seeds=[decode_seed(3, 0)], compile=False)
    assert [s.ids for s in alone[0].sequences] == [s["ids"] for s in lines[7]["sequences"]]


def decode_seed(run_seed, index):
    from decode.jobs.batch import prompt_seeds, Item

    return prompt_seeds(run_seed, [Item(1, index, [1])])[0]
