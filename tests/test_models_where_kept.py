"""Models where users keep them: ids from the local Hugging Face cache (offline), chat templates."""
import hashlib
import json
import os
import shutil

import pytest

import decode
from decode.cli import main
from decode.runtime import ModelError
from decode.runtime.chat import chat_ids, find_template
from decode.runtime.tokenizer import HFTokenizer, SentencePieceTokenizer
from llama_factory import make_hf_llama

transformers = pytest.importorskip("transformers")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_cache(root, model_dir, repo="org/tiny", ref="main"):
    """The hub cache layout huggingface_hub writes: blobs by hash, snapshots of symlinks, refs."""
    top = root / ("models--" + repo.replace("/", "--"))
    snap = top / "snapshots" / COMMIT
    (top / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, top / "blobs" / digest)
        os.symlink(os.path.relpath(top / "blobs" / digest, snap), snap / f.name)
    (top / "refs").mkdir()
    (top / "refs" / ref).write_text(COMMIT)
    return snap


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = tmp_path_factory.mktemp("hub")
    model = make_hf_llama(d / "src", vocab=61, seed=5)
    fake_cache(d / "cache", model)
    return d / "cache"


def test_a_model_id_loads_from_the_local_hf_cache_by_ref_and_by_commit(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    direct = decode.load(str(hub / "models--org--tiny" / "snapshots" / COMMIT))
    for name in ("org/tiny", "org/tiny@main", f"org/tiny@{COMMIT}"):
        m = decode.load(name)
        assert m.source.endswith(COMMIT)
        assert all((a == b).all() for a, b in zip(m.state_dict().values(), direct.state_dict().values()))


def test_hf_home_is_read_when_hf_hub_cache_is_not_set(hub, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(hub, home / "hub")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    assert decode.load("org/tiny").config.vocab_size == 61


def test_a_model_id_not_in_the_cache_names_what_is_cached_and_the_fix(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(ModelError) as err:
        decode.load("org/other")
    msg = str(err.value)
    assert "org/other is not in the local Hugging Face cache" in msg and "cached there: org/tiny" in msg
    assert "huggingface-cli download org/other" in msg
    with pytest.raises(ModelError, match="at revision 'v2'"):
        decode.load("org/tiny@v2")
    assert main(["run", "greedy", "--model", "org/other", "--prompt-ids", "1,2", "--no-compile"]) == 1
    out = capsys.readouterr().err
    assert "Traceback" not in out and "cached there: org/tiny" in out


def test_an_empty_cache_says_nothing_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "none"))
    with pytest.raises(ModelError, match="nothing is cached there"):
        decode.load("org/tiny")


# -- chat templates -------------------------------------------------------------------------

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\\n' + messages[0]['content'] + "
          "'\\n<</SYS>>\\n\\n' %}{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
          "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
          "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + (sys if loop.first else '') "
          "+ message['content'] | trim + ' [/INST]' }}{% else %}{{ ' ' + message['content'] | trim + ' ' + "
          "eos_token }}{% endif %}{% endfor %}")
JSONY = ("{% for m in messages %}\n  {{- m | tojson }}\n{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
CHATS = [[{"role": "user", "content": "Wherefore art thou?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi  "},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Café, déjà vu? \"q\""}]]


@pytest.fixture(scope="module")
def sp_chat(sp_tokenizer_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("spchat")
    shutil.copy(sp_tokenizer_dir / "tokenizer.model", d / "tokenizer.model")
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": LLAMA2}))
    tok = SentencePieceTokenizer(d / "tokenizer.model")
    tok.chat_template = find_template(d, tok.specials)
    return tok, transformers.LlamaTokenizer.from_pretrained(d, legacy=True)


@pytest.mark.parametrize("chat", CHATS)
def test_a_chat_template_renders_and_tokenises_as_transformers(sp_chat, chat):
    ours, ref = sp_chat
    assert ours.chat_template.render(chat) == ref.apply_chat_template(chat, tokenize=False,
                                                                      add_generation_prompt=True)
    assert chat_ids(ours, chat) == ref.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)


def test_a_jinja_file_and_named_templates_are_found_like_transformers(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": JSONY}]}))
    from transformers.utils.chat_template_utils import render_jinja_template

    tpl = find_template(tmp_path, {})
    for chat in CHATS:  # the tojson filter and the whitespace control as transformers has them
        ref = render_jinja_template(conversations=[chat], chat_template=JSONY, add_generation_prompt=True)[0]
        assert tpl.render(chat) == ref[0]
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!")
    assert find_template(tmp_path, {}).render(CHATS[0]) == "Wherefore art thou?!"


def test_chat_runs_end_to_end_and_bad_templates_get_one_message(sp_chat, tmp_path, capsys):
    model_dir = make_hf_llama(tmp_path / "m", vocab=400, seed=2)
    shutil.copy(sp_chat[0].path, model_dir / "tokenizer.model")
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": LLAMA2}))
    base = ["run", "greedy | max 3", "--model", str(model_dir), "--no-compile", "--json"]
    assert main(base + ["--chat", "--system", "Be brief.", "--prompt", "Hi"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["prompt_ids"] == chat_ids(sp_chat[0], [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "Hi"}])
    assert main(base + ["--system", "x", "--prompt", "Hi"]) == 2
    assert "add --chat" in capsys.readouterr().err
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% if %}"}))
    assert main(base + ["--chat", "--prompt", "Hi"]) == 1
    err = capsys.readouterr().err
    assert "the chat template does not parse" in err and "Traceback" not in err
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": LLAMA2}))
    (model_dir / "chat_template.jinja").write_text("{{ raise_exception('only user turns') }}")
    assert main(base + ["--chat", "--prompt", "Hi"]) == 1
    assert "refused these messages (only user turns)" in capsys.readouterr().err
    (model_dir / "chat_template.jinja").unlink()
    (model_dir / "tokenizer_config.json").write_text("{}")
    assert main(base + ["--chat", "--prompt", "Hi"]) == 1
    assert "ships no chat template" in capsys.readouterr().err


LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
          "+ m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def test_a_tokenizer_json_chat_template_tokenises_its_special_tokens_as_transformers(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from llama_factory import CORPUS

    specials = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3}))
    ours = HFTokenizer(tmp_path / "tokenizer.json")
    ours.chat_template = find_template(tmp_path, ours.specials)
    ref = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
    for chat in CHATS:
        assert ours.chat_template.render(chat) == ref.apply_chat_template(chat, tokenize=False,
                                                                          add_generation_prompt=True)
        ids = chat_ids(ours, chat)
        assert ids == ref.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
        assert ids.count(tk.token_to_id("<|eot_id|>")) == len(chat)
