"""Provenance in every output (`--json`, `--out`, batch and sweep lines, trace headers, the
terminal footer), the model's content hash and its cache, `decode replay`, and `sample n`
best first with its draw index. Eager runs on the demo model: no compiling here."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import decode
from decode.cli import main
from decode.compiler.provenance import FIELDS, problem
from decode.runtime import identity

SAMPLING = "sample 2 | topp 0.9 | temp 0.9 | max 8"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def demo_hash():
    return identity.model_hash(decode.load(device="cpu"))


def assert_provenance(prov, sampled: bool):
    assert problem(prov) is None and list(prov) == list(FIELDS)
    assert (prov["seed"] is not None) == sampled and (prov["prompt_seed"] is not None) == sampled
    assert prov["model_hash"] == demo_hash() and prov["model"] is None  # None: the bundled demo model
    assert (prov["decode"], prov["torch"]) == (decode.__version__, torch.__version__.split("+")[0])
    assert (prov["device"], prov["dtype"], prov["compiled"]) == ("cpu", "float32", False)


# -- every format ------------------------------------------------------------------------------

def test_every_output_format_carries_the_provenance(capsys, tmp_path):
    out, batch, sweep, trace = (tmp_path / n for n in ("out.jsonl", "batch.jsonl", "sweep.jsonl", "t.jsonl"))
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"id": "a", "prompt": "ROMEO:"}\n{"id": 2, "prompt_ids": [1, 5, 9]}\n')
    eager = ("--no-compile",)
    code, shown, _ = run(capsys, "run", SAMPLING, "--prompt", "ROMEO:", "--json", "--out", str(out),
                         "--trace", str(trace), *eager)
    assert code == 0
    printed = json.loads(shown)
    assert printed == lines(out)[0]
    assert_provenance(printed["provenance"], sampled=True)
    header = json.loads(trace.read_text().splitlines()[0])
    assert header["provenance"] == printed["provenance"]  # the trace names the same run
    assert run(capsys, "viz", str(trace))[0] == 0         # and viz still reads it
    assert run(capsys, "run", "greedy | max 4", "--prompt", "ROMEO:", "--out", str(out), *eager)[0] == 0
    assert_provenance(lines(out)[1]["provenance"], sampled=False)  # greedy draws nothing: no seed
    assert run(capsys, "run", SAMPLING, "--prompts", str(prompts), "--out", str(batch), "--seed", "3", *eager)[0] == 0
    assert run(capsys, "run", "sample 2 | topp {0.8, 0.9} | max 4", "--prompt", "ROMEO:", "--out", str(sweep),
               *eager)[0] == 0
    for obj in lines(batch) + lines(sweep):
        assert_provenance(obj["provenance"], sampled=True)
    assert {o["provenance"]["seed"] for o in lines(batch)} == {3}   # the run's seed; each prompt's own differs
    assert len({o["provenance"]["prompt_seed"] for o in lines(batch)}) == 2
    assert {o["provenance"]["seed"] for o in lines(sweep)} == {0}   # a sweep's default seed, as documented


def test_the_terminal_shows_the_seed_model_and_where_it_ran(capsys):
    code, shown, _ = run(capsys, "run", SAMPLING, "--prompt", "ROMEO:", "--seed", "11", "--no-compile")
    assert code == 0
    assert "seed 11" in shown and demo_hash()[7:19] in shown and "cpu float32 eager" in shown
    assert f"torch {torch.__version__.split('+')[0]}" in shown


def test_an_unseeded_run_records_the_seed_it_drew_and_that_seed_repeats_it(capsys):
    argv = ("run", "sample 3 | temp 1.3 | max 10", "--prompt", "ROMEO:", "--json", "--no-compile")
    a, b = (json.loads(run(capsys, *argv)[1]) for _ in range(2))
    assert a["provenance"]["seed"] != b["provenance"]["seed"]
    again = json.loads(run(capsys, *argv, "--seed", str(a["provenance"]["seed"]))[1])
    assert again["sequences"] == a["sequences"] and again["provenance"] == a["provenance"]


# -- the model's content hash ------------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODE_CACHE_DIR", str(tmp_path / "cache"))
    return shutil.copytree(Path(decode.load(device="cpu").source), tmp_path / "ckpt")


def test_the_hash_covers_weights_config_and_tokenizer_and_survives_a_move(checkpoint, tmp_path):
    names = [f.name for f in decode.load(str(checkpoint), device="cpu").files]
    assert {"model.safetensors", "config.json", "tokenizer.model"} <= set(names) and "README.md" not in names
    first = identity.model_hash(decode.load(str(checkpoint), device="cpu"))
    assert first == demo_hash()                                    # a copy is the same model
    moved = Path(shutil.move(str(checkpoint), tmp_path / "elsewhere"))
    assert identity.model_hash(decode.load(str(moved), device="cpu")) == first
    config = moved / "config.json"
    config.write_text(config.read_text() + "\n")  # the same settings, other bytes: another file
    assert identity.model_hash(decode.load(str(moved), device="cpu")) != first


def test_a_second_run_reads_the_digests_from_the_cache_not_the_files(checkpoint, monkeypatch):
    first = identity.model_hash(decode.load(str(checkpoint), device="cpu"))
    assert identity.cache_path().is_file()

    def no_reading(path):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(identity, "_digest", no_reading)
    assert identity.model_hash(decode.load(str(checkpoint), device="cpu")) == first


def test_a_broken_cache_file_is_ignored_and_rewritten(checkpoint):
    identity.cache_path().parent.mkdir(parents=True, exist_ok=True)
    identity.cache_path().write_text("{not json")
    assert identity.model_hash(decode.load(str(checkpoint), device="cpu")) == demo_hash()
    assert json.loads(identity.cache_path().read_text())


# -- replay ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results file: a seeded and an unseeded sampling run, a beam run and a two-point sweep."""
    path = tmp_path_factory.mktemp("replay") / "r.jsonl"
    for argv in ((SAMPLING, "--seed", "5"), (SAMPLING,), ("beam 2 | max 6",),
                 ("sample 2 | temp {0.7, 1.2} | max 6",)):
        assert main(["run", *argv, "--prompt", "ROMEO:", "--out", str(path), "--no-compile", "--logprobs", "2"]) == 0
    return path


