"""Classifier-free guidance (`cfg`) token for token against transformers 4.55.4.

Without beams the reference is transformers' own generate(guidance_scale=..., negative_prompt_ids=...)
(UnbatchedClassifierFreeGuidanceLogitsProcessor). With beams transformers keeps each
unconditional row where it was when the beams reorder, so the reference there is the same
formula on the same model with the unconditional row recomputed from each beam's own text
(`Guided`, checked against transformers' processor where both apply). Random checkpoints,
EOS boosted so that rows end mid-way; three prompts of different lengths in one batch.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from decode.runtime.errors import ModelError  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402

EOS, PAD, MAX_NEW = 2, 0, 12
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [1, 40, 41, 42, 43, 44, 45, 46]]
NEGATIVE = "a calm and happy day"  # longer than every prompt: the rows are padded to it
SHAPES = {  # name -> (kv_heads, tied embeddings, seed)
    "gqa-untied": (2, False, 3),
    "mha-tied": (4, True, 5),
    "gqa-tied": (2, True, 7),
    "mha-untied": (4, False, 11),
}


class Chars:
    """A tokenizer for a random model: BOS, then one id per character."""

    bos_id = 1

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return [1] * bos + [3 + ord(c) % 58 for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(96 + int(i) % 26) for i in ids)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(name):
        if name not in made:
            kv, tie, seed = SHAPES[name]
            path = make_hf_llama(tmp_path_factory.mktemp(name) / "m", vocab=61, dim=32, layers=2, heads=4,
                                 kv_heads=kv, ff=64, tie=tie, seed=seed)
            hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
            with torch.no_grad():  # EOS likely enough to end some rows early
                hf.lm_head.weight[EOS] += 0.6 * hf.lm_head.weight.mean(0) + 0.3
            hf.save_pretrained(path, safe_serialization=True)
            ours = decode.load(str(path))
            ours.tokenizer = Chars()
            made[name] = hf, ours
        return made[name]

    return get


class Guided(transformers.LogitsProcessor):
    """transformers' CFG formula with the unconditional row recomputed, each step, from the
    unconditional prompt and the row's own new tokens (so it follows its beam)."""

    def __init__(self, model, scale: float, negative: list[int] | None, p_len: int):
        self.model, self.scale, self.negative, self.p_len = model, scale, negative, p_len

    def __call__(self, input_ids, scores):
        scores = torch.log_softmax(scores, dim=-1)
        rows = input_ids.shape[0]
        head = (input_ids[:, self.p_len - 1:self.p_len] if self.negative is None
                else torch.tensor([self.negative] * rows))
        u = torch.log_softmax(self.model(torch.cat([head, input_ids[:, self.p_len:]], 1)).logits[:, -1], -1)
        return self.scale * (scores - u) + u


def reference(hf, prompts, scale, negative=None, beams=1, own=False, **kw):
    """Per prompt: (its returned sequences' new ids, their scores or None)."""
    p_len = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts])
    neg = None if negative is None else Chars().encode(negative)
    if own:
        kw["logits_processor"] = transformers.LogitsProcessorList([Guided(hf, scale, neg, p_len)])
    else:
        kw["guidance_scale"] = scale
        if neg is not None:
            kw["negative_prompt_ids"] = torch.tensor([neg] * len(prompts))
    kw = {"do_sample": False, "top_k": None, "top_p": None, "temperature": None, **kw}
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, eos_token_id=EOS,
                      pad_token_id=EOS, num_beams=beams, num_return_sequences=beams,
                      return_dict_in_generate=True, output_scores=True, **kw)
    result = []
    for i in range(len(prompts)):
        rows = [out.sequences[i * beams + j, p_len:].tolist() for j in range(beams)]
        rows = [r[:r.index(EOS) + 1] if EOS in r else r for r in rows]
        scores = out.sequences_scores[i * beams:(i + 1) * beams].tolist() if beams > 1 else None
        result.append((rows, scores))
    return result


