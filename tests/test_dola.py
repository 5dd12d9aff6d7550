"""DoLa (`dola`) token for token against transformers 4.55.4's `generate(dola_layers=...)`.

Random llama checkpoints (>= 4 layers, so `high` and `low` differ) with the EOS row of the
output head boosted so that rows end mid-way. decode runs three prompts of different
lengths in one left-padded batch; with `pick=prompt` (the default) each prompt's premature
layer is its own, which is transformers' generate on that prompt alone, and with
`pick=batch` it is transformers' batched generate. Ids, and scores (the sum of the
log-softmax of transformers' processed scores over the chosen tokens) to 1e-4.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from decode.cli import main  # noqa: E402
from decode.dsl import RecipeError  # noqa: E402
from decode.runtime import ModelError  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402

EOS = 2
PAD = 0
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [1, 40, 41, 42, 43, 44, 45, 46]]
MAX_NEW = 12
# (kv heads, tied embeddings, seed, EOS boost): MHA untied and GQA tied in the normal suite
CHECKPOINTS = {"gqa-untied": (2, False, 3, 0.15), "mha-tied": (4, True, 5, 0.35),
               "mha-untied": (4, False, 7, 0.15), "gqa-tied": (2, True, 11, 0.35)}
FAST = ("gqa-untied", "mha-tied")
SETTINGS = [("high", "dola"), ("low", "dola layers=low"), ([0, 3], "dola 0 3")]


def _checkpoint(root, name: str, layers: int = 6):
    kv, tie, seed, boost = CHECKPOINTS[name]
    path = make_hf_llama(root / name, vocab=61, dim=32, layers=layers, heads=4, kv_heads=kv, ff=64,
                         tie=tie, seed=seed)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # make EOS likely enough that some rows end early
        hf.lm_head.weight[EOS] += 0.6 * hf.lm_head.weight.mean(0) + boost
    hf.save_pretrained(path, safe_serialization=True)
    return hf, decode.load(str(path))


class _Built(dict):
    """The checkpoints, each made the first time a test asks for it."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, name):
        self[name] = _checkpoint(self.root, name)
        return self[name]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return _Built(tmp_path_factory.mktemp("dola"))


def hf_dola(hf, prompts, layers, **kw):
    """transformers' DoLa on `prompts` in one batch: per prompt (new ids up to EOS, score)."""
    p_len = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                      dola_layers=layers, eos_token_id=EOS, pad_token_id=EOS, top_k=None, top_p=None,
                      temperature=None, return_dict_in_generate=True, output_scores=True, **kw)
    found = []
    for i in range(len(prompts)):
        new = out.sequences[i, p_len:].tolist()
        new = new[: new.index(EOS) + 1] if EOS in new else new
        score = sum(torch.log_softmax(out.scores[t][i], -1)[tok].item() for t, tok in enumerate(new))
        found.append((new, score))
    return found


def check(ours, reference):
    assert len(ours) == len(reference)
    for i, (comp, (ids, score)) in enumerate(zip(ours, reference)):
        got = comp.sequences[0]
        assert got.ids == ids, f"prompt {i}: ours {got.ids} vs reference {ids}"
        assert got.score == pytest.approx(score, abs=1e-4)
        assert got.finish == ("eos" if ids[-1] == EOS else "max")


def _grid(names):
    return [(n, layers, recipe, r) for n in names for layers, recipe in SETTINGS for r in (None, 1.2)]


def _parity(checkpoints, name, layers, recipe, r):
    hf, ours = checkpoints[name]
    kw = {} if r is None else {"repetition_penalty": r}
    reference = [hf_dola(hf, [p], layers, **kw)[0] for p in PROMPTS]  # each prompt alone
    text = recipe + ("" if r is None else f" | repetition {r}") + f" | max {MAX_NEW}"
    out = decode.generate(ours, text, PROMPTS, compile=False)
    check(out, reference)
    return reference


@pytest.mark.parametrize("name,layers,recipe,r", _grid(FAST))
def test_dola_matches_the_reference_prompt_by_prompt(checkpoints, name, layers, recipe, r):
    _parity(checkpoints, name, layers, recipe, r)


@pytest.mark.slow
@pytest.mark.parametrize("name,layers,recipe,r", _grid(sorted(set(CHECKPOINTS) - set(FAST))))
def test_dola_matches_the_reference_on_every_checkpoint(checkpoints, name, layers, recipe, r):
    _parity(checkpoints, name, layers, recipe, r)


