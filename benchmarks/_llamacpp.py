"""llama.cpp through llama-cpp-python's C API (no Python sampling loop of its own): load a
GGUF file, read the logits of a prompt, and time a generation loop shaped like decode's
step (pick the next token of every sequence with llama.cpp's sampler chain, then one
`llama_decode` of one token per sequence).

    lc = LlamaCpp("bench-f32.gguf", threads=2)
    lc.logits([1, 5, 7])                                   # [3, vocab] float32
    ms, ids = lc.generate([[1, 5, 7]], new=64, sampler="greedy")

The KV cache is float32 (llama.cpp's default is f16) and attention runs without flash
attention (its CPU kernel rounds through f16), as decode's and transformers' do, so that
logits can be compared to 1e-3 and the step does the same work.
"""
from __future__ import annotations

import ctypes
import importlib.util
import time

import numpy as np

SAMPLERS = ("greedy", "nucleus")  # nucleus: temp 0.7 then top-p 0.9, standard.py's "nucleus"
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def available() -> str | None:
    """None if llama-cpp-python and gguf are installed, else why not (one line)."""
    missing = [pkg for pkg, mod in (("gguf", "gguf"), ("llama-cpp-python", "llama_cpp"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed (pip install -e '.[bench]'; llama-cpp-python "
                f"builds llama.cpp from source: a few minutes)")
    return None


def _quiet(level, text, user_data):  # llama.cpp's log lines would drown the tables
    return None


class LlamaCpp:
    """One GGUF model and one context for `seqs` sequences of up to `n_ctx` tokens in all."""

    def __init__(self, path, threads: int, seqs: int = 1, n_ctx: int = 1024):
        import llama_cpp as L

        self.L = L
        self._log = L.llama_log_callback(_quiet)  # kept: the C side holds the pointer
        L.llama_log_set(self._log, ctypes.c_void_p(0))
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        # no repacked weight buffers: on x86 the only one for q8_0 is AMX's, and this
        # llama.cpp (0.3.36's) crashes in it on the benchmark shape (f32 has none)
        mp.use_extra_bufts = False
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, n_ctx, n_ctx, seqs
        cp.n_threads = cp.n_threads_batch = threads
        cp.type_k = cp.type_v = L.GGML_TYPE_F32
        # llama.cpp's CPU flash attention rounds through f16 even with an f32 cache: its
        # logits then differ from decode's by 8.8e-4 at the benchmark shape, 6e-7 without
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {path}")
        self.vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(n_ctx, 0, seqs)
        self.threads, self.seqs = threads, seqs

    def close(self) -> None:
        L = self.L
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def _decode(self, toks: list[list[int]], start: int, all_logits: bool = False) -> None:
        """Sequence s's tokens toks[s] at positions start, start + 1, ...; logits for the last
        token of each sequence (or for every token)."""
        b, n = self.batch, 0
        for s, ids in enumerate(toks):
            for j, t in enumerate(ids):
                b.token[n], b.pos[n], b.n_seq_id[n] = t, start + j, 1
                b.seq_id[n][0] = s
                b.logits[n] = all_logits or j == len(ids) - 1
                n += 1
        b.n_tokens = n
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _clear(self) -> None:
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)

    def logits(self, ids: list[int]) -> np.ndarray:
        """The logits at every position of one prompt, [len(ids), vocab] float32."""
        self._clear()
        self._decode([ids], 0, all_logits=True)
        return np.stack([np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.vocab,)).copy()
                         for i in range(len(ids))])

    def _chain(self, sampler: str, seed: int):
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampler == "greedy":
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        elif sampler == "nucleus":
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(0.7))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(0.9, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        else:
            raise ValueError(f"sampler {sampler!r}: llama.cpp side has {', '.join(SAMPLERS)}")
        return chain

    def generate(self, prompts: list[list[int]], new: int, sampler: str = "greedy", seed: int = 0,
                 clock: str = "wall") -> tuple[float, list[list[int]]]:
        """Prefill the prompts (equal lengths), then `new` steps; returns (seconds per step of
        the loop, the new ids of each prompt)."""
        L, n = self.L, len(prompts[0])
        if len(prompts) > self.seqs or any(len(p) != n for p in prompts):
            raise ValueError(f"at most {self.seqs} prompts, all of one length")
        chain = self._chain(sampler, seed)
        self._clear()
        self._decode(prompts, 0)
        last = [(s + 1) * n - 1 for s in range(len(prompts))]  # batch index of each row's logits
        out = [[] for _ in prompts]
        t0 = CLOCKS[clock]()
        for step in range(new):
            toks = [L.llama_sampler_sample(chain, self.ctx, i) for i in last]
            for row, t in zip(out, toks):
                row.append(t)
            self._decode([[t] for t in toks], n + step)
            last = list(range(len(prompts)))
        dt = (CLOCKS[clock]() - t0) / new
        L.llama_sampler_free(chain)
        return dt, out
