"""Tiny random llama checkpoints and tokenizers, made in the test, in every supported format.

    >>> d = make_hf_llama(tmp_path / "hf", kv_heads=2, tie=True)
    >>> save_meta(d, tmp_path / "meta"); save_llama2c(d, tmp_path / "m.bin", version=1)
    >>> make_sp_tokenizer(tmp_path / "tok")          # -> tmp_path/tok/tokenizer.model
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

CORPUS = [
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
    "To be, or not to be, that is the question.",
    "All the world's a stage, and all the men and women merely players.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "The quality of mercy is not strained; it droppeth as the gentle rain from heaven.",
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "Café, naïve, Ærøskøbing — déjà vu. Über straße 1234 5678.",
    "東京 京都 大阪 — 日本語のテキスト。 Ελληνικά κείμενα.",
    "  indented line\twith tab\nand newline  ",
]


def make_hf_llama(dir, *, vocab=97, dim=32, layers=2, heads=4, kv_heads=2, ff=64, tie=False,
                  rope_theta=10000.0, rope_scaling=None, max_pos=256, seed=0, eos_id=2,
                  bos_id=1) -> Path:
    """A random fp32 transformers LlamaForCausalLM saved with save_pretrained (safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=ff,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, max_position_embeddings=max_pos,
                      rope_theta=rope_theta, rope_scaling=rope_scaling, tie_word_embeddings=tie,
                      bos_token_id=bos_id, eos_token_id=eos_id, initializer_range=0.1,
                      rms_norm_eps=1e-5)  # llama2.c has no eps field: it is 1e-5
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1 so that a misplaced norm weight shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
    dir = Path(dir)
    model.save_pretrained(dir, safe_serialization=True)
    return dir


def meta_state(hf_dir) -> tuple[dict, dict]:
    """(params.json dict, Meta-named, Meta-layout state dict) of an HF checkpoint."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    sd = load_file(str(Path(hf_dir) / "model.safetensors"))
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"],
           "norm.weight": sd["model.norm.weight"],
           "output.weight": sd.get("lm_head.weight", sd["model.embed_tokens.weight"])}
    names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
             "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
             "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
             "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg["num_hidden_layers"]):
        for hf, meta in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if meta in ("attention.wq", "attention.wk"):
                w = hf_to_meta_qk(w, heads if meta == "attention.wq" else kv)
            out[f"layers.{i}.{meta}.weight"] = w
    params = {"dim": cfg["hidden_size"], "n_layers": cfg["num_hidden_layers"], "n_heads": heads,
              "n_kv_heads": kv, "vocab_size": cfg["vocab_size"], "multiple_of": 32,
              "norm_eps": cfg["rms_norm_eps"], "rope_theta": cfg["rope_theta"],
              "max_seq_len": cfg["max_position_embeddings"]}
    return params, out


def hf_to_meta_qk(w, n_heads):
    """HF rotate-half rows -> Meta interleaved-pair rows (inverse of the HF conversion)."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def save_meta(hf_dir, out_dir, shards: int = 1) -> Path:
    """Write params.json + consolidated.NN.pth, split model-parallel like Meta's release."""
    params, sd = meta_state(hf_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "params.json").write_text(json.dumps(params))
    for s in range(shards):
        part = {}
        for k, w in sd.items():
            kind = k.split(".")[-2]
            if w.dim() == 1:
                part[k] = w.clone()
            else:
                d = 1 if kind in ("wo", "w2", "tok_embeddings") else 0
                part[k] = w.chunk(shards, dim=d)[s].clone()
        part["rope.freqs"] = torch.zeros(params["dim"] // params["n_heads"] // 2)
        torch.save(part, out_dir / f"consolidated.{s:02d}.pth")
    return out_dir


def save_llama2c(hf_dir, out_file, version: int = 1) -> Path:
    """Write a karpathy/llama2.c .bin: version 0 (legacy header) or 1 ("ak42")."""
    params, sd = meta_state(hf_dir)
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    shared = bool(cfg.get("tie_word_embeddings"))
    L = params["n_layers"]
    per = lambda part: [sd[f"layers.{i}.{part}.weight"] for i in range(L)]  # noqa: E731
    hidden = sd["layers.0.feed_forward.w1.weight"].shape[0]
    vocab, seq = params["vocab_size"], params["max_seq_len"]
    ints = [params["dim"], hidden, L, params["n_heads"], params["n_kv_heads"], vocab, seq]
    att = per("attention.wq") + per("attention.wk") + per("attention.wv") + per("attention.wo")
    ffn = per("feed_forward.w1") + per("feed_forward.w2") + per("feed_forward.w3")
    head = [] if shared else [sd["output.weight"]]
    if version == 0:
        ints[5] = vocab if shared else -vocab
        half = params["dim"] // params["n_heads"] // 2
        freqs = torch.zeros(seq, half)
        header = struct.pack("7i", *ints)
        weights = [sd["tok_embeddings.weight"], *per("attention_norm"), *att, *per("ffn_norm"),
                   *ffn, sd["norm.weight"], freqs, freqs, *head]
    else:
        header = struct.pack("I", 0x616B3432) + struct.pack("i", 1) + struct.pack("7i", *ints)
        header += struct.pack("B", int(shared))
        header += b"\0" * (256 - len(header))
        weights = [*per("attention_norm"), *per("ffn_norm"), sd["norm.weight"],
                   sd["tok_embeddings.weight"], *att, *ffn, *head]
    out_file = Path(out_file)
    with open(out_file, "wb") as f:
        f.write(header)
        for w in weights:
            f.write(w.detach().contiguous().to(torch.float32).numpy().tobytes())
    return out_file


def make_sp_tokenizer(dir, vocab: int = 400) -> Path:
    """Train a llama-style sentencepiece BPE on CORPUS; save tokenizer.model and the
    transformers LlamaTokenizer files (tokenizer_config.json) beside it."""
    import io

    import sentencepiece as spm

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=buf, vocab_size=vocab,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, minloglevel=2)
    (dir / "tokenizer.model").write_bytes(buf.getvalue())
    from transformers import LlamaTokenizer

    LlamaTokenizer(str(dir / "tokenizer.model"), legacy=True).save_pretrained(dir)
    return dir / "tokenizer.model"
