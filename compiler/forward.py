"""The model's forward in a decode step: compiled once per (model, shapes), shared by every recipe.

A step chooses tokens (`step.select_step`, compiled per recipe structure), then the model
runs them to give the next step's logits. That forward depends on the model, the rows, the
cache length, whether the rows read the KV cache through parent pointers (beams), the
early exits and whether hidden states are asked for; never on the recipe. So it is a graph
of its own, kept by the model beside the steps (step_cache.py): a second recipe on the same
model and shapes reuses the compiled forward (no new trace of the model), and a new process
finds the same graph in torch's on-disk cache (it holds nothing of a recipe: no closure over
the search, no recipe constant), so a new recipe structure compiles its selection only.

    >>> step = joined(select, model, search, s_len=64, compiled=True)
    >>> logits, seq, state, sst, tokens, info, health, paths = step(cache, t, logits, ...)
"""
from __future__ import annotations

from decode.compiler import step_cache
from decode.compiler.search.base import Search
from decode.compiler.step import _asked

FORWARD = "the model's forward (once per model and shape)"
SELECTION = "this recipe's selection step (once per recipe structure)"
# Inductor settings per graph (benchmarks/shared_forward_ab.py and compile_times.py measure
# them). On the CPU the forward's wrapper, which launches its kernels and matrix products,
# is compiled as C++ (`cpp_wrapper`) instead of run as Python: the step is then no slower
# than the one graph it replaced (a second compiled call costs ~20 us), and the forward's
# compile, paid once per model and shape, is shorter (one g++ build for all its kernels).
# The selection keeps inductor's defaults: `cpp_wrapper` cannot compile its nested regions
# (topp, draws), and the options tried (no vectorised loop tails, no pattern matcher,
# aggressive fusion) saved no compile time; scalar kernels (`cpp.simdlen` 1) saved ~2.5 CPU s
# but made nucleus's step 1.5x slower.
FORWARD_OPTIONS: dict = {"cpp_wrapper": True}
SELECTION_OPTIONS: dict = {}


def shared(search) -> bool:
    """Whether `search` runs the model's own forward once it chose: not when it looks ahead
    (its candidates' forward is part of its step) or changes the hidden states before the
    head as the recipe says (a plugin's `before_head`); those compile the forward into their step."""
    return not search.ahead and type(search).before_head is Search.before_head


def get(model, rows: int, s_len: int, followed: bool, exits: tuple[int, ...], hidden: bool, compiled: bool):
    """The forward `(cache, tokens [rows], prompt, t, pad) -> logits` of the tokens at slot
    prompt + t (with `exits`: [1 + E, rows, V]; with `hidden`: (logits, hidden states)),
    built once per model and key; `followed`: the rows read the cache through its pointers."""
    key = ("forward", rows, s_len, followed, exits, hidden, compiled)
    asked = {**_asked(exits), **({"hidden": True} if hidden else {})}  # no before_head: `shared`
    cuda = next(model.parameters()).is_cuda

    def build(name: str):
        def forward(cache, tokens, prompt, t, pad):
            return model.decode(cache.followed() if followed else cache, tokens, prompt + t, pad, **asked)

        return step_cache.compile_step(forward, name.replace("step", "forward"), compiled, cuda, FORWARD,
                                       None if cuda else FORWARD_OPTIONS)

    return step_cache.get(model, key, build, counted=False)


def joined(select, model, search, s_len: int, compiled: bool):
    """A step with `step.decode_step`'s arguments and results: `select` (step.select_step,
    compiled per recipe structure), then the model's shared forward on the chosen tokens."""
    exits, hidden = search.exits(model.config), bool(search.hidden)
    forward = []

    def step(cache, t, logits, keys, seq, pad, lim, *rest):
        seq, state, sst, tokens, info, health, paths, fed, moved = select(cache, t, logits, keys, seq, pad, lim,
                                                                          *rest)
        if not forward:  # whether the rows follow parent pointers shows once the search chose
            forward.append(get(model, pad.shape[0], s_len, moved is not None, exits, hidden, compiled))
        return forward[0](cache, fed, lim["prompt"], t, pad), seq, state, sst, tokens, info, health, paths

    return step