def check(completions, expected):
    ended = 0
    for i, (comp, (rows, scores)) in enumerate(zip(completions, expected)):
        got = [s.ids for s in comp.sequences]
        assert got == rows, f"prompt {i}: ours {got} vs reference {rows}"
        for s, ref in zip(comp.sequences, scores or ()):
            assert s.score == pytest.approx(ref, abs=1e-4)
        ended += sum(len(r) < MAX_NEW and r[-1] == EOS for r in rows)
    return ended


def recipe(scale, negative=None, search="greedy", extra=""):
    neg = "" if negative is None else f' negative="{negative}"'
    return f"{search} | cfg scale={scale}{neg}{extra} | max {MAX_NEW}"


# (search, scale, negative, reference kwargs): each run by transformers' generate itself,
# or (own=True, with beams) by its formula on each beam's own text
SETTINGS = {
    "greedy": ("greedy", 1.5, None, {}),
    "negative": ("greedy", 3.0, NEGATIVE, {}),
    "beam": ("beam 3", 1.5, NEGATIVE, {"beams": 3, "own": True}),
}
SLOW = {
    "weak": ("greedy", 0.5, NEGATIVE, {}),
    "beam-last-token": ("beam 3", 2.0, None, {"beams": 3, "own": True}),
    "sampled-top-1": ("sample", 2.0, NEGATIVE, {"do_sample": True, "top_k": 1}),
}
GRID = [pytest.param(c, s, id=f"{c}-{s}") for c in list(SHAPES)[:2] for s in SETTINGS]
GRID += [pytest.param(c, s, id=f"{c}-{s}", marks=pytest.mark.slow) for c in SHAPES
         for s in {**SETTINGS, **SLOW} if (c in list(SHAPES)[:2]) + (s in SETTINGS) < 2]


@pytest.mark.parametrize("name,setting", GRID)
def test_cfg_matches_transformers(checkpoints, name, setting):
    hf, ours = checkpoints(name)
    search, scale, negative, kw = {**SETTINGS, **SLOW}[setting]
    expected = reference(hf, PROMPTS, scale, negative, **kw)
    extra = " | topk 1" if kw.get("top_k") else ""
    ended = check(decode.generate(ours, recipe(scale, negative, search, extra), PROMPTS, seed=0, compile=False),
                  expected)
    assert ended  # some rows end mid-way


def test_guided_reference_is_transformers_processor_without_beams(checkpoints):
    hf, _ = checkpoints("gqa-untied")
    for neg in (None, NEGATIVE):
        assert reference(hf, PROMPTS, 2.0, neg, own=True) == reference(hf, PROMPTS, 2.0, neg)


def test_transformers_beams_leave_unconditional_rows_behind(checkpoints):
    """Why beams have no transformers equivalent (`decode explain --hf` says so)."""
    hf, ours = checkpoints("gqa-untied")
    assert reference(hf, PROMPTS, 1.5, beams=3) != reference(hf, PROMPTS, 1.5, beams=3, own=True)
    ref = decode.dsl.hf_reference("beam 3 | cfg scale=1.5")
    assert ref.kwargs is None and "reorder" in ref.reason
    assert decode.dsl.hf_kwargs("cfg scale=1.5")["guidance_scale"] == 1.5


def test_diverse_beams_and_a_stateful_stage_compose(checkpoints):
    """diverse penalises before the stages, then cfg; repetition keeps counts per row."""
    hf, ours = checkpoints("mha-tied")
    expected = reference(hf, PROMPTS, 1.5, NEGATIVE, beams=4, own=True, num_beam_groups=2,
                         diversity_penalty=0.5)
    check(decode.generate(ours, recipe(1.5, NEGATIVE, "beam 4 | diverse groups=2 penalty=0.5"), PROMPTS,
                          compile=False), expected)
    expected = reference(hf, PROMPTS, 2.0, repetition_penalty=1.3)
    check(decode.generate(ours, recipe(2.0, extra=" | repetition 1.3"), PROMPTS, compile=False), expected)


