"""`decode.transform`: a recipe's logit stages, in written order, on one step's logits."""
from __future__ import annotations

import torch

from decode.compiler.context import StepContext
from decode.compiler.plan import Plan, compile as lower
from decode.compiler.stages import bind


def transform(recipe, logits: torch.Tensor, input_ids: torch.Tensor, eos_ids=(), tokenizer=None) -> torch.Tensor:
    """Apply the recipe's logit stages to `logits` [R, V] given the history `input_ids` [R, T].

        >>> decode.transform("repetition 1.3 | topk 5 | temp 0.7", logits, input_ids)

    Every slot of `input_ids` counts as history (and as generated, for presence/frequency).
    Search and selection are not applied: this is the processed score a search would see.
    """
    plan = recipe if isinstance(recipe, Plan) else lower(recipe)
    logits = logits.float()
    ctx = StepContext.from_input_ids(input_ids.to(logits.device), eos_ids)
    for st in plan.stages:
        static, tensors = bind(st.kernel, st.params, tokenizer, logits.device)
        logits = st.kernel.apply(logits, ctx, **static, **tensors)
    return logits
