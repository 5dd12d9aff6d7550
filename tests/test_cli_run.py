"""`decode run` on one prompt: streaming, the table, --json exactly as the README's JSON
contract, --out, and a plain one-paragraph error (never a traceback) for every user mistake."""
import json
import shutil
from pathlib import Path

import pytest

from decode.cli import main

JSON_KEYS = ["prompt", "prompt_ids", "recipe", "fingerprint", "sequences", "provenance"]  # provenance: added last
SEQ_KEYS = ["ids", "text", "score", "finish"]


def make_tiny_model(folder: Path, tokenizer_dir: Path) -> Path:
    """A random 2-layer llama (context 128) with the test tokenizer beside it. EOS is the
    newline piece, which this random model likes, so beams do finish mid-run."""
    import sentencepiece as spm

    from llama_factory import make_hf_llama

    sp = spm.SentencePieceProcessor()
    sp.Load(str(tokenizer_dir / "tokenizer.model"))
    d = make_hf_llama(folder, vocab=sp.GetPieceSize(), max_pos=128, eos_id=sp.PieceToId("\n"))
    shutil.copy(tokenizer_dir / "tokenizer.model", d / "tokenizer.model")
    return d


@pytest.fixture(scope="module")
def model(tmp_path_factory, sp_tokenizer_dir):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), sp_tokenizer_dir))