def test_replay_says_identical_for_seeded_unseeded_beam_and_sweep_lines(results, capsys):
    code, shown, err = run(capsys, "replay", str(results), "--json")
    found = [json.loads(x) for x in shown.splitlines()]
    assert code == 0 and [v["verdict"] for v in found] == ["identical"] * 5
    assert [v["line"] for v in found] == [1, 2, 3, 4, 5] and all(v["replay"] == 1 for v in found)
    code, shown, err = run(capsys, "replay", str(results))
    assert code == 0 and shown.count("identical") == 5 and "5 identical" in err


def test_replay_says_different_when_a_stage_number_is_edited(results, tmp_path, capsys):
    edited = tmp_path / "edited.jsonl"
    edited.write_text(results.read_text().replace("temp 0.9", "temp 2.5", 2))
    code, shown, _ = run(capsys, "replay", str(edited), "--json")
    found = [json.loads(x) for x in shown.splitlines()]
    assert code == 1 and [v["verdict"] for v in found[:3]] == ["different", "different", "identical"]
    for v in found[:2]:
        first = v["first_difference"]
        assert "the recipe was edited" in v["why"]
        want = lines(results)[v["line"] - 1]["sequences"][first["sequence"]]
        assert first["expected"]["id"] == want["ids"][first["index"]] != (first["got"] or {}).get("id")
    code, shown, _ = run(capsys, "replay", str(edited))
    assert code == 1 and "different" in shown and "token" in shown


def test_replay_of_a_line_from_another_model_or_device_says_not_reproducible_here(results, tmp_path, capsys):
    from llama_factory import make_hf_llama

    other = make_hf_llama(tmp_path / "other", vocab=4096, dim=16, layers=1)
    code, shown, _ = run(capsys, "replay", str(results), "--json", "--model", str(other))
    found = [json.loads(x) for x in shown.splitlines()]
    assert code == 3 and {v["verdict"] for v in found} == {"not reproducible here"}
    assert all("another model" in v["why"] and "sha256:" in v["why"] for v in found)
    moved = tmp_path / "device.jsonl"
    obj = lines(results)[2]
    moved.write_text(json.dumps({**obj, "provenance": {**obj["provenance"], "device": "cuda:63"}}) + "\n")
    code, shown, _ = run(capsys, "replay", str(moved), "--json")
    assert code == 3 and "cuda:63" in json.loads(shown)["why"] and "lacks" in json.loads(shown)["why"]


@pytest.mark.parametrize("text, words", [
    ("not json at all\n{}\n", "not a JSON line"),
    ('{"id": 1, "prompt": "ROMEO:"}\n', "not a result line"),
])
def test_replay_of_a_file_that_is_not_results_is_one_message(tmp_path, capsys, text, words):
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    code, shown, err = run(capsys, "replay", str(path))
    assert code == 1 and words in err and shown == "" and len(err.strip().splitlines()) == 1


def test_replay_of_a_line_without_provenance_says_why_it_cannot(results, tmp_path, capsys):
    old = tmp_path / "old.jsonl"
    obj = lines(results)[2]
    del obj["provenance"]
    old.write_text(json.dumps(obj) + "\n")
    code, shown, _ = run(capsys, "replay", str(old), "--json")
    assert code == 3 and "no provenance" in json.loads(shown)["why"]


# -- sample n: best first, the draw kept ---------------------------------------------------------

def test_sample_lists_best_first_with_each_draw_in_json_and_table(capsys):
    argv = ("run", "sample 4 | temp 1.3 | max 8", "--prompt", "ROMEO:", "--seed", "2", "--no-compile")
    seqs = json.loads(run(capsys, *argv, "--json")[1])["sequences"]
    assert [s["score"] for s in seqs] == sorted((s["score"] for s in seqs), reverse=True)
    assert sorted(s["draw"] for s in seqs) == [0, 1, 2, 3]
    table = [r.split("│") for r in run(capsys, *argv)[1].splitlines() if r.count("│") >= 5]
    assert [(int(r[1]), int(r[2])) for r in table] == [(i, s["draw"]) for i, s in enumerate(seqs, 1)]
    beam = json.loads(run(capsys, "run", "beam 2 | max 4", "--prompt", "ROMEO:", "--json", "--no-compile")[1])
    assert all("draw" not in s for s in beam["sequences"])  # a beam's rows are not draws


def test_replay_of_a_line_whose_prompt_the_model_refuses_is_a_verdict_not_a_traceback(results, tmp_path, capsys):
    line = lines(results)[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**line, "prompt_ids": [99999]}) + "\n")
    code, shown, _ = run(capsys, "replay", str(bad), "--json")
    verdict = json.loads(shown.splitlines()[0])
    assert code == 1 and verdict["verdict"] == "different" and "outside this model's vocabulary" in verdict["why"]
