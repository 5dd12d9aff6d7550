"""--dtype int8: weight-only int8 linears (runtime/quant.py). Its own accuracy tests: on the 20
demo prompts, its greedy tokens mostly equal float32's and its logits stay close (bounds pinned
loosely, measured values in the README); the compiled step equals the eager one; the int8
values are within half a step; a torch without the kernel is one message."""
from __future__ import annotations

import pytest
import torch

import decode
from decode.perf.accuracy import agreement
from decode.perf.bench import random_model, roofline_ms
from decode.runtime import ModelError
from decode.runtime.quant import Int8Linear
from test_variants_diversity import PROMPTS

# measured (README, benchmarks/results-issue21.md): 0.87 of tokens, 0.80 of prompts whole,
# max |logit error| 0.27 over a logit range of 39
IDENTICAL, WHOLE, MAX_ERR = 0.75, 0.6, 0.6


@pytest.fixture(scope="module")
def models():
    return decode.load(device="cpu"), decode.load(device="cpu", dtype="int8")


def test_int8_greedy_agrees_with_float32_on_the_demo_prompts(models):
    ref, q = models
    got = agreement(ref, q, PROMPTS, new=32)
    assert got["identical"] >= IDENTICAL and got["whole"] >= WHOLE
    assert 0 < got["max_logit_err"] <= MAX_ERR  # 0 would mean nothing was quantized


def test_a_wrong_scale_fails_the_agreement_bounds(models):
    # the bounds can fail: int8 weights read with scales 15% too large do
    ref, _ = models
    bad = decode.load(device="cpu", dtype="int8")
    for mod in bad.modules():
        if isinstance(mod, Int8Linear):
            mod.scales.mul_(1.15)
    got = agreement(ref, bad, PROMPTS, new=32)
    assert got["identical"] < IDENTICAL or got["max_logit_err"] > MAX_ERR


def test_the_int8_linears_hold_int8_weights_and_free_the_float_ones(models):
    _, q = models
    lins = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert q.quant == "int8" and q.output in lins and q.layers[0].attention.wqkv in lins
    assert all(m.weight.dtype == torch.int8 for m in lins)
    assert not [n for n, m in q.named_modules() if isinstance(m, torch.nn.Linear)]
    a = q.layers[0].attention
    assert a.wk.weight.data_ptr() == a.wqkv.weight[a.wq.weight.shape[0]:].data_ptr()  # views


def test_int8_values_are_within_half_a_step_and_the_layer_multiplies_by_them():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.linspace(0.01, 3, 64)[:, None]  # channels of very different size
    lin = Int8Linear.of(w)
    step = lin.scales.float()[:, None]
    assert ((lin.dequantized() - w).abs() <= 0.5 * step * 1.01 + step * (w.abs() == w.abs().amax(1, keepdim=True))).all()
    x = torch.randn(5, 96)
    want = x.bfloat16().float() @ lin.dequantized().t()
    assert torch.allclose(lin(x), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())
    assert lin(x[None]).shape == (1, 5, 64) and lin(x).dtype == torch.float32


def test_int8_compiled_step_equals_the_eager_one(models):
    _, q = models
    prompts = PROMPTS[:3]
    eager = decode.generate(q, "greedy | max 16", prompts, compile=False)
    compiled = decode.generate(q, "greedy | max 16", prompts, compile=True)
    assert [c.sequences[0].ids for c in compiled] == [c.sequences[0].ids for c in eager]
    assert compiled[0].provenance["dtype"] == "int8"


def test_the_int8_roofline_counts_int8_bytes():
    f32, i8 = random_model("24m"), random_model("24m", dtype="int8")
    ratio = roofline_ms(i8, 1, 16, 1e10) / roofline_ms(f32, 1, 16, 1e10)
    assert 0.25 < ratio < 0.26  # a quarter of the bytes, plus 2-byte scales and the KV reads


def test_int8_without_the_kernel_is_one_message(monkeypatch, capsys):
    def missing(*a, **k):
        raise NotImplementedError("Could not run 'aten::_weight_int8pack_mm' with arguments from the 'CPU' backend")

    monkeypatch.setattr(torch.ops.aten, "_weight_int8pack_mm", missing)
    with pytest.raises(ModelError, match=r"--dtype int8 needs .*_weight_int8pack_mm.* on cpu.*--dtype fp32"):
        decode.load(device="cpu", dtype="int8")
    from decode.cli import main

    assert main(["run", "greedy | max 2", "--prompt", "ROMEO:", "--dtype", "int8", "--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert "--dtype int8 needs" in err and "Traceback" not in err


def test_int8_is_asked_for_by_name_or_by_torch_dtype():
    from decode.runtime.loaders import parse_quant

    assert parse_quant("int8") == parse_quant("I8") == parse_quant(torch.int8) == "int8"
    assert parse_quant("bf16") is None and parse_quant(torch.float32) is None and parse_quant(None) is None
