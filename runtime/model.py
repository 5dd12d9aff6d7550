"""A llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU), gpt-fast style.

Three ways to run it:
  m(input_ids)                          full causal forward, no cache  -> [B, T, V]
  m.prefill(cache, tokens, pad)         a LEFT-padded batch of prompts into the cache
  m.decode(cache, tokens, slot, pad)    one token per row at cache slot `slot` -> [R, V]
  m.verify(cache, tokens, start, pad)   T tokens per row at the row's own slots start[r].. -> [R, T, V]

`prefill` and `decode` also give early-exit logits, in the same forward: with
`exits=(i, ...)` they return [1 + len(exits), R, V], the final logits and then, for each i,
the residual stream entering layer i (0: the embeddings) through the output head, without
the final norm (transformers' `lm_head(hidden_states[i])`, as its DoLa reads them).
With `hidden=True` they return (those logits, the last slot's hidden state after the final
norm [R, dim]); `before_head(h) -> h`, if given, changes that state before the output head
(noise, say) and the logits are the changed state's. `output.weight` [V, dim] are the
tokens' output embeddings.

Padding: row r's prompt sits at slots pad[r]..T-1 and RoPE position of slot s is s - pad[r],
so a padded row computes exactly what the prompt alone would. `decode` has static shapes
(it attends over the whole preallocated cache with a boolean mask) and takes `slot` as a
tensor, so it compiles once with `torch.compile(fullgraph=True)` and never recompiles.
q/k projections use the HF (rotate-half) layout; loaders permute Meta-layout checkpoints.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import KVCache
from .config import LlamaConfig
from .errors import ModelError


def rope_inv_freq(config: LlamaConfig) -> Tensor:
    """Per-pair rotation frequencies (float32), with linear or llama-3 scaling applied."""
    hd = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        return _llama3_scaling(inv, scaling)
    raise ModelError(
        f"rope_scaling type {kind!r} is not supported (supported: default, linear, llama3). "
        f"Use a checkpoint without it or remove rope_scaling from its config."
    )


def _llama3_scaling(inv: Tensor, s: dict) -> Tensor:
    # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
    factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old_len / lo, inv / factor, inv)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / hi) * ~(wavelen > old_len / lo)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.head_dim
        self.wq = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=False)
        self.wk = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.wv = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.wo = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)
        self.wqkv: nn.Linear | None = None  # set by Llama.fuse_(): one matmul instead of three

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
                cache: KVCache | None, layer: int, slots: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        if self.wqkv is not None:
            kv = self.n_kv_heads * self.head_dim
            q, k, v = self.wqkv(x).split([self.n_heads * self.head_dim, kv, kv], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(layer, slots, k, v)
            # The mask's last dim says how many cache slots this call attends to.
            k, v = k[:, :, : mask.shape[-1]], v[:, :, : mask.shape[-1]]
        if T == 1 and cache is not None:
            y = _one_query_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


def _one_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Attention of one new token per row over the cache, as two small matmuls.

    For a single query the fused CPU attention kernel costs more than the arithmetic; the
    plain form also lets the compiler fuse the mask and softmax. q [B, H, 1, D],
    k/v [B, KV, S, D], mask [B, 1, 1, S] -> [B, H, 1, D].
    """
    B, H, _, D = q.shape
    kv = k.shape[1]
    qg = q.view(B, kv, H // kv, D)                                # heads grouped by kv head
    att = torch.matmul(qg, k.transpose(-1, -2)) * (1.0 / math.sqrt(D))  # [B, KV, G, S]
    att = att.masked_fill(~mask.view(B, 1, 1, -1), float("-inf")).softmax(dim=-1)
    return torch.matmul(att.to(v.dtype), v).view(B, H, 1, D)


class FeedForward(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(c.hidden_dim, c.dim, bias=False)  # down
        self.w3 = nn.Linear(c.dim, c.hidden_dim, bias=False)  # up
        self.w13: nn.Linear | None = None  # set by Llama.fuse_(): gate and up in one matmul

    def forward(self, x: Tensor) -> Tensor:
        if self.w13 is not None:
            gate, up = self.w13(x).chunk(2, dim=-1)
            return self.w2(F.silu(gate) * up)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.feed_forward = FeedForward(c)

    def forward(self, x, cos, sin, mask, cache, layer, slots):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, layer, slots)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    """A llama decoder. Build it from a config, or get one loaded with `decode.load(path)`.

        >>> m = Llama(LlamaConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4,
        ...                       n_kv_heads=2, hidden_dim=64))
        >>> m(torch.tensor([[1, 5, 7]])).shape
        torch.Size([1, 3, 97])
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.tokenizer = None  # set by the loader
        self.source = None     # the path it was loaded from, for error messages
        self.origin = None     # the path or org/name it was asked for (None: the demo model)
        self.files = ()        # the files it was read from (identity.py hashes them)
        self.quant = None      # "int8" once quant.quantize_int8_ replaced its linears
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)
        self.register_buffer("output_t", None, persistent=False)  # fuse_(): output weight.T

    @torch.no_grad()
    def fuse_(self) -> "Llama":
        """Concatenate q/k/v and gate/up weights so a step runs 4 matmuls per layer, not 7.

        The separate projections stay, as views into the fused weights (no extra memory),
        so state_dict() and the per-projection names keep working.
        """
        def fused(parts: list[nn.Linear]) -> nn.Linear:
            w = torch.cat([p.weight for p in parts])
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
            lin.weight = nn.Parameter(w, requires_grad=False)
            start = 0
            for p in parts:
                n = p.weight.shape[0]
                p.weight = nn.Parameter(w[start:start + n], requires_grad=False)
                start += n
            return lin

        # The output projection is the largest matmul of a step. On CPU, MKL computes
        # x @ W.T far slower for a few rows than either x @ W.T-stored-contiguous or
        # W @ x.T (measured: 1 row 4.1 -> 1.3 ms, 4 rows 6.6 -> 2.8 ms at 32000 x 288).
        self.output_t = self.output.weight.t().contiguous()
        for blk in self.layers:
            a, f = blk.attention, blk.feed_forward
            if a.wqkv is None:
                a.wqkv = fused([a.wq, a.wk, a.wv])
            if f.w13 is None:
                f.w13 = fused([f.w1, f.w3])
        return self

    def _hidden(self, tokens: Tensor, pos: Tensor, mask: Tensor,
                cache: KVCache | None = None, slots: Tensor | None = None,
                early: dict | None = None) -> Tensor:
        x = self.tok_embeddings(tokens)
        if cache is not None and cache.cos is not None:  # the cache's tables (new_cache)
            cos, sin = cache.cos[pos][:, None].to(x.dtype), cache.sin[pos][:, None].to(x.dtype)
        else:
            emb = self._rope_angles(pos)[:, None]  # [B, 1, T, head_dim]
            cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        for i, layer in enumerate(self.layers):
            if early is not None and i in early:  # the last slot's stream entering layer i
                early[i] = x[:, -1]
            x = layer(x, cos, sin, mask, cache, i, slots)
        return self.norm(x)

    def _head(self, h: Tensor) -> Tensor:
        """Logits of hidden states h [R, dim], with the fastest CPU matmul form for R rows."""
        r = h.shape[0]
        if self.output_t is None or h.device.type != "cpu":
            return self.output(h)
        if 2 <= r <= 6:
            return (self.output.weight @ h.t()).t().contiguous()
        return h @ self.output_t

    def forward(self, input_ids: Tensor) -> Tensor:
        """Full causal forward without a cache: [B, T] -> float32 logits [B, T, V]."""
        B, T = input_ids.shape
        idx = torch.arange(T, device=input_ids.device)
        mask = idx[None, :] <= idx[:, None]
        return self.output(self._hidden(input_ids, idx.expand(B, T), mask)).float()

    def _rope_angles(self, pos: Tensor) -> Tensor:
        """[..., head_dim] float32 rotation angles of positions `pos` (rotate-half layout)."""
        freqs = pos[..., None].float() * self.inv_freq.float()
        return torch.cat((freqs, freqs), dim=-1)

    def new_cache(self, rows: int, max_len: int) -> KVCache:
        """An empty static cache for `rows` sequences of up to `max_len` tokens, holding the
        cos and sin of every position up to max_len (computed here, once, not in each step)."""
        c, w = self.config, self.tok_embeddings.weight
        emb = self._rope_angles(torch.arange(max_len, device=w.device))
        return KVCache(c.n_layers, rows, c.n_kv_heads, max_len, c.head_dim, w.dtype, w.device,
                       rope=(emb.cos(), emb.sin()))

    @staticmethod
    def _prompt_frame(tokens: Tensor, pad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """LEFT-padded prompts [R, T]: (slots [T], positions [R, T], attention mask [R, T, T])."""
        T = tokens.shape[1]
        idx = torch.arange(T, device=tokens.device)
        pos = (idx[None, :] - pad[:, None]).clamp(min=0)
        causal = idx[None, :] <= idx[:, None]                       # [T query, T key]
        real = idx[None, :] >= pad[:, None]                         # [R, T key]
        # Padding queries see only themselves: garbage but finite, and nobody reads them.
        mask = (causal[None] & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=tokens.device)
        return idx, pos, mask

    def prefill(self, cache: KVCache, tokens: Tensor, pad: Tensor, all_logits: bool = False,
                exits: tuple[int, ...] = (), hidden: bool = False, before_head=None):
        """Run LEFT-padded prompts [R, T] (row r real from slot pad[r]) into cache slots 0..T-1.

        Returns float32 logits of the last slot [R, V], or of every slot [R, T, V]; with
        `exits`, the last slot's [1 + len(exits), R, V]; with `hidden` and `before_head`,
        see the module's docstring.
        """
        idx, pos, mask = self._prompt_frame(tokens, pad)
        early = dict.fromkeys(self._exits(exits))
        h = self._hidden(tokens, pos, mask[:, None], cache, idx, early)
        if all_logits:
            return self._with_exits(self.output(h).float(), early)
        return self._last(h[:, -1], early, hidden, before_head)

    def decode(self, cache: KVCache, tokens: Tensor, slot: Tensor, pad: Tensor,
               exits: tuple[int, ...] = (), hidden: bool = False, before_head=None):
        """One token per row [R] at cache slot `slot` (0-d tensor) -> float32 logits [R, V]
        ([1 + len(exits), R, V] with `exits`; with `hidden` and `before_head`, see the
        module's docstring)."""
        idx = torch.arange(cache.max_len, device=tokens.device)
        pos = (slot - pad)[:, None]
        mask = (idx[None, :] >= pad[:, None]) & (idx[None, :] <= slot)  # [R, max_len]
        early = dict.fromkeys(self._exits(exits))
        h = self._hidden(tokens[:, None], pos, mask[:, None, None, :], cache, slot.reshape(1), early)
        return self._last(h[:, 0], early, hidden, before_head)

    def _last(self, h: Tensor, early: dict, hidden: bool, before_head):
        """The logits of the last hidden states h [R, dim] (changed by `before_head`), with
        the early exits; and h itself when `hidden`."""
        logits = self._with_exits(self._head(h if before_head is None else before_head(h)).float(), early)
        return (logits, h) if hidden else logits

    def verify(self, cache: KVCache, tokens: Tensor, start: Tensor, pad: Tensor) -> Tensor:
        """T tokens per row [R, T] at cache slots start[r] .. start[r] + T - 1, each row at its
        own length (speculative decoding: a row's last token and K drafts, in one forward)
        -> float32 logits [R, T, V], those of token j predicting slot start[r] + j + 1.

        Token j attends to the row's slots pad[r] .. start[r] + j. Slots past that are never
        read, so a row rolls back rejected drafts by not advancing `start` past them: the
        next call overwrites them.

            >>> logits = m.verify(cache, torch.stack([last, *drafts], 1), length - 1, pad)
        """
        R, T = tokens.shape
        idx = torch.arange(cache.max_len, device=tokens.device)
        slots = start[:, None] + torch.arange(T, device=tokens.device)           # [R, T]
        mask = (idx[None, None, :] >= pad[:, None, None]) & (idx[None, None, :] <= slots[:, :, None])
        mask = mask | (idx[None, None, :] == slots[:, :, None])  # a padding slot sees itself: finite
        h = self._hidden(tokens, slots - pad[:, None], mask[:, None], cache, slots)
        return self._head(h.reshape(R * T, -1)).float().view(R, T, -1)

    def prefill_hidden(self, cache: KVCache, tokens: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        """`prefill`, also giving the last layer's hidden state of every slot, after the final
        norm (transformers' hidden_states[-1]): (float32 logits [R, V], hidden [R, T, dim])."""
        idx, pos, mask = self._prompt_frame(tokens, pad)
        h = self._hidden(tokens, pos, mask[:, None], cache, idx)
        return self._head(h[:, -1]).float(), h

    def candidates(self, cache: KVCache, tokens: Tensor, slot: Tensor, pad: Tensor,
                   scratch: int) -> tuple[Tensor, Tensor]:
        """K candidate next tokens per row [R, K], each run as if it were the row's token at
        cache slot `slot`, in one batched forward: (float32 logits [R, K, V], the last layer's
        hidden states [R, K, dim]).

        Candidate j attends to the row's slots pad..slot-1 and to itself, whose keys and
        values go to scratch slot `scratch + j` (the cache needs K slots past `scratch`);
        `cache.copy_slot` then makes the chosen one the row's token at `slot`.

            >>> logits, hidden = m.candidates(cache, top4, slot, pad, scratch=cache.max_len - 4)
        """
        R, K = tokens.shape
        idx = torch.arange(cache.max_len, device=tokens.device)
        own = scratch + torch.arange(K, device=tokens.device)
        past = (idx[None, :] >= pad[:, None]) & (idx[None, :] < slot)         # [R, max_len]
        mask = past[:, None, :] | (idx[None, None, :] == own[None, :, None])  # [R, K, max_len]
        pos = (slot - pad)[:, None].expand(R, K)
        h = self._hidden(tokens, pos, mask[:, None], cache, own)
        return self._head(h.reshape(R * K, -1)).float().view(R, K, -1), h

    def _exits(self, exits: tuple[int, ...]) -> tuple[int, ...]:
        """`exits`, refused unless each names a layer's input (0 .. n_layers - 1)."""
        n = self.config.n_layers
        bad = [i for i in exits if not 0 <= i < n]
        if bad:
            raise ModelError(f"early exit at layer {bad[0]}: this model has {n} layers, so an early "
                             f"exit is at 0 (the embeddings) .. {n - 1}; choose layers in that range")
        return exits

    def _with_exits(self, logits: Tensor, early: dict) -> Tensor:
        """logits [R, V], or stacked over the early exits' logits [1 + E, R, V]."""
        if not early:
            return logits
        return torch.stack([logits, *(self._head(h).float() for h in early.values())])
