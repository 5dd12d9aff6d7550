"""Per-token log-probs (`generate(..., logprobs=N)`, `decode run --logprobs N`) against
transformers 4.55.4: raw = log_softmax of `output_logits`, processed = `output_scores`
(log_softmax'd for greedy) and `compute_transition_scores`, the top N of each, to 1e-5, on
a random checkpoint with three prompts of different lengths in one batch; sampling against
`decode.transform` of the reference's logits; compiled == eager; N = 0 changes nothing.
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from decode.cli import main  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402

# the reference's repetition penalty reads its left padding as tokens: pad with BOS (1),
# which every prompt holds anyway, so that it penalises what ours does
EOS, PAD, N, MAX_NEW, TOL = 2, 1, 3, 10, 1e-5
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [1, 40, 41, 42, 43, 44, 45, 46]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = make_hf_llama(tmp_path_factory.mktemp("lp") / "m", vocab=61, dim=32, layers=2, heads=4,
                         kv_heads=2, ff=64, seed=3)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # EOS likely enough that some beams end early
        hf.lm_head.weight[EOS] += 0.6 * hf.lm_head.weight.mean(0) + 0.15
    hf.save_pretrained(path, safe_serialization=True)
    return hf, decode.load(str(path))


def reference(hf, **kw):
    """transformers' generate on PROMPTS (left-padded) with scores, logits and beam indices."""
    p_len = max(map(len, PROMPTS))
    ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(p_len)[None, :] >= torch.tensor([p_len - len(p) for p in PROMPTS])[:, None]).long()
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                      eos_token_id=EOS, pad_token_id=EOS, return_dict_in_generate=True, output_scores=True,
                      output_logits=True, top_k=None, top_p=None, temperature=None, **kw)
    return out, p_len


def top(values: torch.Tensor) -> list[float]:
    """The N largest finite values, best first."""
    v = torch.topk(values, N).values
    return v[torch.isfinite(v)].tolist()


def check_token(tok, raw: torch.Tensor, processed: torch.Tensor, transition: float):
    """One returned token against the reference's raw log-probs and processed scores [V]."""
    assert tok.raw == pytest.approx(raw[tok.id].item(), abs=TOL)
    assert tok.processed == pytest.approx(transition, abs=TOL)
    assert tok.processed == pytest.approx(processed[tok.id].item(), abs=TOL)
    assert [a.logprob for a in tok.top_raw] == pytest.approx(top(raw), abs=TOL)
    assert [a.logprob for a in tok.top_processed] == pytest.approx(top(processed), abs=TOL)
    assert [raw[a.id].item() for a in tok.top_raw] == pytest.approx([a.logprob for a in tok.top_raw], abs=TOL)


def check_against(hf, ours, out, p_len, n: int, beams: bool):
    """Every returned sequence's tokens, in the reference's order (beam: via beam_indices)."""
    trans = hf.compute_transition_scores(out.sequences, out.scores, out.beam_indices if beams else None,
                                         normalize_logits=not beams)
    for i, comp in enumerate(ours):
        for j, seq in enumerate(comp.sequences):
            row = i * n + j
            assert seq.ids == out.sequences[row, p_len:p_len + len(seq.ids)].tolist()
            assert len(seq.logprobs) == len(seq.ids)
            for t, tok in enumerate(seq.logprobs):
                src = out.beam_indices[row, t].item() if beams else row
                raw = torch.log_softmax(out.logits[t][src], -1)
                proc = out.scores[t][src] if beams else torch.log_softmax(out.scores[t][src], -1)
                check_token(tok, raw, proc, trans[row, t].item())


@pytest.mark.parametrize("compiled", [False, True])
def test_beam_log_probs_are_the_references_scores_and_transition_scores(models, compiled):
    """Beams change parents and end early: each returned hypothesis carries its own path."""
    hf, ours = models
    out, p_len = reference(hf, num_beams=3, num_return_sequences=3, repetition_penalty=1.3)
    got = decode.generate(ours, f"beam 3 | repetition 1.3 | max {MAX_NEW}", PROMPTS, compile=compiled, logprobs=N)
    assert any(s.finish == "eos" and len(s.ids) < MAX_NEW for c in got for s in c.sequences)
    check_against(hf, got, out, p_len, 3, beams=True)
    for c in got:  # the score is the processed log-probs summed, over length ** lenpen (1.0)
        for s in c.sequences:
            assert s.score == pytest.approx(sum(t.processed for t in s.logprobs) / len(s.ids), abs=1e-4)


