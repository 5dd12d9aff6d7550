"""`decode bench`: ms/step of a recipe side by side with the reference `generate`, the
matmul floor (the step's matrix products alone, same rows, torch.mm) and the memory
bandwidth roofline (bytes a step must read / measured copy bandwidth). One process, one
run, interleaved repeats, best of each: ratios are what to read, not absolute times.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from decode.compiler.engine import run
from decode.compiler.guidance import guiding
from decode.compiler.plan import compile as lower

# name -> (vocab, dim, layers, heads, kv_heads, ff)
SHAPES = {
    "24m": (32000, 288, 6, 6, 6, 768),       # the reference shape (24.4M params)
    "110m": (32000, 768, 12, 12, 12, 2048),
    "1b": (32000, 2048, 16, 32, 8, 8192),
    "7b": (32000, 4096, 32, 32, 32, 11008),
}


@dataclass
class Row:
    name: str
    ms: float                  # per decoding step (all rows of the batch together)
    tok_s: float               # prompts x steps / time (one returned sequence per prompt)
    compile_s: float | None = None
    peak_mb: float | None = None
    note: str = ""


def random_model(shape: str, device=None, dtype=None, seed: int = 0):
    """A randomly initialised llama of a named shape, on our runtime (dtype "int8": its
    linears weight-only int8, runtime/quant.py)."""
    from decode.runtime import Llama, LlamaConfig
    from decode.runtime.loaders import parse_dtype, parse_quant
    from decode.runtime.memory import check_memory
    from decode.runtime.quant import check_kernel, quantize_int8_

    vocab, dim, layers, heads, kv, ff = SHAPES[shape]
    cfg = LlamaConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                      hidden_dim=ff, max_seq_len=2048, eos_ids=(2,), bos_id=1)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quant = parse_quant(dtype)
    dt = parse_dtype(None if quant else dtype, dev)
    if quant:
        check_kernel(dev)
    # built in float32 then cast, and fuse_() keeps a transposed copy of the output matrix
    need = cfg.n_params * 4 + cfg.vocab_size * cfg.dim * dt.itemsize
    smaller = ["demo", *list(SHAPES)[:list(SHAPES).index(shape)]]  # SHAPES grow in size
    check_memory(need, dev, f"The {shape} shape's weights need {need / 1e9:.1f} GB",
                 f"Pick a smaller --shape ({', '.join(smaller)}) or pass --model.")
    torch.manual_seed(seed)
    with torch.device(dev):
        m = Llama(cfg)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.ones_(p)
    m = m.to(dtype=dt).eval().requires_grad_(False).fuse_()
    if quant:
        quantize_int8_(m)
    return m


def _weights(model):
    """The weight matrices a step multiplies by, in the reference (unfused) layout."""
    for blk in model.layers:
        a, f = blk.attention, blk.feed_forward
        yield from (a.wq.weight, a.wk.weight, a.wv.weight, a.wo.weight,
                    f.w1.weight, f.w3.weight, f.w2.weight)
    yield model.output.weight


def _linears(model):
    """The linear layers a step runs (fused where the model fused them)."""
    for blk in model.layers:
        a, f = blk.attention, blk.feed_forward
        yield from (a.wqkv or a.wq, *(() if a.wqkv else (a.wk, a.wv)), a.wo, f.w13 or f.w1,
                    *(() if f.w13 else (f.w3,)), f.w2)
    yield model.output


def weight_bytes(model) -> int:
    """Bytes of weights one step reads: every linear's weights (int8 ones with their
    scales) and, of the embedding table, one row per new token (not counted here)."""
    return sum(b.numel() * b.element_size() for lin in _linears(model)
               for b in (lin.weight, getattr(lin, "scales", None)) if b is not None)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


_CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}


def floor_ms(model, rows: int, reps: int = 30, clock: str = "wall") -> float:
    """The step's matrix products alone (torch.mm, same rows), best time per step; for an
    int8 model, its own int8 linears."""
    if getattr(model, "quant", None):  # int8: the step's own int8 linears
        return _floor_quant(model, rows, reps, clock)
    ws = [w.detach() for w in _weights(model)]
    dev, dt = ws[0].device, ws[0].dtype
    xs = {w.shape[1]: torch.randn(rows, w.shape[1], device=dev, dtype=dt) for w in ws}
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps):
            _sync(dev)
            t0 = _CLOCK[clock]()
            for w in ws:
                torch.mm(xs[w.shape[1]], w.t())
            _sync(dev)
            best = min(best, _CLOCK[clock]() - t0)
    return best * 1e3


def _floor_quant(model, rows: int, reps: int, clock: str) -> float:
    w = model.tok_embeddings.weight
    lins = list(_linears(model))
    xs = {lin.weight.shape[1]: torch.randn(rows, lin.weight.shape[1], device=w.device, dtype=w.dtype)
          for lin in lins}
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps):
            _sync(w.device)
            t0 = _CLOCK[clock]()
            for lin in lins:
                lin(xs[lin.weight.shape[1]])
            _sync(w.device)
            best = min(best, _CLOCK[clock]() - t0)
    return best * 1e3


def bandwidth(device, mb: int = 512) -> float:
    """Measured copy bandwidth in bytes/s (read + write), best of a few."""
    n = mb * (1 << 20) // 4
    a = torch.ones(n, device=device)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        b.copy_(a)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * 4 / best


def roofline_ms(model, rows: int, ctx: int, bw: float) -> float:
    """Bytes one step must read (weights once, as stored: int8 ones with their scales; plus
    the K/V of `ctx` slots per row) / bw."""
    c = model.config
    w = weight_bytes(model)
    w += model.tok_embeddings.weight.element_size() * c.dim * rows  # embedding rows only
    kv = 2 * c.n_layers * rows * c.n_kv_heads * ctx * c.head_dim * model.tok_embeddings.weight.element_size()
    return (w + kv) / bw * 1e3


def _ours(model, plan, prompts):
    t = {}
    run(plan, model, prompts, seed=0, timings=t)
    return t


def to_hf(model):
    """The same weights as a transformers LlamaForCausalLM (for the reference timing); an
    int8 model's are given dequantized, in float32 (what its linears compute with)."""
    import transformers

    c = model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.max_seq_len,
        rope_theta=c.rope_theta, rope_scaling=c.rope_scaling, rms_norm_eps=c.norm_eps,
        tie_word_embeddings=c.tie_embeddings, bos_token_id=c.bos_id, eos_token_id=list(c.eos_ids))
    w = model.tok_embeddings.weight
    with torch.device(w.device):
        hf = transformers.LlamaForCausalLM(hf_cfg)
    sd = {"model.embed_tokens.weight": w, "model.norm.weight": model.norm.weight,
          "lm_head.weight": _float(model.output)}
    for i, blk in enumerate(model.layers):
        p, a, f = f"model.layers.{i}.", blk.attention, blk.feed_forward
        sd.update({p + "self_attn.q_proj.weight": _float(a.wq), p + "self_attn.k_proj.weight": _float(a.wk),
                   p + "self_attn.v_proj.weight": _float(a.wv), p + "self_attn.o_proj.weight": _float(a.wo),
                   p + "mlp.gate_proj.weight": _float(f.w1), p + "mlp.up_proj.weight": _float(f.w3),
                   p + "mlp.down_proj.weight": _float(f.w2),
                   p + "input_layernorm.weight": blk.attention_norm.weight,
                   p + "post_attention_layernorm.weight": blk.ffn_norm.weight})
    hf.load_state_dict(sd)
    return hf.to(w.dtype).eval()


