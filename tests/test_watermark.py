"""`watermark` (Kirchenbauer et al. 2023) against transformers 4.55.4: the greenlists, the
stage (WatermarkLogitsProcessor), greedy decoding with it (generate(watermarking_config=)),
`decode detect` (WatermarkDetector), and the round trip on the demo model."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import decode  # noqa: E402
from decode.cli import main  # noqa: E402
from decode.compiler.context import StepContext  # noqa: E402
from decode.compiler.stages import _greenlist, load_stage  # noqa: E402
from decode.watermark.detect import Settings, detect  # noqa: E402
from llama_factory import make_hf_llama  # noqa: E402
from transformers.generation.logits_process import WatermarkLogitsProcessor  # noqa: E402
from transformers.generation.watermarking import WatermarkDetector  # noqa: E402

INF = float("inf")
KEY = 15485863


def logits_with_ties(seed: int, rows: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * 2
    x[1] = x[1].round()                                              # ties, also across the 40th place
    x[2, torch.randperm(vocab, generator=g)[: vocab // 2]] = -INF     # -inf already there
    x[3] = -INF
    x[3, :12] = 1.0                                                   # fewer than 40 finite, all tied
    x[4] = 0.5                                                        # all equal
    return x


def processor(vocab: int, **kw) -> WatermarkLogitsProcessor:
    return WatermarkLogitsProcessor(vocab, "cpu", **kw)


@pytest.mark.parametrize("vocab", [64, 4096])
def test_greenlists_are_transformers_own_for_both_schemes(vocab):
    g = torch.Generator().manual_seed(vocab)
    for scheme in ("lefthash", "selfhash"):
        ref = processor(vocab, greenlist_ratio=0.3, hashing_key=KEY, seeding_scheme=scheme, context_width=3)
        for _ in range(20):
            window = torch.randint(0, vocab, (3,), generator=g)  # selfhash products overflow int64
            seed = _greenlist.seed(window, KEY, scheme)
            assert torch.equal(_greenlist.greenlist(seed, vocab, 0.3), ref._get_greenlist_ids(window))


@pytest.mark.parametrize("scheme,width,gamma,vocab", [
    ("lefthash", 1, 0.25, 64), ("lefthash", 1, 0.5, 300), ("lefthash", 3, 0.1, 300),
    ("selfhash", 1, 0.25, 64), ("selfhash", 1, 0.6, 300),
])
def test_stage_equals_the_processor_on_rows_with_different_histories(scheme, width, gamma, vocab):
    g = torch.Generator().manual_seed(vocab + width)
    ids = torch.randint(0, vocab, (5, 6), generator=g)
    logits = logits_with_ties(width, 5, vocab)
    ref = processor(vocab, greenlist_ratio=gamma, bias=1.5, seeding_scheme=scheme, context_width=width)
    recipe = f"watermark gamma={gamma} delta=1.5 scheme={scheme} width={width}"
    out = decode.transform(recipe, logits.clone(), ids)
    assert torch.equal(out, ref(ids, logits.clone()))
    assert not torch.equal(out, logits)
    # a history shorter than the width: transformers leaves the scores as they are, so do we
    short = decode.transform(f"watermark width={ids.shape[1] + 1}", logits.clone(), ids)
    assert torch.equal(short, logits)


def test_a_left_padded_row_is_watermarked_once_it_has_width_tokens():
    stage = load_stage("watermark")
    vocab = 64
    green = stage.tables({"gamma": 0.25, "key": KEY, "scheme": "lefthash"}, vocab, "cpu")["green"]
    tokens = torch.tensor([[0, 0, 7, 9], [3, 4, 5, 9]])
    ctx = StepContext(tokens, valid=torch.tensor([[False, False, True, True], [True] * 4]),
                      generated=torch.zeros(2, 4, dtype=torch.bool), length=torch.tensor(4),
                      new_len=torch.tensor(0), eos=torch.tensor([2]))
    logits = torch.zeros(2, vocab)
    out = stage.apply(logits, ctx, gamma=0.25, delta=torch.tensor(2.0), key=KEY, scheme="lefthash",
                      width=3, green=green)
    assert torch.equal(out[0], logits[0])                      # 2 tokens of history, width 3
    ids = _greenlist.greenlist(_greenlist.seed(torch.tensor([9]), KEY, "lefthash"), vocab, 0.25)
    assert out[1].nonzero().flatten().tolist() == sorted(ids.tolist())  # the greenlist after 9
    assert set(out[1].tolist()) == {0.0, 2.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_hf_llama(tmp_path_factory.mktemp("wm") / "m", vocab=97, seed=5)
    return transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval(), decode.load(str(path))


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
def test_greedy_with_a_watermark_equals_generate_with_its_watermarking_config(tiny, scheme):
    hf, ours = tiny
    recipe = decode.parse(f"watermark delta=4.0 scheme={scheme} | max 10")
    kw = decode.dsl.reference.hf_kwargs(recipe)
    prompt = [1, 5, 9, 13, 7]
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=2,
                      pad_token_id=2, watermarking_config=kw["watermarking_config"], top_k=None)
    got = decode.generate(ours, recipe, [prompt], compile=False)[0].sequences[0].ids
    new = ref[0, len(prompt):].tolist()
    assert got == new[: new.index(2) + 1] if 2 in new else got == new
    plain = decode.generate(ours, "max 10", [prompt], compile=False)[0].sequences[0].ids
    assert plain != got  # the watermark changed the text


def hf_detector(vocab: int, bos: int, **config) -> WatermarkDetector:
    cfg = transformers.LlamaConfig(vocab_size=vocab, bos_token_id=bos)
    return WatermarkDetector(cfg, "cpu", {"greenlist_ratio": 0.25, "bias": 2.0, "hashing_key": KEY,
                                         "seeding_scheme": "lefthash", "context_width": 1, **config})


@pytest.mark.parametrize("scheme,width,gamma", [("lefthash", 1, 0.25), ("lefthash", 3, 0.4),
                                                ("selfhash", 1, 0.25), ("selfhash", 1, 0.7)])
def test_detector_equals_transformers_detector(scheme, width, gamma):
    vocab = 300
    g = torch.Generator().manual_seed(width)
    ref = hf_detector(vocab, 1, greenlist_ratio=gamma, seeding_scheme=scheme, context_width=width)
    settings = Settings.from_flags(gamma=gamma, scheme=scheme, width=width)
    for n, high in ((5, vocab), (60, 6), (120, vocab)):  # repeated n-grams count every time
        ids = torch.randint(3, high, (n,), generator=g).tolist()
        for seq in (ids, [1, *ids]):  # a leading BOS is dropped
            want = ref(torch.tensor([seq]), return_dict=True)
            got = detect(seq, vocab, settings, bos=1)
            assert (got.scored, got.green) == (want.num_tokens_scored[0], want.num_green_tokens[0])
            assert got.z == want.z_score[0]
            assert got.p == pytest.approx(want.p_value[0], rel=1e-15, abs=1e-300)


def test_text_shorter_than_the_width_is_one_message_not_nan(capsys):
    with pytest.raises(ValueError, match="needs at least 3"):
        detect([1, 5, 6], 300, Settings.from_flags(width=2), bos=1)
    assert main(["detect", "ROMEO", "--width", "2"]) == 1
    err = capsys.readouterr().err
    assert "needs at least 3" in err and "Traceback" not in err and "nan" not in err.lower()


@pytest.mark.parametrize("args,wrong", [(["--gamma", "1"], "gamma"), (["--width", "0"], "width"),
                                        (["--scheme", "middle"], "scheme"),
                                        (["--recipe", "watermark scheme=selfhash width=2"], "width=2"),
                                        (["--recipe", "sample"], "no watermark clause")])
def test_bad_settings_are_refused_with_a_message(args, wrong, capsys):
    assert main(["detect", "ROMEO: O, she doth teach the torches", *args]) == 1
    err = capsys.readouterr().err
    assert wrong in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_threshold_that_is_not_a_finite_number_is_refused(value, capsys):
    assert main(["detect", "ROMEO: O, she doth teach the torches", "--threshold", value]) == 2
    assert f"--threshold {value}: give a finite z-score" in capsys.readouterr().err


def test_a_missing_file_name_is_scored_as_text_with_a_warning(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "out.jsonl")]) == 0
    assert "warning: no file" in capsys.readouterr().err


def test_explain_says_what_the_stage_does_with_its_numbers(capsys):
    assert main(["explain", "sample | topp 0.9 | watermark gamma=0.5 delta=1.5"]) == 0
    out = capsys.readouterr().out
    assert "watermark: adds 1.5 to the logits of the green tokens, a fraction 0.5" in out
    assert "'greenlist_ratio': 0.5, 'bias': 1.5" in out  # the transformers call


def test_detect_defaults_are_the_clauses():
    assert Settings.from_flags() == Settings.from_recipe("watermark")
    assert decode.parse(Settings.from_flags().clause) == decode.parse("watermark")


@pytest.fixture(scope="module")
def demo():
    return decode.load()


def test_round_trip_on_the_demo_model(demo, tmp_path, capsys):
    """200 sampled tokens with the watermark are detected (z > 4), without it they are not
    (z < 2), and the z-scores equal transformers' detector on the same ids. The watermarked
    run is compiled; its first tokens equal the same run's eager."""
    prompt, recipe = "ROMEO:", "sample | watermark | topp 0.9 | minlen 200 | max {}"
    marked = decode.generate(demo, recipe.format(200), [prompt], seed=3)
    eager = decode.generate(demo, recipe.format(16), [prompt], seed=3, compile=False)
    plain = decode.generate(demo, "sample | topp 0.9 | minlen 200 | max 200", [prompt], seed=3, compile=False)
    assert marked[0].sequences[0].ids[:16] == eager[0].sequences[0].ids
    ref = hf_detector(demo.config.vocab_size, demo.config.bos_id)
    runs = tmp_path / "runs.jsonl"
    runs.write_text(marked[0].dumps() + "\n" + plain[0].dumps() + "\n")
    assert main(["detect", str(runs), "--json"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(f["detect"], f["input"], f["line"], f["tokens"]) for f in found] == [(1, "run", 1, 200), (1, "run", 2, 200)]
    for f, comp in zip(found, (marked, plain)):
        want = ref(torch.tensor([comp[0].sequences[0].ids]), return_dict=True)
        assert (f["z"], f["green"], f["scored"]) == (want.z_score[0], want.num_green_tokens[0], 199)
    assert found[0]["z"] > 4 and found[0]["watermarked"]
    assert found[1]["z"] < 2 and not found[1]["watermarked"]