def test_greedy_log_probs_are_the_references_logits_and_normalized_scores(models):
    hf, ours = models
    out, p_len = reference(hf, num_beams=1, repetition_penalty=1.3)
    got = decode.generate(ours, f"greedy | repetition 1.3 | max {MAX_NEW}", PROMPTS, compile=False, logprobs=N)
    check_against(hf, got, out, p_len, 1, beams=False)
    assert any(abs(t.raw - t.processed) > 1e-3 for c in got for t in c.sequences[0].logprobs)


def history_logits(hf, prompt: list[int], ids: list[int]) -> torch.Tensor:
    """[len(ids), V]: the reference model's logits before each new token, unpadded."""
    with torch.no_grad():
        return hf(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1]


def test_diverse_beam_log_probs_include_the_diversity_penalty(models):
    """The reference's group beam search gives group-local beam_indices, which its own
    compute_transition_scores cannot read: raw against the reference model's logits for each
    hypothesis' history, processed (which holds the penalty) against the score, which
    test_search_parity pins to the reference's."""
    hf, ours = models
    got = decode.generate(ours, f"beam 4 | diverse groups=2 penalty=0.5 | max {MAX_NEW}", PROMPTS,
                          compile=False, logprobs=N)
    paid = []
    for prompt, comp in zip(PROMPTS, got):
        for seq in comp.sequences:
            raw = torch.log_softmax(history_logits(hf, prompt, seq.ids), -1)
            for t, tok in enumerate(seq.logprobs):
                assert tok.raw == pytest.approx(raw[t, tok.id].item(), abs=TOL)
                assert [a.logprob for a in tok.top_raw] == pytest.approx(top(raw[t]), abs=TOL)
                for a_id, lp in [(tok.id, tok.processed)] + [(a.id, a.logprob) for a in tok.top_processed]:
                    lost = raw[t, a_id].item() - lp  # a whole number of penalties (0.5 each)
                    assert lost / 0.5 == pytest.approx(round(lost / 0.5), abs=1e-4) and lost > -TOL
                    paid.append(lost)
            assert seq.score == pytest.approx(sum(t.processed for t in seq.logprobs) / len(seq.ids), abs=1e-4)
    assert max(paid) > 0.4  # some alternative paid a penalty


def test_a_sampled_token_has_the_log_softmax_of_the_processed_logits_at_its_id(models):
    """No reference stream for draws: each token against `decode.transform` of the
    reference model's logits for its history, and the score is their sum."""
    hf, ours = models
    recipe = f"sample 2 | repetition 1.3 | topk 8 | temp 0.7 | max {MAX_NEW}"
    got = decode.generate(ours, recipe, PROMPTS, compile=False, seed=5, logprobs=N)
    for prompt, comp in zip(PROMPTS, got):
        for seq in comp.sequences:
            logits, hist = history_logits(hf, prompt, seq.ids), torch.tensor([prompt + seq.ids])
            for t, tok in enumerate(seq.logprobs):
                proc = decode.transform(recipe, logits[t:t + 1], hist[:, :len(prompt) + t], eos=[EOS])[0]
                lp = torch.log_softmax(proc, -1)
                check_token(tok, torch.log_softmax(logits[t], -1), lp, lp[tok.id].item())
            assert len(seq.logprobs[0].top_processed) == N
            assert seq.score == pytest.approx(sum(t.processed for t in seq.logprobs), abs=1e-4)


@pytest.mark.parametrize("recipe", ["greedy", "beam 3", "beam 4 | diverse groups=2 penalty=0.5", "sbeam 2"])
def test_no_log_probs_is_the_run_as_before(models, recipe):
    """N = 0 (the default) adds nothing to the output; asking for them changes no token or score."""
    _, ours = models
    plain = decode.generate(ours, f"{recipe} | max {MAX_NEW}", PROMPTS, compile=False, seed=1)
    with_lp = decode.generate(ours, f"{recipe} | max {MAX_NEW}", PROMPTS, compile=False, seed=1, logprobs=2)
    for a, b in zip(plain, with_lp):
        assert "logprobs" not in a.to_json() and all("logprobs" not in s for s in a.to_json()["sequences"])
        assert [(s.ids, s.score, s.finish) for s in a.sequences] == [(s.ids, s.score, s.finish) for s in b.sequences]
        assert all(s.logprobs is None for s in a.sequences)
        assert all(len(s.logprobs) == len(s.ids) for s in b.sequences)


