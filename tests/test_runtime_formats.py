"""One checkpoint saved as HF (single, sharded, .bin), Meta (1 and 2 shards) and llama2.c
(legacy and version 1) loads to identical logits."""
import pytest
import torch

from llama_factory import make_hf_llama, save_llama2c, save_meta

pytest.importorskip("transformers")
from decode.runtime import load  # noqa: E402


@pytest.fixture(scope="module", params=[dict(kv_heads=2), dict(kv_heads=4, tie=True)],
                ids=["gqa-untied", "mha-tied"])
def hf_dir(request, tmp_path_factory):
    return make_hf_llama(tmp_path_factory.mktemp("hf"), **request.param)


def reference_logits(path):
    ids = torch.tensor([[1, 5, 9, 33, 60, 2, 7]])
    with torch.no_grad():
        return load(path, device="cpu")(ids)


def test_meta_and_llama2c_formats_give_identical_logits(hf_dir, tmp_path):
    want = reference_logits(hf_dir)
    for path in (save_meta(hf_dir, tmp_path / "meta1"),
                 save_meta(hf_dir, tmp_path / "meta2", shards=2),
                 save_llama2c(hf_dir, tmp_path / "v0.bin", version=0),
                 save_llama2c(hf_dir, tmp_path / "v1.bin", version=1)):
        assert torch.equal(reference_logits(path), want), path


def test_sharded_and_pytorch_bin_hf_checkpoints_give_identical_logits(hf_dir, tmp_path):
    from transformers import LlamaForCausalLM

    want = reference_logits(hf_dir)
    hf = LlamaForCausalLM.from_pretrained(hf_dir)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    hf.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert (tmp_path / "bin" / "pytorch_model.bin").exists()
    for path in (tmp_path / "sharded", tmp_path / "bin"):
        assert torch.equal(reference_logits(path), want), path


def test_config_carries_context_and_special_ids_from_the_checkpoint(tmp_path):
    d = make_hf_llama(tmp_path / "hf", max_pos=128, eos_id=5, bos_id=4)
    (d / "generation_config.json").write_text('{"eos_token_id": [5, 6], "pad_token_id": 0}')
    c = load(d, device="cpu").config
    assert (c.max_seq_len, c.bos_id, c.eos_ids, c.pad_id) == (128, 4, (5, 6), 0)
    c2 = load(save_llama2c(d, tmp_path / "m.bin"), device="cpu").config
    assert (c2.max_seq_len, c2.bos_id, c2.eos_ids) == (128, None, ())


def test_dtype_names_give_weights_of_that_dtype_and_fp32_logits(hf_dir):
    m = load(hf_dir, device="cpu", dtype="bf16")
    assert m.output.weight.dtype == torch.bfloat16 and m.inv_freq.dtype == torch.float32
    logits = m(torch.tensor([[1, 5, 9]]))
    assert logits.dtype == torch.float32
    assert (logits - reference_logits(hf_dir)[:, :3]).abs().max() < 0.1
    assert load(hf_dir, device="cpu").output.weight.dtype == torch.float32
    assert load(hf_dir, device="cpu", dtype=torch.float16).output.weight.dtype == torch.float16
