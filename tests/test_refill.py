"""Continuous batching (compiler/refill.py): in a job, a finished prompt's rows take the next
waiting prompt, and every prompt gets exactly the tokens it gets decoded alone."""
import json
from pathlib import Path

import pytest

import decode
from decode.compiler import refill
from decode.compiler.arguments import recipe_plan
from decode.compiler.engine import run
from decode.jobs import batch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Once upon a time", "The cat", "Tom and his dog went to the park to play with a ball", "She",
           "One day, a little girl named Lily found", "The sun", [1, 50, 60], "He was sad because"]


@pytest.fixture(scope="module")
def demo():
    return decode.load(str(ROOT / "runtime" / "demo"))


def alone(plan, model, i, compiled=False):
    return run(plan, model, [PROMPTS[i]], seed=5, seeds=[11 * i + 3], compiled=compiled)[0]


def same(a, b):
    assert [(s.ids, s.finish, s.draw) for s in a.sequences] == [(s.ids, s.finish, s.draw) for s in b.sequences]
    assert [s.score for s in a.sequences] == pytest.approx([s.score for s in b.sequences], abs=1e-3)


@pytest.mark.parametrize("recipe", [
    "greedy | max 90",                                           # rows move left mid-run (slots run short)
    "sample 2 | topp 0.9 temp 0.8 | max 40",                     # draws at each row's own step
    "sample | xtc threshold=0.1 probability=0.5 | minnew 30 | max 40",  # stages reading new_len and keys
    'greedy | suppress_at_start 3 | lengthdecay start=10 factor=1.2 | max 60 | stop "."',  # mixed lengths
])
def test_each_prompt_gets_the_tokens_it_gets_alone(demo, recipe):
    plan = recipe_plan(recipe)
    assert refill.fits(plan, demo, 3)
    got = dict(refill.run(plan, demo, PROMPTS, [11 * i + 3 for i in range(len(PROMPTS))], 3, compiled=False,
                          seed=5))
    assert sorted(got) == list(range(len(PROMPTS)))
    for i in range(len(PROMPTS)):
        same(got[i], alone(plan, demo, i))


def test_compiled_refill_equals_eager_alone(demo):
    plan = recipe_plan('greedy | max 24 | stop "."')
    got = dict(refill.run(plan, demo, PROMPTS, [0] * len(PROMPTS), 2, compiled=True))
    for i in range(len(PROMPTS)):
        same(got[i], alone(plan, demo, i))


def test_finished_prompts_come_first_and_the_batch_stays_full(demo):
    """Prompts that stop early are returned before a long one that started with them ends."""
    plan = recipe_plan('greedy | max 60 | stop "."')
    order = [i for i, _ in refill.run(plan, demo, PROMPTS, [0] * len(PROMPTS), 2, compiled=False)]
    lengths = {i: len(alone(plan, demo, i).sequences[0].ids) for i in range(len(PROMPTS))}
    assert order != list(range(len(PROMPTS))) or len(set(lengths.values())) == 1
    assert sorted(order) == list(range(len(PROMPTS)))


@pytest.mark.parametrize("recipe", ["beam 2 | max 8", "sample | repetition 1.2 | max 8", "greedy | cfg scale=1.5 | max 8", "contrastive k=4 alpha=0.6 | max 8", "sbeam 2 | max 8"])
def test_searches_and_stages_with_state_run_batch_by_batch(demo, recipe):
    assert not refill.fits(recipe_plan(recipe), demo, 2)


def test_a_prompt_too_long_fails_alone_and_the_others_are_decoded(demo):
    plan = recipe_plan("greedy | max 8")
    prompts = ["The cat", [5] * 300, "She"]
    got = dict(refill.run(plan, demo, prompts, [0, 0, 0], 2, compiled=False))
    assert isinstance(got[1], Exception) and "context" in str(got[1])
    same(got[0], run(plan, demo, ["The cat"], compiled=False)[0])


def test_a_job_file_is_decoded_with_refill_and_equals_batch_by_batch(demo, tmp_path, monkeypatch):
    items = [batch.Item(line=n + 1, id=f"p{n}", prompt=p) for n, p in enumerate(PROMPTS)]
    plan = recipe_plan('sample | temp 0.8 | max 30 | stop "."')

    def job(use_refill):
        lines, calls = [], []
        monkeypatch.setattr(batch, "_refills", lambda *a: (calls.append(1), use_refill)[1])
        errors = batch.decode_batches(plan, demo, items, lines.append, seed=7, batch_size=3, compiled=False,
                                      refill=True)
        assert not errors and calls
        return {o["id"]: o for o in map(json.loads, "".join(lines).splitlines())}

    a, b = job(True), job(False)
    assert a.keys() == b.keys() == {it.id for it in items}
    for k in a:
        assert [s["ids"] for s in a[k]["sequences"]] == [s["ids"] for s in b[k]["sequences"]], k
        assert a[k]["provenance"]["prompt_seed"] == b[k]["provenance"]["prompt_seed"]


def test_run_with_refill_writes_every_prompt_once_with_the_tokens_of_batch_by_batch(tmp_path, capsys):
    from decode.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": n, "prompt": p} if isinstance(p, str) else {"id": n, "prompt_ids": p})
                           + "\n" for n, p in enumerate(PROMPTS)))
    outs = {}
    for flag in ([], ["--refill"]):
        out = tmp_path / f"out{len(flag)}.jsonl"
        argv = ['greedy | max 20 | stop "."', "--model", str(ROOT / "runtime" / "demo"), "--prompts", str(src),
                "--out", str(out), "--batch-size", "3", "--no-compile", *flag]
        assert main(["run", *argv]) == 0
        assert "Traceback" not in capsys.readouterr().err
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert sorted(o["id"] for o in lines) == list(range(len(PROMPTS)))
        outs[bool(flag)] = {o["id"]: o["sequences"][0]["ids"] for o in lines}
    assert outs[True] == outs[False]


def test_log_probs_follow_each_prompt_as_when_alone(demo):
    plan = recipe_plan('sample 2 | topk 20 | max 70 | stop "."')
    prompts = PROMPTS[:5]
    got = dict(refill.run(plan, demo, prompts, [3 * i for i in range(5)], 2, compiled=False, seed=1, logprobs=3))
    for i, p in enumerate(prompts):
        a = run(plan, demo, [p], seed=1, seeds=[3 * i], compiled=False, logprobs=3)[0]
        assert a.to_json()["logprobs"] == got[i].to_json()["logprobs"]
        for x, y in zip(a.sequences, got[i].sequences):
            assert x.ids == y.ids and len(x.logprobs) == len(y.logprobs) == len(x.ids)
            for u, v in zip(x.logprobs, y.logprobs):
                assert u.raw == pytest.approx(v.raw, abs=1e-3)
                assert [t.id for t in u.top_processed] == [t.id for t in v.top_processed]
