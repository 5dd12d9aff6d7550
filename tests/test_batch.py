"""`decode run --prompts in.jsonl --out out.jsonl`: bad lines reported by number and skipped,
results flushed per batch, a rerun resumes (nothing lost, nothing twice), Ctrl-C leaves a
valid file, and results do not depend on batching or on resuming."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decode.cli import main
from decode.jobs import batch
from test_cli_run import JSON_KEYS, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory, sp_tokenizer_dir):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), sp_tokenizer_dir))


def write_prompts(path: Path, n: int, extra: dict | None = None) -> Path:
    """n prompts of equal length (one graph shape), ids 0..n-1, every third one as text;
    `extra` maps a 1-based line number to a raw line inserted there."""
    lines = [json.dumps({"id": i, "prompt_ids": [1, 10 + i % 50, 20 + i % 7]} if i % 3 else
                        {"id": f"t{i}", "prompt": f"ROMEO {i}:"}) for i in range(n)]
    for line_no, raw in sorted((extra or {}).items()):
        lines.insert(line_no - 1, raw)
    path.write_text("\n".join(lines) + "\n")
    return path


def results(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        assert obj["id"] not in out, f"id {obj['id']} written twice"
        out[obj["id"]] = obj
    return out


def same_results(a: dict, b: dict) -> None:
    """Equal token for token; scores equal up to float noise (a batch pads differently)."""
    assert a.keys() == b.keys()
    for k in a:
        assert [s["ids"] for s in a[k]["sequences"]] == [s["ids"] for s in b[k]["sequences"]], k
        assert [s["finish"] for s in a[k]["sequences"]] == [s["finish"] for s in b[k]["sequences"]]
        for x, y in zip(a[k]["sequences"], b[k]["sequences"]):
            assert x["score"] == pytest.approx(y["score"], abs=1e-4)


def run_batch(capsys, recipe, model, prompts, out, *more):
    code = main(["run", recipe, "--model", model, "--prompts", str(prompts), "--out", str(out),
                 "--no-compile", *more])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# -- reading the input -------------------------------------------------------------------

def test_each_malformed_line_is_reported_with_its_number(tmp_path):
    lines = [
        '{"id": 1, "prompt": "ok"}',                 # 1 ok
        '{"id": 2, "prompt": ',                      # 2 bad JSON
        '',                                          # 3 blank: ignored
        '[1, 2]',                                    # 4 not an object
        '{"prompt": "no id"}',                       # 5 no id
        '{"id": true, "prompt": "x"}',               # 6 bool id
        '{"id": 1.5, "prompt": "x"}',                # 7 float id
        '{"id": 8}',                                 # 8 no prompt
        '{"id": 9, "prompt": "a", "prompt_ids": [1]}',  # 9 both
        '{"id": 10, "prompt": ""}',                  # 10 empty
        '{"id": 11, "prompt": [1, 2]}',              # 11 ids under "prompt"
        '{"id": 12, "prompt_ids": [1, "a"]}',        # 12 not ints
        '{"id": 13, "prompt_ids": []}',              # 13 empty ids
        '{"id": 14, "prompt_ids": [1, -3]}',         # 14 negative
        '{"id": 1, "prompt": "again"}',              # 15 duplicate id
        '{"id": "1", "prompt_ids": [1, 2], "note": "kept"}',  # 16 ok: "1" is not 1
    ]
    f = tmp_path / "in.jsonl"
    f.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": 17, "prompt": "\xff"}\n')
    items, errors = batch.read_prompts(str(f))
    assert [(it.line, it.id, it.prompt) for it in items] == [(1, 1, "ok"), (16, "1", [1, 2])]
    assert [e.line for e in errors] == [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17]
    text = {e.line: e.describe("in.jsonl") for e in errors}
    assert text[2].startswith("in.jsonl:2: not valid JSON")
    assert 'no "id"' in text[5] and "string or an integer" in text[6]
    assert "exactly one of" in text[8] and "exactly one of" in text[9]
    assert "duplicate id (first used on line 1)" in text[15] and "not UTF-8" in text[17]


def result(id_, fingerprint="fp") -> str:
    return json.dumps({"id": id_, "recipe": "greedy", "fingerprint": fingerprint, "sequences": []}) + "\n"


def resume(path) -> set[str]:
    found = batch.read_results(str(path), "fp")
    batch.cut_torn(str(path), found)
    return found.done


def test_resume_cuts_only_a_half_written_last_line(tmp_path):
    f = tmp_path / "out.jsonl"
    f.write_text(result(1) + result(2) + result(3)[:20])
    assert resume(f) == {"1", "2"} and f.read_text() == result(1) + result(2)
    assert resume(f) == {"1", "2"} and f.read_text() == result(1) + result(2)
    f.write_text('{"id": 1, "text": "no newline at all')
    assert resume(f) == set() and f.read_text() == ""


def test_an_interrupted_write_is_cut_back_to_the_last_whole_line(tmp_path, monkeypatch):
    f = tmp_path / "out.jsonl"
    real = os.write

    def interrupted(fd, data):  # Ctrl-C lands after half of the second call's bytes are out
        real(fd, bytes(data)[:len(data) // 2])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with batch.appending(str(f)) as write:
            write('{"id": 1}\n')
            with monkeypatch.context() as m:
                m.setattr(os, "write", interrupted)
                write('{"id": 2}\n{"id": 3}\n')
    assert f.read_text() == '{"id": 1}\n'


# -- decoding ----------------------------------------------------------------------------

def test_batch_output_is_the_design_object_plus_id(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 5)
    code, err = run_batch(capsys, "beam 2 | max 4", model, prompts, tmp_path / "out.jsonl")
    assert code == 0 and "5 prompts decoded" in err
    got = results(tmp_path / "out.jsonl")
    assert list(got) == ["t0", 1, 2, "t3", 4]
    for obj in got.values():
        assert list(obj) == ["id"] + JSON_KEYS and len(obj["sequences"]) == 2
    assert got["t0"]["prompt"] == "ROMEO 0:" and got[1]["prompt"] is None


def test_results_do_not_depend_on_the_batch_size(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 5)
    for recipe in ("beam 2 | max 5", "sample 2 | temp 1.3 | max 5"):
        one, many = tmp_path / f"1{recipe[:4]}.jsonl", tmp_path / f"5{recipe[:4]}.jsonl"
        assert run_batch(capsys, recipe, model, prompts, one, "--batch-size", "1", "--seed", "3")[0] == 0
        assert run_batch(capsys, recipe, model, prompts, many, "--batch-size", "5", "--seed", "3")[0] == 0
        same_results(results(one), results(many))


def test_a_different_run_seed_changes_the_samples(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 4)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_batch(capsys, "sample | temp 2 | max 6", model, prompts, a, "--seed", "1")
    run_batch(capsys, "sample | temp 2 | max 6", model, prompts, b, "--seed", "2")
    ids = lambda r: [s["ids"] for o in r.values() for s in o["sequences"]]  # noqa: E731
    assert ids(results(a)) != ids(results(b))


def test_rerun_after_a_crash_mid_write_resumes_without_loss_or_duplicates(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 12)
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    args = ("sample 2 | temp 1.2 | max 5", model, prompts)
    assert run_batch(capsys, *args, full, "--batch-size", "4")[0] == 0
    lines = full.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:5]) + lines[5][:17])  # a crash inside the second batch's write
    code, err = run_batch(capsys, *args, cut, "--batch-size", "4")
    assert code == 0 and "resuming: 5 of 12 prompts are already in" in err and "7 prompts decoded" in err
    same_results(results(cut), results(full))
    code, err = run_batch(capsys, *args, cut, "--batch-size", "4")  # nothing left to do
    assert code == 0 and "0 prompts decoded, 12 already done" in err
    assert len(cut.read_text().splitlines()) == 12


def test_ctrl_c_keeps_finished_batches_and_a_rerun_completes(model, capsys, tmp_path, monkeypatch):
    from decode.compiler import engine

    prompts = write_prompts(tmp_path / "in.jsonl", 10)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert run_batch(capsys, "beam 2 | max 5", model, prompts, full, "--batch-size", "3")[0] == 0
    real, calls = engine.run, []

    def interrupted_on_third_batch(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "run", interrupted_on_third_batch)
    code, err = run_batch(capsys, "beam 2 | max 5", model, prompts, part, "--batch-size", "3")
    assert code == 130 and "interrupted" in err and "again to resume" in err
    assert len(results(part)) == 6                     # two whole batches, all valid JSON
    monkeypatch.setattr(engine, "run", real)
    assert run_batch(capsys, "beam 2 | max 5", model, prompts, part, "--batch-size", "3")[0] == 0
    same_results(results(part), results(full))


def test_a_prompt_the_model_refuses_fails_alone(model, capsys, tmp_path):
    long = json.dumps({"id": "long", "prompt_ids": [1] + [7] * 125})        # 126 + 8 > context 128
    outside = json.dumps({"id": "vocab", "prompt_ids": [1, 10 ** 6]})
    prompts = write_prompts(tmp_path / "in.jsonl", 5, {3: long, 5: outside})
    code, err = run_batch(capsys, "greedy | max 8", model, prompts, tmp_path / "out.jsonl")
    assert code == 1
    assert f'{prompts}:3: id "long": The prompt is 126 tokens' in err
    assert f'{prompts}:5: id "vocab": token id 1000000 is outside' in err
    assert "2 lines failed (0 malformed, 2 refused by the model)" in err
    assert sorted(map(str, results(tmp_path / "out.jsonl"))) == ["1", "2", "4", "t0", "t3"]


def test_an_output_file_of_another_recipe_is_not_resumed_into(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    assert run_batch(capsys, "greedy | max 3", model, prompts, out)[0] == 0
    before = out.read_text()
    code, err = run_batch(capsys, "beam 2 | max 3", model, prompts, out)
    assert code == 1 and "would mix two recipes" in err and out.read_text() == before


def test_without_out_results_go_to_stdout(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 3)
    code = main(["run", "greedy | max 3", "--model", model, "--prompts", str(prompts), "--no-compile"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and [json.loads(x)["id"] for x in lines] == ["t0", 1, 2]


def test_missing_prompts_file_is_a_clean_error(model, capsys, tmp_path):
    code = main(["run", "greedy", "--model", model, "--prompts", str(tmp_path / "no.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and "No such file" in err and "Traceback" not in err


# -- the acceptance run: 50 prompts, a bad line, SIGINT mid-run, rerun ------------------

def test_sigint_mid_run_then_rerun_gives_one_line_per_valid_id(model, capsys, tmp_path):
    prompts = write_prompts(tmp_path / "in.jsonl", 50, {17: '{"id": "bad", "prompt": 3}'})
    out, ref = tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    argv = ["run", "greedy | max 24", "--model", model, "--prompts", str(prompts), "--out", str(out),
            "--no-compile", "--batch-size", "1"]
    # a child started from a background shell may inherit SIGINT ignored: restore Python's handler
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from decode.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"{prompts}:17: " in err and "interrupted" in err
    first = results(out)                              # every line valid JSON, no duplicates
    assert 2 <= len(first) < 50

    code, err = run_batch(capsys, *argv[1:2], model, prompts, out, "--batch-size", "8")
    assert code == 1 and f"{prompts}:17: " in err and "1 line failed (1 malformed" in err
    assert run_batch(capsys, *argv[1:2], model, prompts, ref, "--batch-size", "50")[0] == 1
    final = results(out)
    assert len(final) == 50 and {k: final[k] for k in first} == first
    same_results(final, results(ref))


def test_a_prompt_too_short_for_lookup_is_named_by_its_id_not_its_place_in_the_batch(model, capsys, tmp_path):
    short = json.dumps({"id": "short", "prompt_ids": [1, 5]})
    prompts = write_prompts(tmp_path / "in.jsonl", 4, {4: short})
    code, err = run_batch(capsys, "greedy | lookup n=3 | max 4", model, prompts, tmp_path / "out.jsonl")
    assert code == 1
    assert f"{prompts}:4: id \"short\": 'lookup n=3' matches the last 3 tokens, but the prompt has 2" in err
    assert "prompt 0" not in err and "prompt 3" not in err
