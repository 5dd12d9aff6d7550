"""Static KV cache: preallocated once for (rows, max_len), written by index, reordered in place."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Keys and values, one (rows, kv_heads, max_len, head_dim) buffer per layer and kind.

        >>> cache = model.new_cache(rows=4, max_len=256)
        >>> cache.reorder(torch.tensor([0, 0, 2, 1]))   # row i <- old row index[i], copied
        >>> cache.follow(torch.tensor([0, 0, 2, 1]))    # the same, by parent pointers:
        >>> model.decode(cache.followed(), ...)         # rows read through them

    Beam search moves rows every step. Copying them (`reorder`) reads and writes the whole
    cache twice per step, 3-4x what attention itself reads (beam 4 over 16 prompts: most of
    the step); `follow` moves only `home`, each row's pointer to the physical row that holds
    its slot s, and the `followed()` view gathers a layer's keys and values through it.

    One buffer per layer (not one big tensor) so that a compiled step writes a token's K/V
    in place: an in-place write into a slice of one big buffer makes the compiler copy
    the whole buffer. `k` and `v` stack the layers for reading. Slots never written stay
    zero (finite), so masked attention over them is exact.
    """

    def __init__(self, layers: int, rows: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 rope: tuple[Tensor, Tensor] | None = None):
        super().__init__()
        # RoPE's cos and sin of every position a row can reach, [max_len, head_dim] (Llama.new_cache):
        # read by position, never computed inside a step (the compiler would recompute them
        # in every slot of the attention loop)
        self.register_buffer("cos", None if rope is None else rope[0], persistent=False)
        self.register_buffer("sin", None if rope is None else rope[1], persistent=False)
        self.rows, self.max_len, self.layers = rows, max_len, layers
        shape = (rows, kv_heads, max_len, head_dim)
        # home[r, s]: the physical row holding row r's slot s (follow / followed)
        home = torch.arange(rows, device=device)[:, None].expand(rows, max_len).contiguous()
        self.register_buffer("home", home, persistent=False)
        for i in range(layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def k(self) -> Tensor:
        return torch.stack([getattr(self, f"k{i}") for i in range(self.layers)])

    @property
    def v(self) -> Tensor:
        return torch.stack([getattr(self, f"v{i}") for i in range(self.layers)])

    def update(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [rows, kv_heads, T, head_dim] at `slots`: [T] slots shared by every row,
        or [rows, T], each row's own (Llama.verify: rows at different lengths).

        Returns the layer's whole (rows, kv_heads, max_len, head_dim) key and value buffers.
        """
        k_all, v_all = getattr(self, f"k{layer}"), getattr(self, f"v{layer}")
        if slots.dim() == 2:
            at = slots[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            k_all.scatter_(2, at, k.to(k_all.dtype))
            v_all.scatter_(2, at, v.to(v_all.dtype))
            return k_all, v_all
        slots = slots.reshape(-1)
        k_all.index_copy_(2, slots, k.to(k_all.dtype))
        v_all.index_copy_(2, slots, v.to(v_all.dtype))
        return k_all, v_all

    def reorder(self, index: Tensor) -> None:
        """Row i becomes old row index[i], for every layer (the beam-search gather)."""
        for i in range(self.layers):
            for kind in "kv":
                buf = getattr(self, f"{kind}{i}")
                buf.copy_(buf.index_select(0, index))

    def follow(self, index: Tensor) -> None:
        """Row i becomes old row index[i], by pointers: nothing but `home` moves. Read the
        cache through `followed()` from then on (and do not mix with `reorder`)."""
        self.home.copy_(self.home.index_select(0, index))

    def followed(self) -> "Followed":
        """A view of this cache whose rows read through `home` (see `follow`)."""
        return Followed(self)

    def copy_slot(self, src: Tensor, dst: Tensor) -> None:
        """Row r's keys and values at slot src[r] [R] go to slot `dst` (0-d), in every layer:
        the candidate a row chose (Llama.candidates) becomes its token at `dst`."""
        for i in range(self.layers):
            for kind in "kv":
                buf = getattr(self, f"{kind}{i}")
                at = src.view(-1, 1, 1, 1).expand(-1, buf.shape[1], 1, buf.shape[3])
                buf.index_copy_(2, dst.reshape(1), buf.gather(2, at))

    def put(self, rows: Tensor, src: "KVCache", start: int) -> None:
        """Rows `rows` [r] take `src`'s r rows (all their slots) at slots start .. start +
        src.max_len - 1 (continuous batching: prompts prefilled alone join the running rows)."""
        end = start + src.max_len
        for i in range(self.layers):
            for kind in "kv":  # into the slot range's view: the rows' other slots are not copied
                getattr(self, f"{kind}{i}")[:, :, start:end].index_copy_(0, rows, getattr(src, f"{kind}{i}"))

    def shift(self, d: int) -> None:
        """Every row's slots move `d` to the left (slot s + d becomes slot s; the last d are
        zeroed): with each row's padding also d lower, its positions stay the same."""
        for i in range(self.layers):
            for kind in "kv":
                buf = getattr(self, f"{kind}{i}")
                buf[:, :, :-d] = buf[:, :, d:].clone()
                buf[:, :, -d:] = 0


class Followed:
    """A KVCache seen through its parent pointers: `update` writes row r's new keys and values
    in physical row r (a slot is written once, so no other row's history holds it) and
    returns every row's keys and values gathered from the rows that hold them."""

    def __init__(self, cache: KVCache):
        self.cache, self.max_len, self.cos, self.sin = cache, cache.max_len, cache.cos, cache.sin

    def update(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cache
        if slots.dim() != 1:
            raise ValueError("a followed cache takes one shared slot per call (Llama.decode)")
        k_all, v_all = c.update(layer, slots, k, v)
        if layer == 0:  # the new slot is each row's own
            rows = torch.arange(c.rows, device=slots.device)[:, None].expand(-1, slots.shape[0])
            c.home.index_copy_(1, slots, rows)
        at = c.home[:, None, :, None].expand(-1, k_all.shape[1], -1, k_all.shape[3])
        return k_all.gather(0, at), v_all.gather(0, at)