def _float(lin):
    return lin.dequantized() if hasattr(lin, "dequantized") else lin.weight


def _hf_ms(hf, kwargs, ids, new: int, clock: str = "wall") -> float:
    """Reference ms/step: (generate(new) - generate(1)) / (new - 1), best of both."""
    dev = ids.device

    def once(n):
        _sync(dev)
        t0 = _CLOCK[clock]()
        with torch.inference_mode():
            hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                        min_new_tokens=n, **kwargs)
        _sync(dev)
        return _CLOCK[clock]() - t0

    return once


class Case:
    """One recipe on one model and batch, compiled and warmed up; time it with `run_once`.

    `bench` times one case; benchmarks/standard.py interleaves the runs of many cases so
    that a slow phase of a shared machine hits all of them alike.
    """

    def __init__(self, recipe, model, vs_hf: bool = False, batch: int = 1, new: int = 64,
                 prompt_len: int = 16, clock: str = "wall"):
        self.plan = _with_max(lower(recipe), new)
        self.model, self.batch, self.new, self.prompt_len, self.clock = model, batch, new, prompt_len, clock
        self.dev = next(model.parameters()).device
        g = torch.Generator().manual_seed(0)
        self.prompts = [[1] + torch.randint(3, model.config.vocab_size, (prompt_len - 1,), generator=g).tolist()
                        for _ in range(batch)]
        rows = self.plan.search(_probe_cfg(self.plan)).rows * (2 if guiding(self.plan) else 1)  # cfg: twice
        self.rows = batch * rows
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        _ours(model, self.plan, self.prompts)
        cold = time.perf_counter() - t0
        warm = _ours(model, self.plan, self.prompts)
        self.compile_s = max(0.0, cold - warm["prefill_s"] - warm["loop_s"])
        self.steps = warm["steps"]
        self.best = self.best_hf = float("inf")
        self.drafts = None
        self.hf_once = None
        self.note = ""
        if vs_hf:
            self._reference()
        self.peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        if self.dev.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.dev) / 2**20

    def _reference(self):
        from decode.dsl import hf_reference

        ref = hf_reference(self.plan.recipe)
        if ref.kwargs is None:
            self.note = f"no reference: {ref.reason}"
            return
        try:
            hf = to_hf(self.model)
        except ImportError:
            self.note = "transformers is not installed (pip install 'decode-dsl[test]')"
            return
        kwargs = {k: v for k, v in ref.kwargs.items() if k not in ("max_new_tokens", "min_new_tokens")}
        kwargs.setdefault("pad_token_id", self.model.config.eos_ids[0])
        ids = torch.tensor(self.prompts, device=self.dev)
        self.hf_once = _hf_ms(hf, kwargs, ids, self.new, self.clock)
        self.hf_once(2)  # warm up

    def plain(self) -> "Case | None":
        """For a speculative recipe (`draft`, `lookup`: its search has a proposer), the same
        recipe without the proposer's clause, on the same model and prompts; else None."""
        proposer = getattr(self.plan.search(_probe_cfg(self.plan)), "proposer", None)
        if proposer is None:
            return None
        text = " | ".join(c.canonical for c in self.plan.recipe.clauses if c.name != proposer.name)
        return Case(text or "greedy", self.model, batch=self.batch, new=self.new, prompt_len=self.prompt_len,
                    clock=self.clock)

    def run_once(self) -> None:
        """One timed run of ours (and of the reference, if any); keeps the best per step
        (a speculative run's steps: its tokens' positions, so that ms/step compares)."""
        t = _ours(self.model, self.plan, self.prompts)
        loop = t["loop_cpu_s" if self.clock == "cpu" else "loop_s"]
        self.best = min(self.best, loop / t["steps"])
        self.steps = t["steps"]
        if "rounds" in t:  # speculative: its drafts, this run's
            self.drafts = {"rounds": t["rounds"], "proposed": t["proposed"], "accepted": t["accepted"]}
        if self.hf_once is not None:
            n = self.new
            self.best_hf = min(self.best_hf, (self.hf_once(n) - self.hf_once(1)) / (n - 1))

    def result(self, floor: float | None = None, bw: float | None = None, shape: str = "",
               plain: "Case | None" = None) -> dict:
        """{"rows": [Row...], "ratios": {...}, "meta": {...}}; `floor` (ms) and `bw` (bytes/s)
        if measured already (a script timing many cases measures them once); `plain`, the
        recipe without its drafts (`Case.plain`), timed beside it."""
        ours = Row("decode", self.best * 1e3, self.batch / self.best, compile_s=self.compile_s,
                   peak_mb=self.peak_mb)
        out = [ours]
        if plain is not None:
            out.append(Row(f"without drafts: {plain.plan.recipe.canonical}", plain.best * 1e3,
                           self.batch / plain.best, compile_s=plain.compile_s))
        if self.hf_once is not None:
            out.append(Row("transformers generate", self.best_hf * 1e3, self.batch / self.best_hf))
        fl = floor if floor is not None else floor_ms(self.model, self.rows, clock=self.clock)
        out.append(Row(f"matmul floor ({self.rows} rows)", fl, self.batch / (fl / 1e3),
                       note="torch.mm of the step's weights"))
        bw = bw if bw is not None else bandwidth(self.dev)
        rf = roofline_ms(self.model, self.rows, self.prompt_len + self.new, bw)
        out.append(Row("bandwidth roofline", rf, self.batch / (rf / 1e3), note=f"{bw / 1e9:.1f} GB/s copy"))
        ratios = {"ours/floor": ours.ms / fl, "ours/roofline": ours.ms / rf}
        if self.hf_once is not None:
            ratios["reference/ours"] = self.best_hf * 1e3 / ours.ms
        if plain is not None:
            ratios["without drafts/ours"] = plain.best / self.best
        meta = {"recipe": self.plan.recipe.canonical, "fingerprint": self.plan.recipe.fingerprint,
                "shape": shape, "batch": self.batch, "rows": self.rows,
                "new": self.new, "steps": self.steps, "prompt_len": self.prompt_len, "device": str(self.dev),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
                "threads": torch.get_num_threads(), "clock": self.clock, "note": self.note}
        if self.drafts is not None:  # accepted / proposed over the last timed run (the same each run)
            meta.update(self.drafts, acceptance=self.drafts["accepted"] / max(1, self.drafts["proposed"]))
        return {"rows": out, "ratios": ratios, "meta": meta}


