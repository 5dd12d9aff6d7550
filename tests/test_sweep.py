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
    out = capsys.readouterr().out
    assert "ok  sweep of 6 points" in out and "beam.k changes the compiled step: each of its 2 values" in out
    assert main(["fmt", text]) == 0
    assert capsys.readouterr().out == "beam {2, 4} | topp {0.5, 0.7, 0.9}\n"
    assert main(["explain", text]) == 0
    out = capsys.readouterr().out
    assert "sweep: 6 points over beam.k in {2, 4}, topp.p in {0.5, 0.7, 0.9}" in out
    assert "beam.k changes the compiled step: each of its values compiles once" in out
    assert main(["run", "topk 1..200 step 1 | temp 1..60 step 1", "--prompt", "x"]) == 1
    assert "confirm with --yes" in capsys.readouterr().err


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 12-point sweep on the demo model, compiled: (its results file, graphs compiled, stderr)."""
    import contextlib
    import io

    import torch._dynamo.utils as dyn

    out = tmp_path_factory.mktemp("sweep") / "sweep.jsonl"
    before = dyn.counters["stats"]["unique_graphs"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["run", "sample 2 | topp {0.8, 0.9, 0.95} | temp 0.6..1.2 step 0.2 | max 6",
                   "--prompt-ids", "1,5,9", "--seed", "3", "--out", str(out)])
    assert rc == 0
    return out, dyn.counters["stats"]["unique_graphs"] - before, err.getvalue()


def test_a_12_point_sweep_on_the_demo_model_compiles_once_and_writes_a_line_per_point(swept):
    out, graphs, err = swept
    assert 1 <= graphs <= 2  # 12 points, one selection compiled (and the model's forward, unless an earlier test did)
    assert "sweep of 12 points over topp.p (3) x temp.t (4)" in err and "1 new compiled step" in err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["point"]["index"] for x in lines] == list(range(12))
    assert {k: v for k, v in lines[7]["point"].items() if k != "seconds"} == {
        "index": 7, "of": 12, "values": {"topp.p": 0.9, "temp.t": 1.2}}
    assert all(x["point"]["seconds"] > 0 for x in lines)
    assert lines[7]["recipe"] == parse("sample 2 | topp 0.9 | temp 1.2 | max 6").canonical
    point = parse(lines[7]["recipe"])  # the same point run alone gives the same text
    alone = decode.generate(decode.load(), point, [[1, 5, 9]], seeds=[decode_seed(3, 0)], compile=False)
    assert [s.ids for s in alone[0].sequences] == [s["ids"] for s in lines[7]["sequences"]]


def test_the_sweeps_report_opens_in_headless_chromium_with_its_chart_and_table(swept, tmp_path, capsys):
    import shutil
    import subprocess

    out, _, _ = swept
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--html", str(page)]) == 0
    table = capsys.readouterr().out
    assert "topp.p" in table and "dist-2" in table and "ppl" in table
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the report test needs Chromium (apt-get install chromium; .ci/run installs it)"
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,900"]
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120, cwd=tmp_path)
    assert png_colours(shot.read_bytes()) > 8                     # drawn, not a blank page
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path).stdout
    assert dom.count('class="dot"') == 12 and dom.count("<tr>") == 13  # a dot and a row per point


def png_colours(data: bytes) -> int:
    """How many distinct byte values the image's pixel data holds (a blank page: very few)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    return len(set(zlib.decompress(idat)))


def decode_seed(run_seed, index):
    from decode.jobs.batch import prompt_seeds, Item

    return prompt_seeds(run_seed, [Item(1, index, [1])])[0]


def test_a_prompts_sweep_resumes_into_its_out_file_and_refuses_another_recipes(tmp_path, capsys):
    prompts, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    prompts.write_text('{"id": 1, "prompt": "ROMEO:"}\n{"id": "b", "prompt": "JULIET:"}\n')
    run = ["run", "sample 2 | temp {0.5, 1} | max 2", "--prompts", str(prompts), "--out", str(out), "--no-compile"]
    assert main(run) == 0
    first = out.read_text()
    assert len(first.splitlines()) == 4
    with open(out, "a") as f:
        f.write(first.splitlines()[0][:40])  # what a crash leaves of a line
    assert main(run) == 0  # nothing left to decode: the torn line is cut, nothing appended
    assert out.read_text() == first and "already holds 4 of the 4 lines" in capsys.readouterr().err
    assert main([*run[:1], "sample 2 | temp {0.5, 1, 1.5} | max 2", *run[2:]]) == 0  # a point more
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and {x["point"]["values"]["temp.t"] for x in lines[4:]} == {1.5}
    assert main([*run[:1], "greedy | max 2", *run[2:]]) == 1
    assert "not of a point of this sweep" not in capsys.readouterr().err  # a plain recipe: batch's message
    assert main([*run[:1], "sample 2 | temp {0.7, 1} | max 2", *run[2:]]) == 1
    assert "not of a point of this sweep" in capsys.readouterr().err and len(out.read_text().splitlines()) == 6


def test_max_over_a_swept_max_is_refused(capsys):
    assert main(["run", "sample 2 | max {2, 3}", "--prompt", "x", "--max", "4", "--no-compile"]) == 2
    assert "--max 4 would replace every value the recipe sweeps in 'max.n'" in capsys.readouterr().err