@pytest.mark.parametrize("name", FAST)
def test_some_rows_end_with_eos_mid_way(checkpoints, name):
    out = decode.generate(checkpoints[name][1], f"dola layers=low | max {MAX_NEW}", PROMPTS, compile=False)
    assert any(c.sequences[0].finish == "eos" and len(c.sequences[0].ids) < MAX_NEW for c in out)


@pytest.mark.parametrize("layers,recipe", SETTINGS)
def test_pick_batch_is_the_reference_batched_generate(checkpoints, layers, recipe):
    """transformers averages the divergence over the whole batch (finished rows included)."""
    hf, ours = checkpoints["gqa-untied"]
    check(decode.generate(ours, f"{recipe} pick=batch | max {MAX_NEW}", PROMPTS, compile=False),
          hf_dola(hf, PROMPTS, layers))


def test_pick_prompt_does_not_depend_on_the_batch_and_pick_batch_does(checkpoints):
    hf, ours = checkpoints["gqa-untied"]
    text = f"dola layers=low | max {MAX_NEW}"
    alone = [decode.generate(ours, text, [p], compile=False)[0].sequences[0].ids for p in PROMPTS]
    together = decode.generate(ours, text, PROMPTS, compile=False)
    assert [c.sequences[0].ids for c in together] == alone
    batch = decode.generate(ours, text.replace("low", "low pick=batch"), PROMPTS, compile=False)
    assert [c.sequences[0].ids for c in batch] != alone  # the rule matters on this checkpoint


def test_compiled_equals_eager_and_a_number_does_not_recompile(checkpoints):
    """One compiled step for `dola | repetition R`: R is a tensor, so 1.3 reuses 1.2's graph."""
    from torch._dynamo.utils import counters

    ours = checkpoints["gqa-untied"][1]
    for r in (1.2, 1.3):
        text = f"dola | repetition {r} | max {MAX_NEW}"
        eager = decode.generate(ours, text, PROMPTS, compile=False)
        compiled = decode.generate(ours, text, PROMPTS)
        assert [(s.ids, s.score) for c in compiled for s in c.sequences] == \
            [(s.ids, pytest.approx(s.score, abs=1e-5)) for c in eager for s in c.sequences]
        if r == 1.2:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs


def test_sampled_rows_score_the_reference_contrast(checkpoints):
    """`sample 2 | dola | temp 0.8`: each drawn token's score is its log-probability under
    transformers' contrast (`_dola_select_contrast` over the prompt's two rows) at 1/0.8."""
    from transformers.generation.utils import _dola_select_contrast

    hf, ours = checkpoints["mha-tied"]
    layers = [2, 4]  # tied, 6 layers: transformers' `high` is [3, 5]; these are a list
    out = decode.generate(ours, f"sample 2 | dola 2 4 | temp 0.8 | max {MAX_NEW}", PROMPTS[:2], seed=7,
                          compile=False)
    for prompt, comp in zip(PROMPTS[:2], out):
        rows = [s.ids + [EOS] * (MAX_NEW - len(s.ids)) for s in comp.sequences]  # padded as decoded
        ids = torch.tensor([prompt + r for r in rows])
        with torch.no_grad():
            states = hf(ids, output_hidden_states=True).hidden_states
        want = torch.zeros(2)
        for t in range(MAX_NEW):
            at = len(prompt) - 1 + t
            final = hf.lm_head(states[-1][:, at]).float()
            early = {i: hf.lm_head(states[i][:, at]) for i in layers}
            logp = torch.log_softmax(_dola_select_contrast(layers, early, final) / 0.8, -1)
            live = torch.tensor([t < len(s.ids) for s in comp.sequences])
            want += torch.where(live, logp[torch.arange(2), ids[:, at + 1]], 0.0)
        assert [s.score for s in comp.sequences] == pytest.approx(want.tolist(), abs=1e-4)


