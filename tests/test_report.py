"""The sweep report's numbers, read from results files, and its bad input."""
import json

import pytest

from decode.cli import main
from decode.report.metrics import Point, distinct, points, repetition


def test_distinct_and_repetition_count_as_their_papers_define():
    assert distinct([[1, 2, 1, 2]], 1) == 0.5 and distinct([[1, 2, 1, 2]], 2) == 2 / 3
    assert distinct([[1, 2], [1, 2]], 2) == 0.5                  # pooled over a point's sequences
    assert distinct([[1]], 2) is None
    assert repetition([[1, 2, 3, 4, 1, 2, 3, 4]]) == 1 - 4 / 5   # 4-grams: 1234 2341 3412 4123 1234
    assert repetition([[1, 2, 3, 4, 5], [1, 2]]) == 0.0           # a sequence without a 4-gram is left out
    assert repetition([[1]]) is None
    p = Point(0, "greedy", {}, seqs=[[1, 2]], logp_sum=-4.0, logp_tokens=2)
    assert p.mean_logp == -2.0 and abs(p.perplexity - 7.389056) < 1e-5
    assert Point(0, "greedy", {}, logp_sum=-2000.0, logp_tokens=1).perplexity is None  # never inf


def test_the_report_scores_texts_as_the_run_did(tmp_path, capsys):
    """With no logit stages a sample's score is the sum of its tokens' log-probs under the
    model: the report's mean log-prob, computed by a full forward, equals it."""
    out = tmp_path / "r.jsonl"
    assert main(["run", "sample 3 | max 8", "--prompt", "ROMEO:", "--seed", "2", "--no-compile",
                 "--out", str(out)]) == 0
    line = json.loads(out.read_text())
    import decode
    from decode.report.score import score

    found = points([line])
    score(found, decode.load())
    run = sum(s["score"] for s in line["sequences"]) / sum(len(s["ids"]) for s in line["sequences"])
    assert found[0].mean_logp == pytest.approx(run, abs=1e-4)
    assert found[0].values == {} and found[0].recipe == "sample 3 | max 8"
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "sample 3 | max 8" in capsys.readouterr().out   # no sweep: a point is its recipe


def test_bad_results_files_and_pages_get_one_message(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{"x": 2}\n')
    assert main(["report", str(bad)]) == 1
    assert f"{bad}:1: not a result line (no 'recipe')" in capsys.readouterr().err
    bad.write_text("not json\n\n")
    assert main(["report", str(bad)]) == 1
    assert f"{bad}:1: not a JSON line" in capsys.readouterr().err
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    assert main(["report", str(bad), "--html", str(mine)]) == 2
    assert "is left as it is" in capsys.readouterr().err and mine.read_text() == "<html>my notes</html>"
