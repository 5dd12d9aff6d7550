"""Every checkpoint, tokenizer and prompt mistake is a ModelError naming the file and the fix."""
import json
import re
import struct

import pytest
import torch

from decode.runtime import ModelError, check_fits, load, require_tokenizer
from decode.runtime.tokenizer import SentencePieceTokenizer
from llama_factory import make_hf_llama, save_llama2c, save_meta


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_hf_llama(tmp_path_factory.mktemp("hf"), layers=1)


@pytest.fixture
def copy(hf_dir, tmp_path):
    """A fresh editable copy of the checkpoint directory."""
    import shutil

    return shutil.copytree(hf_dir, tmp_path / "ckpt")


def edit_json(path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def edit_config(folder, **changes):
    edit_json(folder / "config.json", **changes)


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


def test_weights_not_matching_the_config_name_the_key_the_tensor_and_its_shape(copy):
    edit_config(copy, intermediate_size=80)
    msg = raises(r"config.json: intermediate_size=80, but tensor 'model.layers.0.mlp.gate_proj"
                 r".weight' in .*model.safetensors has shape \[64, 32\]", copy)
    assert "does not belong to these weights" in msg


def test_config_with_more_layers_than_the_weights_says_how_many_they_hold(copy):
    edit_config(copy, num_hidden_layers=2)
    raises(r"config.json: num_hidden_layers=2, but the weights hold 1 layer\(s\), numbered 0 "
           r"to 0", copy)


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
                                         r"model's context is 256.*at most 56 .* at most 199"):
        check_fits(200, 57, config)


@pytest.mark.parametrize("prompt, new, advice", [
    (1, 300, r"Lower `max` to at most 255\.$"),
    (10, 256, r"Lower `max` to at most 246\.$"),
    (300, 10, r"The prompt alone fills the context\. Shorten the prompt to at most 246 tokens\.$"),
    (256, 1, r"The prompt alone fills the context\. Shorten the prompt to at most 255 tokens\.$"),
    (300, 400, r"The prompt alone fills the context\. Shorten the prompt and lower `max` so that "
               r"together they are at most 256\.$"),
])
def test_context_overflow_advice_is_only_what_can_work(prompt, new, advice):
    from decode.runtime import LlamaConfig

    config = LlamaConfig(vocab_size=97, dim=32, n_layers=1, n_heads=4, n_kv_heads=2,
                         hidden_dim=64, max_seq_len=256)
    with pytest.raises(ModelError, match=advice) as e:
        check_fits(prompt, new, config)
    assert "at most 0" not in str(e.value) and "at most -" not in str(e.value)


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


# -- claimed sizes are checked against the files before anything of that size is built -----

LLAMA2C_FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("field, fits", [("dim", 32), ("hidden_dim", 64), ("n_layers", 1)])
def test_llama2c_header_claiming_2_to_the_30_names_the_field_and_what_the_file_holds(
        hf_dir, tmp_path, version, field, fits):
    path = save_llama2c(hf_dir, tmp_path / "m.bin", version=version)
    data = bytearray(path.read_bytes())
    struct.pack_into("i", data, (8 if version else 0) + 4 * LLAMA2C_FIELDS.index(field), 2**30)
    path.write_bytes(data)
    raises(rf"m.bin: its header claims {field}=1073741824, which needs a file of \d+ bytes, but "
           rf"the file is {len(data)} bytes, which holds {field}={fits} .*header is corrupt", path)


@pytest.mark.parametrize("value", [0, -7])
@pytest.mark.parametrize("field", ["dim", "n_layers", "n_heads", "seq_len"])
def test_llama2c_header_field_zero_or_negative_is_named(hf_dir, tmp_path, field, value):
    path = save_llama2c(hf_dir, tmp_path / "m.bin", version=1)
    data = bytearray(path.read_bytes())
    struct.pack_into("i", data, 8 + 4 * LLAMA2C_FIELDS.index(field), value)
    path.write_bytes(data)
    raises(rf"m.bin: header field {field} is {value}, expected a positive integer", path)


