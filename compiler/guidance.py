"""The unconditional rows of classifier-free guidance: one more row per row of the search.

A stage whose kernel has `unconditional(params, encode, prompt) -> ids` (cfg.py) guides: each
row of the search gets an unconditional row that reads those ids (left-padded like the
prompts), then the same new tokens. The engine stacks them under the rows, [rows; their
unconditional rows], in one KV cache, so one batched `model.decode` runs both; the step
splits the logits, hands the unconditional half to the stages (`StepContext.guide`) and
moves both halves when beams reorder.

    >>> both(torch.tensor([2, 0]), guide, shift=True)   # parents of 2 rows and their twins
    tensor([2, 0, 4, 2])
"""
from __future__ import annotations

import torch

from decode.compiler.plan import Plan
from decode.runtime.errors import ModelError


def guiding(plan: Plan):
    """The plan's stage that needs unconditional rows, or None."""
    return next((st for st in plan.stages if hasattr(st.kernel, "unconditional")), None)


def prompts(plan: Plan, model, ids: list[list[int]]) -> list[list[int]] | None:
    """Each prompt's unconditional prompt (None: nothing guides), checked to fit the context."""
    st = guiding(plan)
    if st is None:
        return None

    def encode(text: str) -> list[int]:
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            source = getattr(model, "source", None) or "the checkpoint"
            raise ModelError(f"'{st.name}' has a text prompt for its unconditional rows, which needs a "
                             f"tokenizer, but none was found next to {source}: put the model's tokenizer "
                             "file beside the weights, or let the unconditional row read the prompt's "
                             "last token (no negative prompt)")
        return list(tok.encode(text))

    out = [list(st.kernel.unconditional(st.params, encode, p)) for p in ids]
    if not min(map(len, out)):
        raise ModelError(f"'{st.name}': the unconditional prompt encodes to no tokens; give it some text")
    ctx, n, new = model.config.max_seq_len, max(map(len, out)), plan.max_new
    if n + new > ctx:  # the prompts fit (checked before), so some room is left for it
        fixes = [f"shorten it to at most {ctx - new} tokens"] + [f"lower `max` to at most {ctx - n}"] * (n < ctx)
        raise ModelError(f"'{st.name}': the unconditional (negative) prompt is {n} tokens; with `max` {new} "
                         f"new tokens it needs {n + new} positions, more than the model's context of {ctx}: "
                         + " or ".join(fixes))
    return out


def stack(seq: torch.Tensor, pad: torch.Tensor, uncond: list[list[int]] | None, k: int, p_len: int):
    """(token slots [R(+R), S], first real slots [R(+R)]): the rows, then each row's
    unconditional row (prompt i's for its k rows), left-padded to end at slot p_len."""
    if uncond is None:
        return seq, pad
    extra = torch.zeros_like(seq)  # padding slots are masked: any id does
    upad = torch.empty_like(pad)
    for i, x in enumerate(uncond):
        extra[i * k:(i + 1) * k, p_len - len(x):p_len] = torch.tensor(x)
        upad[i * k:(i + 1) * k] = p_len - len(x)
    return torch.cat([seq, extra]), torch.cat([pad, upad])


def split(logits: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The step's logits [R, V] and, when unconditional rows were decoded too, theirs [R, V]."""
    if logits.shape[0] == rows:
        return logits, None
    return logits[:rows], logits[rows:]


def both(x: torch.Tensor, guide: torch.Tensor | None, shift: bool = False) -> torch.Tensor:
    """`x` [R] for the rows, then for their unconditional rows (row indices moved by R)."""
    if guide is None:
        return x
    return torch.cat([x, x + x.shape[0] if shift else x])
