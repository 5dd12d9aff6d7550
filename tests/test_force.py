"""`force`: constrained beam search, token for token transformers' `_constrained_beam_search`
(4.55.4) with `force_words_ids`, and the mistakes it refuses.

Random llama checkpoints (MHA untied, GQA tied) with EOS boosted so that some hypotheses
end mid-way; three prompts of different lengths in one batch; every returned sequence is
compared (ids, order, and scores to 1e-4 where the reference reports them: its finalize
cannot report the score of a hypothesis that misses a constraint, and then fails).
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from decode.cli import main  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402

EOS, PAD = 2, 0
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [1, 40, 41, 42, 43, 44, 45, 46]]
MAX_NEW = 10
# force_words_ids: a multi-token phrase; two phrases (one the prompt holds); a disjunctive
# set whose options share a first token (the reference's aliased progress list shows there)
SETTINGS = {"one": [[17, 30]], "two": [[11, 12], [3]], "any": [[[17, 18], [20], [17, 19, 4]]]}
# (checkpoint, EOS boost): chosen so that hypotheses end mid-way in every setting
CHECKPOINTS = {"mha-untied": ({"kv_heads": 4, "tie": False, "seed": 3}, 0.45),
               "gqa-tied": ({"kv_heads": 2, "tie": True, "seed": 11}, 0.8),
               "mha-tied": ({"kv_heads": 4, "tie": True, "seed": 19}, 0.8),
               "gqa-untied": ({"kv_heads": 2, "tie": False, "seed": 17}, 1.2)}
SLOW = ("mha-tied", "gqa-untied")  # the other two shapes run every test under -m slow


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                        for n in CHECKPOINTS])
def models(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("force")
    shape, boost = CHECKPOINTS[request.param]
    path = make_hf_llama(d / "m", vocab=61, dim=32, layers=2, heads=4, ff=64, **shape)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # make EOS likely enough to end some beams early
        hf.lm_head.weight[EOS] += 0.6 * hf.lm_head.weight.mean(0) + boost
    hf.save_pretrained(path, safe_serialization=True)
    return hf, decode.load(str(path))


def spell(force) -> str:
    """force_words_ids as the clause's phrases."""
    def ids(x):
        return f"ids({', '.join(map(str, x))})"

    return " ".join(f"any({', '.join(ids(o) for o in f)})" if isinstance(f[0], list) else ids(f) for f in force)


def reference(hf, force, k, ret, **kw):
    p_len = max(map(len, PROMPTS))
    ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in PROMPTS])

    def gen(scores):
        return hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                           num_beams=k, num_return_sequences=ret, force_words_ids=force, eos_token_id=EOS,
                           pad_token_id=EOS, return_dict_in_generate=True, output_scores=scores,
                           top_k=None, top_p=None, temperature=None, **kw)
    try:
        out = gen(True)
    except RuntimeError:  # its finalize cannot report the score of a hypothesis missing a constraint
        out = gen(False)
    seqs, scores = [], []
    for i in range(len(PROMPTS)):
        rows = [out.sequences[i * ret + j, p_len:].tolist() for j in range(ret)]
        seqs.append([r[: r.index(EOS) + 1] if EOS in r else r for r in rows])
        got = out.sequences_scores
        scores.append(got[i * ret:(i + 1) * ret].tolist() if got is not None else None)
    return seqs, scores


def check(ours, seqs, scores):
    for i, comp in enumerate(ours):
        assert [s.ids for s in comp.sequences] == seqs[i], f"prompt {i}"
        if scores[i] is not None:
            assert [s.score for s in comp.sequences] == pytest.approx(scores[i], abs=1e-4)


def run(ours, force, k, ret, extra="", compiled=False):
    recipe = f"beam {k}{' return=%d' % ret if ret != k else ''}{extra} | force {spell(force)} | max {MAX_NEW}"
    return decode.generate(ours, recipe, PROMPTS, compile=compiled)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_force_matches_reference(models, setting):
    hf, ours = models
    force = SETTINGS[setting]
    check(run(ours, force, 4, 4), *reference(hf, force, 4, 4))


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_some_hypotheses_end_mid_way_and_meet_their_phrases(models, setting):
    """What the parity tests cover: hypotheses that end early, each holding its phrases
    (in its prompt or its new text)."""
    _, ours = models
    out = run(ours, SETTINGS[setting], 4, 4)
    ended = [(PROMPTS[i], s.ids) for i, c in enumerate(out) for s in c.sequences if s.finish == "eos"]
    assert ended and min(len(ids) for _, ids in ended) < MAX_NEW

    def holds(text, ids):
        return any(text[i:i + len(ids)] == ids for i in range(len(text)))

    for prompt, ids in ended:
        text = prompt + ids
        for f in SETTINGS[setting]:
            assert any(holds(text, o) for o in f) if isinstance(f[0], list) else holds(text, f)


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("k,ret", [(2, 2), (3, 1), (5, 5)])
@pytest.mark.parametrize("lenpen,early", [(1.0, "false"), (0.6, "true"), (2.0, "never")])
def test_force_matches_reference_grid(models, setting, k, ret, lenpen, early):
    hf, ours = models
    force = SETTINGS[setting]
    flag = {"false": False, "true": True, "never": "never"}[early]
    seqs, scores = reference(hf, force, k, ret, length_penalty=lenpen, early_stopping=flag)
    check(run(ours, force, k, ret, f" lenpen={lenpen} early={early}"), seqs, scores)