@pytest.mark.parametrize("changes, match", [
    (dict(num_hidden_layers=2**30), r"num_hidden_layers=1073741824, but the weights hold 1 layer"),
    (dict(vocab_size=2**30), r"vocab_size=1073741824, but tensor 'model.embed_tokens.weight' in "
                             r".*model.safetensors has shape \[97, 32\]"),
    (dict(hidden_size=2**30 + 4, head_dim=None), r"hidden_size=1073741828, num_attention_heads=4 "
                                                 r"and num_key_value_heads=2 are impossible"),
    (dict(hidden_size=2**30, head_dim=None), r"hidden_size=1073741824, but tensor "
                                             r"'model.embed_tokens.weight' .* has shape \[97, 32\]"),
    (dict(intermediate_size=2**30), r"intermediate_size=1073741824, but tensor "
                                    r"'model.layers.0.mlp.gate_proj.weight'"),
])
def test_hf_config_claiming_huge_sizes_is_checked_against_the_tensors(copy, changes, match):
    edit_config(copy, **changes)
    raises(r"config.json: " + match, copy)


@pytest.fixture(scope="module")
def meta_dir(hf_dir, tmp_path_factory):
    return save_meta(hf_dir, tmp_path_factory.mktemp("meta"), shards=2)


@pytest.fixture
def meta(meta_dir, tmp_path):
    import shutil

    return shutil.copytree(meta_dir, tmp_path / "meta")


def edit_params(folder, **changes):
    edit_json(folder / "params.json", **changes)


def test_meta_params_claiming_2_to_the_30_layers_says_how_many_the_weights_hold(meta):
    edit_params(meta, n_layers=2**30)
    raises(r"params.json: n_layers=1073741824, but the weights hold 1 layer\(s\)", meta)


# -- configs that parse but are wrong: one message naming the file and the key --------------

def _index_without_weight_map(d):
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}}))


def _shard_missing_a_tensor(d):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {name: "model.safetensors" for name in sd}}))
    save_file({k: v for k, v in sd.items() if k != "lm_head.weight"}, str(d / "model.safetensors"))


HF_CASES = [  # (what is wrong, edit of the copied HF directory, the message)
    ("config.json []", lambda d: (d / "config.json").write_text("[]"),
     r"config.json holds a JSON list, expected an object \{...\} of settings"),
    ("num_attention_heads 0", lambda d: edit_config(d, num_attention_heads=0),
     r"config.json: key 'num_attention_heads' is 0, expected a positive integer"),
    ("hidden_size string", lambda d: edit_config(d, hidden_size="32"),
     r"config.json: key 'hidden_size' is \"32\", expected a positive integer"),
    ("rope_scaling string", lambda d: edit_config(d, rope_scaling="yes"),
     r"config.json: key 'rope_scaling' is \"yes\", expected an object"),
    ("rope_scaling factor", lambda d: edit_config(d, rope_scaling={"rope_type": "linear"}),
     r"config.json lacks the key 'rope_scaling.factor' \(a positive number\)"),
    ("rms_norm_eps string", lambda d: edit_config(d, rms_norm_eps="tiny"),
     r"config.json: key 'rms_norm_eps' is \"tiny\", expected a positive number"),
    ("num_hidden_layers missing", lambda d: edit_config(d, num_hidden_layers=None),
     r"config.json lacks the key 'num_hidden_layers' \(a positive integer\)"),
    ("eos outside the vocabulary",
     lambda d: (d / "generation_config.json").write_text('{"eos_token_id": [2, 500]}'),
     r"generation_config.json: key 'eos_token_id' is 500, outside the vocabulary \(ids 0..96"),
    ("generation_config []", lambda d: (d / "generation_config.json").write_text("[]"),
     r"generation_config.json holds a JSON list, expected an object"),
    ("generation_config not JSON", lambda d: (d / "generation_config.json").write_text("{bos"),
     r"generation_config.json could not be read as JSON"),
    ("index without weight_map", _index_without_weight_map,
     r"model.safetensors.index.json lacks the key 'weight_map' \(an object mapping tensor names"),
    ("shard missing a tensor", _shard_missing_a_tensor,
     r"index.json places tensor 'lm_head.weight' in .*model.safetensors, but that file does not "
     r"hold it"),
]


@pytest.mark.parametrize("edit, match", [c[1:] for c in HF_CASES], ids=[c[0] for c in HF_CASES])
def test_wrong_hf_config_names_the_file_and_the_key(copy, edit, match):
    edit(copy)
    raises(match, copy)


