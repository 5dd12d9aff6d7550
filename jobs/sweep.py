"""Running a sweep: every point of the grid on the same prompts, one result line per (point, prompt).

    >>> sw = sweep("sample 4 | topp {0.8, 0.9} | temp 0.6..1.0 step 0.2")
    >>> errors = run_sweep(sw, model, items, write, seed=0)

Each line is a batch result line (see batch.py: id, prompt, recipe, fingerprint, sequences)
of the point's own recipe, with `point`: {"index": i, "of": N, "values": {"topp.p": 0.8, ...},
"seconds": s}, s being the line's share of its batch's decoding time (the first batch of a
run includes compiling the step, when this process had not compiled it yet).
The points differ in numbers only where the engine takes them as tensors, so they share one
compiled step; `compiled_axes` names the axes whose values each compile a step of their own.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from decode import jsonl
from decode.compiler import step_cache
from decode.compiler.plan import compile as lower
from decode.compiler.plan import structure
from decode.dsl.sweep import Axis, Sweep
from decode.jobs import batch
from decode.jobs.batch import Item, LineError, Results, decode_batches, id_key


def compiled_axes(sw: Sweep) -> list[Axis]:
    """The axes whose values change the compiled step (a sweep over one compiles once per value)."""
    if not sw.axes:
        return []
    base = structure(lower(sw.points[0]))
    out, stride = [], 1
    for axis in reversed(sw.axes):  # the point that differs from point 0 in this axis alone
        if len(axis.values) > 1 and structure(lower(sw.points[stride])) != base:
            out.append(axis)
        stride *= len(axis.values)
    return list(reversed(out))


def read_done(path: str, sw: Sweep, logprobs: int | None = None) -> tuple[dict[str, set[str]], Results]:
    """What a rerun of a `--prompts` sweep finds in its `--out`: the ids (as `id_key`) already
    decoded at each point (by the point's fingerprint), and the Results `batch.cut_torn` takes.
    Refuses a file with a line of any other recipe, or written with another --logprobs N than
    `logprobs` (resuming would mix them). Reads, never writes."""
    def foreign(n: int, obj: dict) -> str:
        return (f"{path}:{n} holds a result of recipe {obj.get('recipe')!r}, not of a point of "
                "this sweep; resuming would mix them. Choose another --out file.")

    return batch.read_done(path, {p.fingerprint for p in sw.points}, foreign, logprobs)


def run_sweep(sw: Sweep, model, items: list[Item], write: Callable[[str], None], *, seed: int,
              batch_size: int = 8, compiled: bool = True,
              on_point: Callable[[int], None] | None = None,
              done: dict[str, set[str]] | None = None, logprobs: int = 0) -> tuple[list[LineError], int]:
    """Decode `items` at every point of `sw` (but those `done` holds for that point's
    fingerprint: a resumed run); (the prompts that failed, the steps compiled). `logprobs=N`
    gives every token its log-probs and N alternatives, as in a batch (batch.decode_batches)."""
    errors: list[LineError] = []
    before = step_cache.built()
    clock = [time.perf_counter()]
    for i, point in enumerate(sw.points):
        have = (done or {}).get(point.fingerprint, set())
        todo = [it for it in items if id_key(it.id) not in have]
        if not todo:
            continue
        tag = {"index": i, "of": len(sw.points), "values": sw.at(i)}

        def tagged(text: str, tag=tag) -> None:  # the point goes into each of its lines
            now = time.perf_counter()
            lines = text.splitlines()
            share = round((now - clock[0]) / len(lines), 6)  # of its batch's decoding time
            write("".join(jsonl.dumps({**json.loads(line), "point": {**tag, "seconds": share}}) + "\n"
                          for line in lines))
            clock[0] = time.perf_counter()

        found = decode_batches(lower(point), model, todo, tagged, seed=seed, batch_size=batch_size,
                               compiled=compiled, logprobs=logprobs)
        errors += [e for e in found if e not in errors]  # a bad prompt is bad at every point
        if on_point is not None:
            on_point(i)
    return errors, step_cache.built() - before