def bench(recipe, model=None, shape: str = "24m", vs_hf: bool = False, batch: int = 1,
          new: int = 64, prompt_len: int = 16, repeats: int = 5, device=None, dtype=None,
          progress=None, clock: str = "wall") -> dict:
    """Measure one recipe. Returns {"rows": [Row...], "ratios": {...}, "meta": {...}}. A
    speculative recipe (`draft`, `lookup`) is timed beside itself without the drafts (a row
    and the ratio "without drafts/ours": the speed-up), and meta gains rounds, proposed,
    accepted and acceptance (accepted / proposed drafts).

    clock="cpu" times this thread's CPU time instead of wall time: with one torch thread
    it ignores other processes on a shared machine (on CPU only; the GPU works async).
    """
    if model is None:
        model = random_model(shape, device, dtype)
    case = Case(recipe, model, vs_hf=vs_hf, batch=batch, new=new, prompt_len=prompt_len, clock=clock)
    plain = case.plain()  # draft / lookup: timed beside the recipe without them, interleaved
    for i in range(repeats):
        case.run_once()
        if plain is not None:
            plain.run_once()
        if progress:
            progress(i + 1, repeats)
    return case.result(shape=shape, plain=plain)


def _probe_cfg(plan):
    from decode.compiler.search.base import SearchConfig

    return SearchConfig(batch=1, params=plan.search_params, modifiers=plan.modifiers,
                        sampling=plan.sampling, eos=(2,), pad=2)


def _with_max(plan, new: int):
    from dataclasses import replace

    return replace(plan, max_new=new)
