"""Static KV cache: preallocated once for (rows, max_len), written by index, reordered in place."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Keys and values of every layer, shape (layers, rows, kv_heads, max_len, head_dim).

        >>> cache = model.new_cache(rows=4, max_len=256)
        >>> cache.reorder(torch.tensor([0, 0, 2, 1]))   # beam search: row i <- old row index[i]

    Slots never written stay zero (finite), so masked attention over them is exact.
    """

    def __init__(self, layers: int, rows: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        self.rows, self.max_len = rows, max_len
        shape = (layers, rows, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [rows, kv_heads, len(slots), head_dim] at `slots`.

        Returns the layer's whole (rows, kv_heads, max_len, head_dim) key and value buffers.
        """
        slots = slots.reshape(-1)
        k_all, v_all = self.k[layer], self.v[layer]
        k_all.index_copy_(2, slots, k.to(k_all.dtype))
        v_all.index_copy_(2, slots, v.to(v_all.dtype))
        return k_all, v_all

    def reorder(self, index: Tensor) -> None:
        """Row i becomes old row index[i], for every layer (the beam-search gather)."""
        self.k.copy_(self.k.index_select(1, index))
        self.v.copy_(self.v.index_select(1, index))