def test_early_exits_are_the_reference_head_of_its_hidden_states(checkpoints):
    """Llama.prefill/decode(exits=...) give lm_head(hidden_states[i]) (no final norm) in the
    same forward as the final logits, which they leave unchanged."""
    hf, ours = checkpoints["gqa-untied"]
    ids = torch.tensor([[1, 5, 9, 13, 7, 11]])
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True)
        cache = ours.new_cache(1, 8)
        pad = torch.zeros(1, dtype=torch.long)
        first = ours.prefill(cache, ids[:, :5], pad, exits=(0, 3))
        nxt = ours.decode(cache, ids[:, 5], torch.tensor(5), pad, exits=(0, 3))
    for at, got in ((4, first), (5, nxt)):
        assert got.shape == (3, 1, 61)
        assert torch.allclose(got[0], ref.logits[:, at], atol=1e-5)
        for j, layer in enumerate((0, 3)):
            assert torch.allclose(got[1 + j], hf.lm_head(ref.hidden_states[layer][:, at]), atol=1e-5)
    with pytest.raises(ModelError, match="has 6 layers"):
        ours.decode(cache, ids[:, 5], torch.tensor(5), pad, exits=(6,))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 9, 42])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("part", ["high", "low"])
def test_candidate_layers_are_the_references(tmp_path, monkeypatch, n, tie, part):
    """The layers transformers hands `_dola_select_contrast`, read off one generate() step."""
    from transformers import LlamaConfig as HFConfig, LlamaForCausalLM
    from transformers.generation import utils

    from decode.compiler.search._dola import candidates
    from decode.runtime.config import LlamaConfig

    seen = []
    real = utils._dola_select_contrast
    monkeypatch.setattr(utils, "_dola_select_contrast", lambda c, *a: seen.append(list(c)) or real(c, *a))
    torch.manual_seed(0)
    hf = LlamaForCausalLM(HFConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=n,
                                   num_attention_heads=1, tie_word_embeddings=tie)).eval()
    config = LlamaConfig(vocab_size=16, dim=8, n_layers=n, n_heads=1, n_kv_heads=1, hidden_dim=8,
                         tie_embeddings=tie)
    try:
        hf.generate(torch.tensor([[1, 2]]), max_new_tokens=1, dola_layers=part, pad_token_id=0)
    except RuntimeError:  # transformers stacks an empty list of layers (3 tied layers, `low`)
        with pytest.raises(ModelError, match=f"layers={part} leaves no layer on this {n}-layer model"):
            candidates(config, (), part)
        return
    assert list(candidates(config, (), part)) == seen[0]


def test_a_one_layer_model_or_a_layer_past_the_last_is_refused_before_decoding(tmp_path):
    one = decode.load(str(make_hf_llama(tmp_path / "one", vocab=61, layers=1)))
    with pytest.raises(ModelError, match="this model has 1 layer; decode it without dola"):
        decode.generate(one, "dola | max 4", PROMPTS[:1], compile=False)
    four = decode.load(str(make_hf_llama(tmp_path / "four", vocab=61, layers=4)))
    with pytest.raises(ModelError, match=r"dola layer 4 is not an early exit of this model: it has 4 "
                                         r"layers, so they are 0 \(the embeddings\) \.\. 3"):
        decode.generate(four, "dola 1 4 | max 4", PROMPTS[:1], compile=False)


def test_the_cli_says_what_is_wrong_with_the_model_without_a_traceback(tmp_path, capsys):
    path = make_hf_llama(tmp_path / "one", vocab=61, layers=1)
    code = main(["run", "dola | max 4", "--model", str(path), "--prompt-ids", "1,5,9", "--no-compile"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "this model has 1 layer" in err


@pytest.mark.parametrize("text,caret,message", [
    ("beam 4 | dola", "dola", "'dola' contrasts layers for greedy decoding or sampling, not for 'beam 4'"),
    ("sbeam 2 | dola layers=low", "dola layers=low", "not for 'sbeam 2'"),
    ("dola 0 2 layers=low", "layers=low", "either as a list (e.g. 'dola 0 2') or as layers=high|low"),
    ("dola -1", "-1", "'dola' layer must satisfy 0 <= layer"),
])
def test_bad_recipes_are_check_errors_with_a_caret(text, caret, message):
    with pytest.raises(RecipeError, match=message) as err:
        decode.parse(text)
    span = err.value.span
    assert text[span.start:span.end] == caret


def test_explain_and_the_reference_call():
    from decode.dsl.reference import hf_reference

    assert hf_reference("dola layers=low | repetition 1.2").kwargs["dola_layers"] == "low"
    assert hf_reference("sample 2 | dola 0 2 4").kwargs["dola_layers"] == [0, 2, 4]
    ref = hf_reference("dola")
    assert ref.kwargs["dola_layers"] == "high" and any("one prompt at a time" in n for n in ref.notes)
    assert not any("one prompt at a time" in n for n in hf_reference("dola pick=batch").notes)
    assert decode.parse("dola").warnings and not decode.parse("dola | repetition 1.2").warnings