def _shard_lacks(d):
    part = torch.load(d / "consolidated.01.pth")
    del part["layers.0.attention.wq.weight"]
    torch.save(part, d / "consolidated.01.pth")


META_CASES = [
    ("params.json []", lambda d: (d / "params.json").write_text("[]"),
     r"params.json holds a JSON list, expected an object"),
    ("params.json without dim", lambda d: edit_params(d, dim=None),
     r"params.json lacks the key 'dim' \(a positive integer\)"),
    ("n_heads not dividing dim", lambda d: edit_params(d, n_heads=5),
     r"params.json: dim=32, n_heads=5 and n_kv_heads=2 are impossible"),
    ("n_heads not matching the weights", lambda d: edit_params(d, n_heads=8),
     r"params.json: n_kv_heads=2 with n_heads=8 \(8 rows\), but tensor "
     r"'layers.0.attention.wk.weight' in .* has shape \[16, 32\]"),
    ("a shard missing a tensor", _shard_lacks,
     r"consolidated.01.pth lacks tensor 'layers.0.attention.wq.weight', which .*consolidated.00.pth "
     r"holds"),
    (".pth holding a list", lambda d: torch.save([torch.zeros(2)], d / "consolidated.00.pth"),
     r"consolidated.00.pth holds a list, not a state dict"),
]


@pytest.mark.parametrize("edit, match", [c[1:] for c in META_CASES], ids=[c[0] for c in META_CASES])
def test_wrong_meta_params_or_weights_name_the_file_and_the_key(meta, edit, match):
    edit(meta)
    raises(match, meta)


@pytest.mark.parametrize("text, match", [
    ("[]", r"tokenizer_config.json holds a JSON list, expected an object"),
    ('{"bos_token": 5}', r"tokenizer_config.json: key 'bos_token' is 5, expected a string or an "
                         r"object \{\"content\": \"...\"\}"),
    ('{"bos_token": ', r"tokenizer_config.json could not be read as JSON"),
])
def test_wrong_tokenizer_config_names_the_file_and_the_key(copy, text, match):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"<s>": 0, "a": 1}, unk_token="<s>")).save(str(copy / "tokenizer.json"))
    (copy / "tokenizer_config.json").write_text(text)
    raises(match, copy)


# -- memory: refuse, before allocating, what cannot fit -------------------------------------

GB = 10**9


@pytest.fixture
def little_memory(monkeypatch):
    """This machine has 2 GB available, and allocating a KV cache or a model is a bug."""
    from decode.runtime import Llama, memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * GB)

    def allocated(*a, **k):
        raise AssertionError("allocated before checking the memory")
    monkeypatch.setattr(Llama, "new_cache", allocated)
    return allocated


@pytest.mark.parametrize("recipe, rows", [("beam 100000", 100000), ("sample 100000", 100000)])
def test_run_wider_than_memory_says_what_it_needs_and_what_to_lower(hf_dir, capsys, little_memory,
                                                                    recipe, rows):
    from decode.cli import main

    code = main(["run", recipe, "--model", str(hf_dir), "--prompt-ids", "1,5,7", "--no-compile"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert re.search(rf"Decoding needs [\d.]+ GB \({rows} rows x \d+ slots: KV cache [\d.]+ GB, "
                     rf"other buffers [\d.]+ GB\); this machine has 2.0 GB available\. Lower the "
                     rf"beam/sample width \(now {rows}\)", err), err
    assert "Traceback" not in err


def test_bench_shape_past_memory_is_refused_before_building_it(capsys, monkeypatch, little_memory):
    from decode.cli import main
    from decode.runtime import Llama

    monkeypatch.setattr(Llama, "__init__", little_memory)
    code = main(["bench", "greedy", "--shape", "7b", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert re.search(r"The 7b shape's weights need 27.5 GB; this machine has 2.0 GB available. "
                     r"Pick a smaller --shape \(demo, 24m, 110m, 1b\) or pass --model", err), err


def test_memory_check_is_skipped_when_the_free_memory_is_unknown(monkeypatch):
    from decode.runtime import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    memory.check_memory(10**30, torch.device("cpu"), "needs a lot", "")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/meminfo"), reason="Linux only")
def test_available_memory_on_linux_is_read_from_meminfo():
    from decode.runtime import memory

    have = memory.available_bytes(torch.device("cpu"))
    assert 0 < have <= 1024 * int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read())[1])