def test_compiled_force_matches_reference_and_lenpen_reuses_the_graph(models, request):
    from torch._dynamo.utils import counters

    if request.node.callspec.params["models"] != "mha-untied":
        pytest.skip("one compiled check (a compile costs ~30 s)")
    hf, ours = models
    force = SETTINGS["any"] + SETTINGS["one"]
    for lenpen in (1.0, 0.5):
        seqs, scores = reference(hf, force, 4, 4, length_penalty=lenpen)
        check(run(ours, force, 4, 4, f" lenpen={lenpen}", compiled=True), seqs, scores)
        if lenpen == 1.0:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs


# -- what it refuses -----------------------------------------------------------------------

@pytest.mark.parametrize("recipe,words,caret", [
    ('force "a"', "needs a 'beam K' search", 'force "a"'),
    ('beam 1 | force "a"', "at least 2 beams", 'force "a"'),
    ('beam 4 | force "a" | topk 5', "does not sample", 'force "a"'),
    ('beam 4 | force ""', "empty phrase", '""'),
    ('beam 4 | force ids()', "empty phrase", "ids()"),
    ('beam 4 | force ids(1, 2, 3) | max 2', "cannot fit in max 2", "force ids(1, 2, 3)"),
    ('beam 4 | force any("a", "a")', "twice", '"a"'),
    ('beam 4 | force any("a")', "at least two phrases", 'any("a")'),
    ('beam 4 | force ids(-3)', "token ids", "-3"),
    ('beam 4 | force 7', "wrong type", "7"),
    ('beam any("a", "b")', "groups are phrases of 'force'", 'any("a", "b")'),
    ('beam 4 | force "a" | diverse groups=2', "both change how a beam search chooses", 'force "a"'),
])
def test_check_refuses_with_a_caret(capsys, recipe, words, caret):
    assert main(["check", recipe]) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    lines = err.splitlines()
    marks = next(x for x in lines if x.lstrip(" |").startswith("^"))
    shown = lines[lines.index(marks) - 1]  # "  1 | <recipe>" above "    |   ^^^"
    at = marks.index("^") - shown.index(recipe)
    assert recipe[at:at + marks.count("^")] == caret


def test_fmt_round_trips_groups(capsys):
    text = 'force  any( "a" ,ids(3,4) )  "b"\n| beam 4'
    assert main(["fmt", text]) == 0
    out = capsys.readouterr().out.strip()
    assert out == 'beam 4 | force any("a", ids(3, 4)) "b"'
    assert decode.parse(out) == decode.parse(text)


@pytest.mark.parametrize("force,words", [
    ("ids(61)", "outside this model's vocabulary"),
    ("any(ids(5, 6), ids(5))", "is the start of"),
    ('"x"', "needs the model's tokenizer"),
])
def test_run_refuses_what_the_model_cannot_force(models, force, words):
    _, ours = models
    with pytest.raises(ValueError, match=words):
        decode.generate(ours, f"beam 2 | force {force} | max 4", PROMPTS[:1], compile=False)


def test_a_text_phrase_longer_than_max_is_named_with_the_fix(capsys):
    code = main(["run", 'beam 2 | force " to be or not to be" | max 3', "--prompt", "ROMEO:", "--no-compile"])
    err = capsys.readouterr().err
    assert code == 1 and 'force: " to be or not to be" is' in err and "raise max" in err
    assert "Traceback" not in err


def test_text_phrases_are_tokenised_as_ban_does_and_appear(capsys):
    demo = decode.load()
    ids = demo.tokenizer.encode(" king", bos=False)
    out = decode.generate(demo, 'beam 4 return=1 | force " king" | max 16', ["ROMEO:"], compile=False)
    best = out[0].sequences[0].ids
    assert any(best[i:i + len(ids)] == ids for i in range(len(best)))


def test_explain_says_it_in_words_and_gives_the_transformers_call(capsys):
    assert main(["explain", 'beam 4 | force " love" any(" king", ids(7, 8)) | max 8']) == 0
    out = capsys.readouterr().out
    assert "constrained beam search" in out and "round robin" in out
    assert "force_words_ids=[ids(' love'), [ids(' king'), [7, 8]]]" in out


def test_a_trace_lists_the_added_candidates(models):
    _, ours = models
    steps = []
    plan = decode.compiler.plan.compile(f"beam 2 | force {spell(SETTINGS['any'])} | max 4")
    from decode.compiler.engine import run as run_plan

    run_plan(plan, ours, PROMPTS, compiled=False, trace=True, on_step=lambda t, tok, info: steps.append(info))
    assert len(steps) == 4 and all(s["token"].shape == s["kept"].shape for s in steps)
    assert all(int(s["kept"].sum()) >= 2 for s in steps)