def test_compiled_equals_eager_and_a_new_scale_reuses_the_step(checkpoints):
    from torch._dynamo.utils import counters

    hf, ours = checkpoints("gqa-untied")
    graphs = None
    # prompts and negative prompts all fit one cache length (engine.SEQ_BUCKET), so one graph
    for scale, neg in ((1.5, NEGATIVE[:12]), (3.0, NEGATIVE[:16]), (0.7, None)):
        text = recipe(scale, neg, "beam 3")
        eager = decode.generate(ours, text, PROMPTS, compile=False)
        check(decode.generate(ours, text, PROMPTS), reference(hf, PROMPTS, scale, neg, beams=3, own=True))
        check(eager, reference(hf, PROMPTS, scale, neg, beams=3, own=True))
        if graphs is None:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs


def test_cfg_scale_1_changes_nothing(checkpoints):
    _, ours = checkpoints("gqa-untied")
    plain = decode.generate(ours, f"greedy | max {MAX_NEW}", PROMPTS, compile=False)
    guided = decode.generate(ours, recipe(1.0), PROMPTS, compile=False)
    assert [c.sequences[0].ids for c in guided] == [c.sequences[0].ids for c in plain]


# -- bad input -------------------------------------------------------------------------------

def test_scale_0_is_refused_with_its_meaning_and_scale_1_is_a_warning():
    with pytest.raises(decode.RecipeError) as info:
        decode.parse("greedy | cfg scale=0")
    err = info.value
    assert err.span.start == len("greedy | cfg ") and "ignores the prompt" in err.message
    assert "scale > 1" in err.message
    warned = decode.parse("cfg scale=1").warnings
    assert len(warned) == 1 and "guides nothing" in warned[0].message


def test_a_negative_prompt_longer_than_the_context_is_one_message(capsys):
    from decode.cli import main

    long = "Nay, " * 200  # the demo model's context is 256 positions
    code = main(["run", f'cfg scale=1.5 negative="{long}" | max 8', "--prompt", "ROMEO:", "--no-compile"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "negative" in err and "shorten it to at most 248 tokens" in err and "context of 256" in err


def test_a_text_negative_prompt_without_a_tokenizer_says_so(checkpoints):
    _, ours = checkpoints("gqa-untied")
    bare = decode.load(str(ours.source))
    with pytest.raises(ModelError, match="needs a tokenizer"):
        decode.generate(bare, recipe(2.0, "x"), PROMPTS, compile=False)
    assert decode.generate(bare, recipe(2.0), PROMPTS[:1], compile=False)[0].sequences  # no text: fine


def test_transform_takes_the_unconditional_logits_or_names_them():
    logits, uncond, ids = torch.randn(2, 11), torch.randn(2, 11), torch.tensor([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="unconditional="):
        decode.transform("cfg scale=2", logits, ids)
    u = torch.log_softmax(uncond, -1)
    want = 2 * (torch.log_softmax(logits, -1) - u) + u
    assert torch.allclose(decode.transform("cfg scale=2", logits, ids, unconditional=uncond), want)


@pytest.mark.parametrize("negative", [None, NEGATIVE])
def test_contrastive_search_is_guided_as_transformers_guides_it(checkpoints, negative):
    """The unconditional rows run the candidates too and take the one their row took."""
    hf, ours = checkpoints(list(SHAPES)[0])
    expected = reference(hf, PROMPTS, 1.5, negative, penalty_alpha=0.6, top_k=4)
    got = decode.generate(ours, recipe(1.5, negative, "contrastive k=4 alpha=0.6"), PROMPTS, compile=False)
    check(got, expected)
    plain = decode.generate(ours, f"contrastive k=4 alpha=0.6 | max {MAX_NEW}", PROMPTS, compile=False)
    assert [s.ids for c in got for s in c.sequences] != [s.ids for c in plain for s in c.sequences]
