"""Weight-only int8: each linear's weight as int8 with one scale per output channel (gpt-fast's
`WeightOnlyInt8QuantHandler`), multiplied by torch's `_weight_int8pack_mm` kernel.

    >>> m = decode.load(dtype="int8")         # or: quantize_int8_(model) on a fused Llama

Why bf16 activations: on CPU, torch 2.13's `_weight_int8pack_mm` has a vectorised path for
bf16 inputs only; with float32 inputs it runs 4-20x slower than the float32 matmul it
replaces (measured at the 24.4M shape, 1 thread). So a linear rounds its input to bf16,
multiplies by the int8 weight (bf16 scales), and gives its output back in the model's dtype;
norms, attention, the KV cache and the logits stay in the model's dtype (float32 on CPU).
The embedding table stays as loaded: a step reads only its rows for the new tokens.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .errors import ModelError

ACT = torch.bfloat16  # the kernel's input and scale dtype (see the module docstring)


class Int8Linear(nn.Module):
    """y = x @ (weight * scales[:, None]).T, weight int8 [out, in], scales [out] (bf16).

    gpt-fast's symmetric rule: scale = max |w| of the output channel / 127.5, q = round(w /
    scale) clamped to -128..127. The scale is rounded to bf16 (the kernel's) before dividing,
    so the int8 values fit the scale the kernel multiplies by: a weight is off by half a step
    or less (the clamp can add a little at a channel's largest one).
    """

    def __init__(self, weight: Tensor, scales: Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)

    @classmethod
    @torch.no_grad()
    def of(cls, w: Tensor) -> "Int8Linear":
        """The int8 form of a float weight [out, in]."""
        w = w.float()
        scales = (w.abs().amax(dim=1) / 127.5).clamp(min=torch.finfo(torch.float32).eps).to(ACT)
        q = torch.round(w / scales.float()[:, None]).clamp(-128, 127).to(torch.int8)
        return cls(q.contiguous(), scales)

    def rows(self, start: int, n: int) -> "Int8Linear":
        """Output channels start..start+n-1, as views (the fused projections' parts)."""
        return Int8Linear(self.weight[start:start + n], self.scales[start:start + n])

    def dequantized(self) -> Tensor:
        """The float32 weight this layer computes with (for comparison and export)."""
        return self.weight.float() * self.scales.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).to(ACT), self.weight, self.scales)
        return y.view(*lead, -1).to(x.dtype)


def check_kernel(device: torch.device) -> None:
    """Refuse, in one message, a device where this torch has no int8 weight kernel."""
    try:
        x = torch.ones(1, 32, dtype=ACT, device=device)
        w = torch.ones(8, 32, dtype=torch.int8, device=device)
        torch.ops.aten._weight_int8pack_mm(x, w, torch.ones(8, dtype=ACT, device=device))
    except (RuntimeError, NotImplementedError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"--dtype int8 needs torch's int8 weight kernel (_weight_int8pack_mm) on {device}, and "
            f"this torch ({torch.__version__}) has none there ({first}). Use --dtype fp32 or bf16, "
            f"or a torch build that has it (CPU and CUDA builds of torch >= 2.4 do).") from None


@torch.no_grad()
def quantize_int8_(model) -> None:
    """Replace a fused Llama's linears (q/k/v, o, gate/up, down, output) by Int8Linear, in place.

    The separate q/k/v and gate/up projections become views into the fused int8 weights, as
    they were views into the fused float ones (Llama.fuse_), so the float weights are freed.
    """
    check_kernel(model.tok_embeddings.weight.device)
    for blk in model.layers:
        a, f = blk.attention, blk.feed_forward
        if a.wqkv is None or f.w13 is None:
            raise ValueError("quantize_int8_ needs a fused model: call model.fuse_() first")
        a.wqkv = Int8Linear.of(a.wqkv.weight)
        a.wq, a.wk, a.wv = _parts(a.wqkv, [a.wq, a.wk, a.wv])
        f.w13 = Int8Linear.of(f.w13.weight)
        f.w1, f.w3 = _parts(f.w13, [f.w1, f.w3])
        a.wo, f.w2 = Int8Linear.of(a.wo.weight), Int8Linear.of(f.w2.weight)
    model.output = Int8Linear.of(model.output.weight)
    model.output_t = None  # the float head's transposed copy (fuse_) is not read any more
    model.quant = "int8"


def _parts(fused: Int8Linear, parts: list[nn.Linear]) -> list[Int8Linear]:
    out, start = [], 0
    for p in parts:
        out.append(fused.rows(start, p.weight.shape[0]))
        start += p.weight.shape[0]
    return out
