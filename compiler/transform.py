"""`decode.transform`: a recipe's logit stages, in written order, on one step's logits."""
from __future__ import annotations

import inspect
import numbers

import torch

from decode.compiler.arguments import check_model, kind, recipe_plan, token_ids
from decode.compiler.context import StepContext
from decode.compiler.engine import eos_ids
from decode.compiler.stages import bind, run_kernel

# what a stage module's NEEDS may name: (what it is, the keyword that gives it); a model gives
# those in FROM_MODEL
NEEDS = {
    "tokenizer": ("a tokenizer to turn its text into token ids", "tokenizer= (a decode model's .tokenizer)"),
    "eos": ("the end-of-sequence ids", "eos= (an id or a list, e.g. eos=[2])"),
    "guide": ("the logits of each row's unconditional row", "unconditional= (logits [rows, vocab] of the "
              "model after the negative prompt, or the prompt's last token, and the same new tokens)"),
}
FROM_MODEL = ("tokenizer", "eos")


def transform(recipe, logits: torch.Tensor, input_ids: torch.Tensor, model=None, *,
              tokenizer=None, eos=None, unconditional: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the recipe's logit stages to `logits` [R, V] given the history `input_ids` [R, T].

        >>> decode.transform("repetition 1.3 | minlen 5 | topk 5", logits, input_ids, model=m)

    `model` (from `decode.load`) gives the end-of-sequence ids (`minlen`) and the tokenizer
    (`ban`, `bias`); `eos=` (an id or a list) and `tokenizer=` give them without a model, or
    instead of the model's; `unconditional=` [R, V] are the logits `cfg` guides away from. A
    clause that needs one that was not given is a ValueError naming the keyword to pass. Every slot of `input_ids` counts as history (and as
    generated, for presence/frequency). Search and selection are not applied: this is the
    processed score a search would see.
    """
    plan = recipe_plan(recipe)
    held = [c for c in plan.recipe.stages if c.spec.constraint is not None]
    if held:  # its matcher must read the row's new text token by token, which one step does not give
        raise ValueError(f"'{held[0].canonical}' is a constraint: its matcher follows each row's new tokens "
                         "from the first, and one step's logits and history do not say which those are; "
                         "decode.transform does not apply constraints: decode with decode.generate or "
                         "decode.steps, or leave the constraint out of this recipe")
    _check_tensors(logits, input_ids)
    if model is not None:
        check_model(model)
        tokenizer = model.tokenizer if tokenizer is None else tokenizer
        eos = eos_ids(model) if eos is None else eos
    eos = _eos(eos, logits.shape[-1])
    if tokenizer is not None and "bos" not in _parameters(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must be decode's (model.tokenizer of decode.load(...)), whose encode "
                        f"takes bos=; got {kind(tokenizer)}")
    if unconditional is not None and not (isinstance(unconditional, torch.Tensor) and unconditional.is_floating_point()
                                          and unconditional.shape == logits.shape):
        got = f"shape {list(unconditional.shape)}, dtype {unconditional.dtype}" if isinstance(
            unconditional, torch.Tensor) else kind(unconditional)
        raise TypeError(f"unconditional must be a float tensor shaped as logits, {list(logits.shape)}; got {got}")
    _check_needs(plan, {"eos": eos, "tokenizer": tokenizer, "guide": unconditional is not None}, model is not None)
    logits = logits.float()
    ctx = StepContext.from_input_ids(input_ids.to(logits.device), eos, max_new=plan.max_new)
    ctx.guide = None if unconditional is None else unconditional.float().to(logits.device)
    for st in plan.stages:
        static, tensors = bind(st.kernel, st.params, tokenizer, logits.device, logits.shape[-1])
        logits = run_kernel(st.kernel, logits, ctx, {**static, **tensors})
    return logits


def _check_needs(plan, given: dict, with_model: bool) -> None:
    """A ValueError if a stage needs (its NEEDS) what was not given, naming the keywords."""
    for st in plan.stages:
        missing = [n for n in NEEDS if n in getattr(st.kernel, "NEEDS", ()) and not given[n]]
        if missing:
            what = " and ".join(NEEDS[n][0] for n in missing)
            how = " and ".join(NEEDS[n][1] for n in missing)
            if not set(missing) <= set(FROM_MODEL):
                where = "pass " + how
            else:
                where = ("the model given has none; pass " + how if with_model
                         else f"pass model= (a model from decode.load), or {how}")
            raise ValueError(f"`{st.name}` needs {what}: {where}")


def _parameters(fn) -> dict:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # not callable, or a builtin without a signature
        return {}


def _check_tensors(logits, input_ids) -> None:
    """logits: floating [R, V]; input_ids: integer [R, T] with ids in 0..V-1."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor [rows, vocab]; got {kind(logits)}"
                        + (f" of dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else ""))
    if logits.dim() != 2:
        hint = ": for one row pass logits[None]" if logits.dim() == 1 else ""
        raise ValueError(f"logits must be [rows, vocab]; got shape {list(logits.shape)}{hint}")
    tensor = isinstance(input_ids, torch.Tensor)
    if not tensor or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        got = f"a tensor of dtype {input_ids.dtype}" if tensor else kind(input_ids)
        raise TypeError(f"input_ids must be an integer tensor [rows, tokens], e.g. torch.tensor([[1, 2]]); "
                        f"got {got}")
    if input_ids.dim() != 2 or input_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"input_ids must be [rows, tokens] with the rows of logits ({logits.shape[0]}); "
                         f"got shape {list(input_ids.shape)}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids must hold at least one token per row (the prompt, as generate always "
                         f"has); got shape {list(input_ids.shape)}")
    vocab = logits.shape[-1]
    if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < vocab:
        bad = input_ids[(input_ids < 0) | (input_ids >= vocab)][0]
        raise ValueError(f"input_ids holds token id {int(bad)}, outside the logits' vocabulary "
                         f"(ids 0..{vocab - 1})")


def _eos(eos, vocab: int) -> tuple[int, ...]:
    """`eos` (None, an id or a list of ids) as a tuple of ids in 0..vocab-1."""
    if eos is None:
        return ()
    if isinstance(eos, numbers.Integral) and not isinstance(eos, bool):
        eos = [eos]
    elif not isinstance(eos, (list, tuple, torch.Tensor)):
        raise TypeError(f"eos must be a token id or a list of them; got {kind(eos)}")
    ids = token_ids(eos, "eos")
    bad = [e for e in ids if not 0 <= e < vocab]
    if bad:
        raise ValueError(f"eos holds token id {bad[0]}, outside the logits' vocabulary (ids 0..{vocab - 1})")
    return tuple(ids)