def test_json_names_both_distributions_and_its_format(models, tmp_path, capsys):
    _, ours = models
    model = str(ours.source) if getattr(ours, "source", None) else None
    code = main(["run", "beam 2 | max 4", "--model", model, "--prompt-ids", "1,5,9", "--json",
                 "--no-compile", "--logprobs", "2"])
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err
    obj = json.loads(out.out)
    assert list(obj) == ["prompt", "prompt_ids", "recipe", "fingerprint", "sequences", "logprobs", "provenance"]
    assert obj["logprobs"]["format"] == 1 and obj["logprobs"]["top"] == 2
    assert set(obj["logprobs"]) == {"format", "top", "raw", "processed"}
    for s in obj["sequences"]:
        assert list(s) == ["ids", "text", "score", "finish", "logprobs"]
        assert [t["id"] for t in s["logprobs"]] == s["ids"]
        for t in s["logprobs"]:
            assert list(t) == ["id", "text", "raw", "processed", "top_raw", "top_processed"]
            assert isinstance(t["raw"], float) and isinstance(t["processed"], float)
            for alt in t["top_raw"] + t["top_processed"]:
                assert list(alt) == ["id", "text", "logprob"] and isinstance(alt["id"], int)
            assert len(t["top_raw"]) == 2


@pytest.mark.parametrize("n,words", [("-1", "at least 0"), ("62", "at most 61"), ("x", "whole number")])
def test_bad_logprobs_is_one_clear_message(models, capsys, n, words):
    _, ours = models
    code = main(["run", "greedy | max 2", "--model", str(ours.source), "--prompt-ids", "1,5",
                 "--no-compile", "--logprobs", n])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err and "--logprobs" in err


@pytest.mark.parametrize("n,error", [(-1, ValueError), (62, ValueError), (True, TypeError), (1.0, TypeError)])
def test_api_refuses_bad_logprobs(models, n, error):
    _, ours = models
    with pytest.raises(error, match="logprobs"):
        decode.generate(ours, "greedy | max 2", [[1, 5]], compile=False, logprobs=n)


def test_batch_files_carry_the_log_probs(models, tmp_path, capsys):
    _, ours = models
    prompts, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt_ids": p}) + "\n" for i, p in enumerate(PROMPTS)))
    code = main(["run", "beam 2 | max 3", "--model", str(ours.source), "--prompts", str(prompts),
                 "--out", str(out), "--no-compile", "--logprobs", "1"])
    assert code == 0 and "Traceback" not in capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [0, 1, 2] and all(x["logprobs"]["top"] == 1 for x in lines)
    assert all(len(s["logprobs"]) == len(s["ids"]) for x in lines for s in x["sequences"])


def same_lines(a, b) -> None:
    """The same result lines: the same keys and ids throughout, floats to TOL (a prompt's
    numbers move by rounding with the prompts decoded beside it in one batch)."""
    if isinstance(a, float):
        assert b == pytest.approx(a, abs=TOL)
    elif isinstance(a, (dict, list)):
        assert type(a) is type(b) and len(a) == len(b) and (not isinstance(a, dict) or list(a) == list(b))
        for x, y in zip(a.values(), b.values()) if isinstance(a, dict) else zip(a, b):
            same_lines(x, y)
    else:
        assert a == b


def _batch(ours, prompts, out, *extra):
    return main(["run", "sample 2 | max 3", "--model", str(ours.source), "--prompts", str(prompts),
                 "--out", str(out), "--no-compile", "--seed", "1", *extra])


def test_a_resumed_batch_carries_the_log_probs_a_fresh_one_does(models, tmp_path, capsys):
    _, ours = models
    first, every = tmp_path / "first.jsonl", tmp_path / "every.jsonl"
    first.write_text(json.dumps({"id": 0, "prompt_ids": PROMPTS[0]}) + "\n")
    every.write_text("".join(json.dumps({"id": i, "prompt_ids": p}) + "\n" for i, p in enumerate(PROMPTS)))
    fresh, resumed = tmp_path / "fresh.jsonl", tmp_path / "resumed.jsonl"
    assert _batch(ours, every, fresh, "--logprobs", "2") == 0
    assert _batch(ours, first, resumed, "--logprobs", "2") == 0
    assert _batch(ours, every, resumed, "--logprobs", "2") == 0  # resumes: ids 1 and 2
    assert "1 already done" in capsys.readouterr().err
    same_lines([json.loads(x) for x in resumed.read_text().splitlines()],
               [json.loads(x) for x in fresh.read_text().splitlines()])
    assert all(len(s["logprobs"]) == len(s["ids"]) for x in map(json.loads, fresh.read_text().splitlines())
               for s in x["sequences"])


