"""Every checkpoint, tokenizer and prompt mistake is a ModelError naming the file and the fix."""
import json
import struct

import pytest
import torch

from decode.runtime import ModelError, check_fits, load, require_tokenizer
from decode.runtime.tokenizer import SentencePieceTokenizer
from llama_factory import make_hf_llama, save_llama2c


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_hf_llama(tmp_path_factory.mktemp("hf"), layers=1)


@pytest.fixture
def copy(hf_dir, tmp_path):
    """A fresh editable copy of the checkpoint directory."""
    import shutil

    return shutil.copytree(hf_dir, tmp_path / "ckpt")


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def raises(match, path, **kw):
    with pytest.raises(ModelError, match=match) as e:
        load(path, device="cpu", **kw)
    return str(e.value)


def test_missing_path_names_it_and_the_accepted_formats(tmp_path):
    msg = raises("does not exist", tmp_path / "nope")
    assert str(tmp_path / "nope") in msg and "--model" in msg and "config.json" in msg


def test_no_path_without_the_demo_files_says_how_to_pass_one(tmp_path, monkeypatch):
    from decode.runtime import loaders

    monkeypatch.setattr(loaders, "DEMO_DIR", tmp_path)
    msg = raises("demo model is missing from this installation", None)
    assert "--model PATH" in msg and "reinstall" in msg


def test_directory_of_unknown_files_says_what_was_expected(tmp_path):
    raises("Cannot tell what checkpoint .* is: expected an HF llama directory", tmp_path)


def test_config_without_weights_lists_the_expected_files(copy):
    (copy / "model.safetensors").unlink()
    raises(r"has a config.json but no weights: expected model.safetensors", copy)


def test_truncated_safetensors_is_reported_as_corrupt(copy):
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    msg = raises("corrupt or truncated", copy)
    assert "model.safetensors" in msg and "Re-download" in msg


def test_garbage_safetensors_is_reported_as_corrupt(copy):
    (copy / "model.safetensors").write_bytes(b"\x07" * 100)
    raises("model.safetensors is corrupt or truncated", copy)


def test_missing_shard_names_the_shard_and_the_index(copy):
    (copy / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    raises(r"model-00002-of-00002.safetensors is listed in .*index.json but missing", copy)


def test_weights_not_matching_the_config_name_the_tensor_and_both_shapes(copy):
    edit_config(copy, intermediate_size=80)
    msg = raises(r"'model.layers.0.mlp.gate_proj.weight' in .*model.safetensors has shape "
                 r"\[64, 32\] but the config .* implies \[80, 32\]", copy)
    assert "different models" in msg


def test_config_with_more_layers_than_the_weights_reports_the_missing_tensor(copy):
    edit_config(copy, num_hidden_layers=2)
    raises(r"tensor 'model.layers.1.input_layernorm.weight' of .*ckpt is missing "
           r"\(9 tensor\(s\) missing in all\)", copy)


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"]),
     r"model_type='gpt2' \(GPT2LMHeadModel\); only llama-family models"),
    (dict(attention_bias=True), "unsupported architecture: attention_bias"),
    (dict(hidden_act="gelu"), "unsupported architecture: hidden_act='gelu'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_scaling type 'yarn' is not supported"),
])
def test_unsupported_architecture_says_what_is_not_supported(copy, changes, match):
    edit_config(copy, **changes)
    raises(match, copy)


@pytest.mark.parametrize("legacy_pickle", [False, True])
def test_pytorch_bin_holding_objects_is_refused_not_executed(copy, legacy_pickle):
    import argparse

    (copy / "model.safetensors").unlink()
    torch.save({"w": argparse.Namespace()}, copy / "pytorch_model.bin",
               _use_new_zipfile_serialization=not legacy_pickle)
    raises(r"pytorch_model.bin could not be read as a plain tensor file: it holds Python objects .*no pickled code", copy)


def test_truncated_llama2c_file_reports_expected_size(hf_dir, tmp_path):
    path = save_llama2c(hf_dir, tmp_path / "m.bin")
    path.write_bytes(path.read_bytes()[:-8])
    raises(r"m.bin is \d+ bytes but its header .* implies \d+: the file is truncated", path)


def test_quantized_llama2c_version_is_refused(tmp_path):
    path = tmp_path / "q.bin"
    path.write_bytes(struct.pack("Ii7i", 0x616B3432, 2, 8, 16, 1, 2, 2, 10, 16) + b"\0" * 220)
    raises("llama2.c format version 2; only the float32 formats", path)


def test_unknown_dtype_lists_the_accepted_names(hf_dir):
    raises("Unknown dtype 'fp8': use one of fp32, bf16, fp16", hf_dir, dtype="fp8")


def test_prompt_longer_than_the_context_says_by_how_much(hf_dir):
    config = load(hf_dir, device="cpu").config
    check_fits(200, 56, config)
    with pytest.raises(ModelError, match=r"200 tokens .* 57 new .* needs 257 positions, but the "
                                         r"model's context is 256.*at most 199 .* at most 56"):
        check_fits(200, 57, config)


def test_text_prompt_without_a_tokenizer_says_where_it_looked(hf_dir):
    m = load(hf_dir, device="cpu")
    assert m.tokenizer is None
    with pytest.raises(ModelError, match=r"need a tokenizer, but none was found next to \S*hf\d*\b.*tokenizer.model"):
        require_tokenizer(m)


def test_bad_tokenizer_model_is_reported(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="tokenizer.model is not a sentencepiece model"):
        SentencePieceTokenizer(tmp_path / "tokenizer.model")


def test_tokenizer_beside_the_weights_is_loaded(copy, sp_tokenizer_dir):
    import shutil

    shutil.copy(sp_tokenizer_dir / "tokenizer.model", copy / "tokenizer.model")
    m = load(copy, device="cpu")
    assert m.tokenizer.decode(m.tokenizer.encode("Romeo")) == "Romeo"
    assert require_tokenizer(m) is m.tokenizer