def run(capsys, *argv):
    code = main(["run", *argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def test_greedy_streams_the_text_after_the_prompt(model, capsys):
    argv = ("greedy | max 12", "--model", model, "--prompt", "ROMEO:", "--no-compile")
    code, out, _ = run(capsys, *argv)
    seq = json.loads(run(capsys, *argv, "--json")[1])["sequences"][0]
    assert code == 0 and seq["text"].strip()
    streamed = seq["text"][:-1] if seq["finish"] == "eos" else seq["text"]  # EOS is not printed
    assert out.startswith("ROMEO:" + streamed + "\n")
    assert f"finish={seq['finish']}" in out and "fingerprint=" in out


def test_beam_prints_a_ranked_table(model, capsys):
    code, out, _ = run(capsys, "beam 3 | max 6", "--model", model, "--prompt", "ROMEO:", "--no-compile")
    assert code == 0
    assert "rank" in out and "score" in out and "finish" in out and "beam 3 | max 6" in out
    for rank in ("1", "2", "3"):
        assert any(line.split("│")[1].strip() == rank for line in out.splitlines() if line.count("│") >= 4)


@pytest.mark.parametrize("recipe,returns", [("greedy", 1), ("sample 3", 3), ("beam 4", 4), ("beam 4 return=1", 1),
                                            ("sbeam 2", 2), ("beam 4 return=2 | diverse groups=2 penalty=0.5", 2)])
def test_rows_per_prompt_are_what_the_search_returns(recipe, returns):
    from decode.compiler.plan import compile as lower, returns_per_prompt

    assert returns_per_prompt(lower(recipe)) == returns


def test_rows_per_prompt_of_a_user_search_come_from_it_not_its_parameter_names(restore_catalogue):
    import decode
    from decode.compiler.plan import compile as lower, returns_per_prompt
    from decode.dsl import ClauseSpec, Param, register

    class BestOf(decode.Search):
        """Searches with K rows and returns the best one (only built here, never run)."""

        returns = 1
        step = None

        def __init__(self, cfg):
            super().__init__(cfg)
            self.rows = cfg.params["k"]

    register(ClauseSpec("bestof", "search", "best of K", positional=(Param("k", "int", lo=1),), impl=BestOf))
    assert returns_per_prompt(lower("bestof 4")) == 1  # a single sequence: `decode run` streams it


def test_json_is_one_object_per_prompt_with_the_design_keys_in_order(model, capsys):
    code, out, _ = run(capsys, "beam 2 | max 5", "--model", model, "--prompt", "ROMEO:", "--json",
                       "--no-compile")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert list(obj) == JSON_KEYS
    assert obj["prompt"] == "ROMEO:" and obj["recipe"] == "beam 2 | max 5"
    assert len(obj["sequences"]) == 2
    for s in obj["sequences"]:
        assert list(s) == SEQ_KEYS and s["finish"] in ("eos", "max", "stop")
        assert all(isinstance(i, int) for i in s["ids"]) and 1 <= len(s["ids"]) <= 5
    assert obj["sequences"][0]["score"] >= obj["sequences"][1]["score"]


def test_json_is_stable_across_runs(model, capsys):
    argv = ("greedy | max 6", "--model", model, "--prompt-ids", "1,5,9", "--json", "--no-compile")
    _, a, _ = run(capsys, *argv)
    _, b, _ = run(capsys, *argv)
    assert a == b and json.loads(a)["prompt"] is None and json.loads(a)["prompt_ids"] == [1, 5, 9]


def test_seeded_sampling_repeats(model, capsys):
    argv = ("sample 2 | temp 1.5 | max 6", "--model", model, "--prompt", "To be", "--json",
            "--seed", "7", "--no-compile")
    assert run(capsys, *argv)[1] == run(capsys, *argv)[1]


def test_out_appends_json_lines_while_the_table_still_shows(model, capsys, tmp_path):
    out = tmp_path / "o.jsonl"
    for _ in range(2):
        code, shown, _ = run(capsys, "beam 2 | max 4", "--model", model, "--prompt", "ROMEO:",
                             "--out", str(out), "--no-compile")
        assert code == 0 and "rank" in shown
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and list(json.loads(lines[0])) == JSON_KEYS


def test_compiled_run_equals_the_eager_run(model, capsys):
    argv = ("beam 2 | max 6", "--model", model, "--prompt", "ROMEO:", "--json")
    compiled = json.loads(run(capsys, *argv)[1])
    eager = json.loads(run(capsys, *argv, "--no-compile")[1])
    assert [s["ids"] for s in compiled["sequences"]] == [s["ids"] for s in eager["sequences"]]
    for a, b in zip(compiled["sequences"], eager["sequences"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


# -- user mistakes: one paragraph on stderr, an exit code, no traceback ---------------

@pytest.mark.parametrize("argv, code, words", [
    (["greedy"], 2, "give exactly one of --prompt"),
    (["greedy", "--prompt", "a", "--prompt-ids", "1"], 2, "got --prompt and --prompt-ids"),
    (["greedy", "--prompt-ids", "1,x"], 2, "comma-separated non-negative integers"),
    (["greedy", "--prompt", ""], 2, "--prompt is empty"),
    (["greedy", "--prompts", "p.jsonl", "--trace", "t.jsonl"], 2, "--trace records a single run"),
    (["greedy", "--prompts", "p.jsonl", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    (["no/such/recipe.dec", "--prompt", "a"], 1, "no such recipe file 'no/such/recipe.dec'"),
    (["topq 0.9", "--prompt", "a"], 1, "did you mean 'topp'"),
])
def test_usage_mistakes(argv, code, words, capsys):
    got, _, err = run(capsys, *argv)
    assert got == code and words in err


def test_bad_model_path_is_a_clean_error(capsys, tmp_path):
    code, _, err = run(capsys, "greedy", "--model", str(tmp_path / "nope"), "--prompt", "a")
    assert code == 1 and "does not exist" in err


def test_prompt_longer_than_the_context_is_a_clean_error(model, capsys):
    ids = ",".join(["5"] * 126)
    code, _, err = run(capsys, "greedy | max 8", "--model", model, "--prompt-ids", ids, "--no-compile")
    assert code == 1 and "context is 128" in err


def test_token_id_outside_the_vocabulary_is_a_clean_error(model, capsys):
    code, _, err = run(capsys, "greedy", "--model", model, "--prompt-ids", "1,99999", "--no-compile")
    assert code == 1 and "outside the model's vocabulary" in err


def test_unusable_device_is_a_clean_error(model, capsys):
    code, _, err = run(capsys, "greedy", "--model", model, "--prompt", "a", "--device", "floppy")
    assert code == 2 and "is not a device" in err


def test_unwritable_out_is_a_clean_error(model, capsys, tmp_path):
    code, _, err = run(capsys, "greedy", "--model", model, "--prompt", "a", "--out", str(tmp_path))
    assert code == 1 and "decode:" in err


def test_ctrl_c_during_a_run_exits_130_without_a_traceback(model, capsys, monkeypatch):
    import decode

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(decode, "generate", interrupted)
    code, _, err = run(capsys, "greedy", "--model", model, "--prompt", "a", "--no-compile")
    assert code == 130 and "interrupted" in err


@pytest.mark.parametrize("flag", ["--out", "--trace"])
def test_a_single_run_leaves_a_file_that_is_not_its_own_untouched(model, capsys, tmp_path, flag):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\nlast line without newline")
    code, _, err = run(capsys, "greedy | max 2", "--model", model, "--prompt-ids", "1,2",
                       "--no-compile", flag, str(notes))
    assert code == 1 and str(notes) in err and "left as it is" in err
    assert notes.read_bytes() == b"my notes\nlast line without newline"


def test_a_single_run_refuses_an_out_that_is_not_a_regular_file(model, capsys):
    code, _, err = run(capsys, "greedy | max 2", "--model", model, "--prompt-ids", "1,2",
                       "--no-compile", "--out", "/dev/full")
    assert code == 1 and "/dev/full" in err and "not a regular file" in err


def test_a_single_run_appends_to_its_results_and_rewrites_its_trace(model, capsys, tmp_path):
    out, trace = tmp_path / "out.jsonl", tmp_path / "t.jsonl"
    argv = ("greedy | max 2", "--model", model, "--prompt-ids", "1,2", "--no-compile", "--json",
            "--out", str(out), "--trace", str(trace))
    assert run(capsys, *argv)[0] == 0
    first = trace.read_bytes()
    assert run(capsys, *argv)[0] == 0
    assert len(out.read_text().splitlines()) == 2 and trace.read_bytes() == first


def test_max_overrides_the_recipes_max_and_the_fingerprint_follows(tmp_path, capsys):
    from decode.dsl import parse

    f = tmp_path / "long.dec"
    f.write_text("greedy | repetition 1.2 | max 40\n")
    assert main(["run", str(f), "--max", "3", "--prompt-ids", "1,5,9", "--no-compile", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(line["sequences"][0]["ids"]) <= 3
    assert line["recipe"] == parse("greedy | repetition 1.2 | max 3").canonical
    assert f.read_text() == "greedy | repetition 1.2 | max 40\n"  # the file is the user's
    assert main(["run", str(f), "--max", "0", "--prompt-ids", "1"]) == 2