@pytest.mark.parametrize("before,now,words", [
    (["--logprobs", "2"], [], "written with --logprobs 2, and this run has no --logprobs"),
    ([], ["--logprobs", "2"], "Run it without --logprobs to resume"),
    (["--logprobs", "1"], ["--logprobs", "2"], "Run it with --logprobs 1 to resume"),
])
def test_a_resume_with_other_logprobs_is_refused_and_the_file_kept(models, tmp_path, capsys, before, now, words):
    _, ours = models
    first, every, out = tmp_path / "first.jsonl", tmp_path / "every.jsonl", tmp_path / "out.jsonl"
    first.write_text(json.dumps({"id": 0, "prompt_ids": PROMPTS[0]}) + "\n")
    every.write_text("".join(json.dumps({"id": i, "prompt_ids": p}) + "\n" for i, p in enumerate(PROMPTS)))
    assert _batch(ours, first, out, *before) == 0
    kept = out.read_bytes()
    capsys.readouterr()
    assert _batch(ours, every, out, *now) == 1
    err = capsys.readouterr().err
    assert words in err and f"{out}:1" in err and "Traceback" not in err
    assert out.read_bytes() == kept


def test_a_sweep_carries_the_log_probs_fresh_and_resumed(models, tmp_path, capsys):
    _, ours = models
    first, every = tmp_path / "first.jsonl", tmp_path / "every.jsonl"
    first.write_text(json.dumps({"id": 0, "prompt_ids": PROMPTS[0]}) + "\n")
    every.write_text("".join(json.dumps({"id": i, "prompt_ids": p}) + "\n" for i, p in enumerate(PROMPTS[:2])))
    fresh, resumed = tmp_path / "fresh.jsonl", tmp_path / "resumed.jsonl"
    sweep = "sample | topp {0.8, 0.9} | max 3"
    for prompts, out in [(every, fresh), (first, resumed), (every, resumed)]:
        assert main(["run", sweep, "--model", str(ours.source), "--prompts", str(prompts), "--out", str(out),
                     "--no-compile", "--logprobs", "2"]) == 0

    def lines(path):  # in order of point and id; the decoding time each line records differs
        found = [json.loads(x) for x in path.read_text().splitlines()]
        return sorted(({**x, "point": {**x["point"], "seconds": 0}} for x in found),
                      key=lambda x: (x["point"]["index"], x["id"]))

    assert len(lines(fresh)) == 4
    same_lines(lines(resumed), lines(fresh))
    assert all(x["logprobs"]["top"] == 2 and len(s["logprobs"]) == len(s["ids"])
               for x in map(json.loads, fresh.read_text().splitlines()) for s in x["sequences"])
    assert main(["run", sweep, "--model", str(ours.source), "--prompts", str(every), "--out", str(resumed),
                 "--no-compile"]) == 1
    assert "written with --logprobs 2" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["greedy | max 10", "sample 3 | max 10 | seed 0", "beam 3 | max 10",
                                    "beam 4 | diverse groups=2 penalty=0.5 | max 10"])
def test_steps_give_the_log_probs_generate_gives(models, recipe):
    """Each returned sequence is a row or a finished hypothesis at its last step, with the same
    TokenLogprobs as generate's; some end in EOS, so hypotheses are compared too."""
    _, ours = models
    finishes = set()
    for prompt in PROMPTS:
        steps = list(decode.steps(ours, recipe, prompt, logprobs=N))
        want = decode.generate(ours, recipe, [prompt], compile=False, logprobs=N)[0]
        assert [s.logprobs for s in steps[-1].result.sequences] == [s.logprobs for s in want.sequences]
        for seq in want.sequences:
            at = steps[len(seq.ids) - 1]
            shown = [r for r in at.rows if r.ids == seq.ids] + [h for h in at.finished if h.ids == seq.ids]
            assert shown and all(x.logprobs == seq.logprobs for x in shown), (prompt, seq.ids)
            finishes.add(seq.finish)
        assert all(len(r.logprobs) == len(r.ids) for st in steps for r in st.rows)
    assert finishes == {"eos", "max"}
    assert all(r.logprobs is None for r in next(iter(decode.steps(ours, recipe, PROMPTS[0]))).rows)
