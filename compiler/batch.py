"""Batch files: prompts from a JSONL file, results to a JSONL file, resumable.

    $ decode run beam.dec --prompts in.jsonl --out out.jsonl     # again after Ctrl-C: resumes

Each input line is `{"id": ..., "prompt": "text"}` or `{"id": ..., "prompt_ids": [1, 2]}`
(other keys are ignored). Each output line is the `--json` object of DESIGN.md with the
`id` in front, written and flushed as its batch finishes. A rerun skips the ids already
in the output, after cutting off a last line that a crash left half-written. A bad input
line is reported with its number and skipped; it never stops the others.

Sampling is seeded per prompt from the run seed and the prompt's id, so a result does
not depend on which batch the prompt fell in, nor on a resume.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from decode.compiler import jsonl
from decode.dsl.errors import unicode_problem

DEFAULT_BATCH = 8


class BatchError(Exception):
    """A batch run cannot start (its output file belongs to another run, or is damaged)."""


@dataclass(frozen=True)
class Item:
    line: int                   # 1-based line number in the input file
    id: str | int
    prompt: str | list[int]


@dataclass(frozen=True)
class LineError:
    line: int | None            # input line number, when the problem has one
    id: str | int | None
    message: str

    def describe(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line is not None else path
        return f"{where}: {'id ' + json.dumps(self.id) + ': ' if self.id is not None else ''}{self.message}"


def id_key(id_: str | int) -> str:
    """The id as JSON, so 7 and "7" stay different ids."""
    return json.dumps(id_, ensure_ascii=False)


# ----------------------------------------------------------------------------- input

def read_prompts(path: str) -> tuple[list[Item], list[LineError]]:
    """The valid prompts of a JSONL file, and one LineError per line that is not one.

        >>> items, errors = read_prompts("in.jsonl")
    """
    items, errors, first = [], [], {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                errors.append(LineError(n, None, f"not valid Unicode at column {e.start + 1}: byte "
                                                 f"0x{raw[e.start]:02x} is not UTF-8 text; save the "
                                                 "file as UTF-8"))
                continue
            if not line.strip():
                continue
            item = _parse_line(n, line)
            if isinstance(item, LineError):
                errors.append(item)
            elif id_key(item.id) in first:
                errors.append(LineError(n, item.id, f"duplicate id (first used on line "
                                                    f"{first[id_key(item.id)]}); this line is skipped"))
            else:
                first[id_key(item.id)] = n
                items.append(item)
    return items, errors


def _parse_line(n: int, line: str) -> Item | LineError:
    try:
        obj = json.loads(line.strip())
    except json.JSONDecodeError as e:
        return LineError(n, None, f"not valid JSON ({e.msg} at column {e.colno}); expected "
                                  f'{{"id": ..., "prompt": "..."}}')
    if not isinstance(obj, dict):
        return LineError(n, None, f'expected a JSON object like {{"id": 1, "prompt": "..."}}, '
                                  f"got {type(obj).__name__}")
    if "id" not in obj:
        return LineError(n, None, 'no "id": every line needs one (a string or an integer) so that a '
                                  "rerun can tell what is done")
    id_ = obj["id"]
    if isinstance(id_, bool) or not isinstance(id_, (str, int)):
        return LineError(n, None, f'"id" must be a string or an integer, not {json.dumps(id_)}')
    bad = unicode_problem(id_) if isinstance(id_, str) else None  # JSON allows "\ud800"
    if bad is not None:
        return LineError(n, None, f'"id" is {bad[1]}')
    has_text, has_ids = "prompt" in obj, "prompt_ids" in obj
    if has_text == has_ids:
        return LineError(n, id_, 'give exactly one of "prompt" (text) or "prompt_ids" (a list of '
                                 "token ids)" + ("" if has_text else ", none was given"))
    if has_text:
        p = obj["prompt"]
        if not isinstance(p, str):
            return LineError(n, id_, f'"prompt" must be text, not {type(p).__name__}; token ids go '
                                     f'in "prompt_ids"')
        if not p:
            return LineError(n, id_, '"prompt" is empty')
        bad = unicode_problem(p)
        if bad is not None:
            return LineError(n, id_, f'"prompt" is {bad[1]}')
        return Item(n, id_, p)
    ids = obj["prompt_ids"]
    if not isinstance(ids, list) or not ids or \
            not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ids):
        return LineError(n, id_, f'"prompt_ids" must be a non-empty list of non-negative integers, '
                                 f"got {json.dumps(ids)[:60]}")
    return Item(n, id_, list(ids))


# ----------------------------------------------------------------------------- output

def repair(path: str) -> None:
    """Cut off a last line that has no newline: a write that a crash or Ctrl-C interrupted."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        keep = 0
        block = 1 << 16
        pos = size
        while pos > 0:  # scan back for the last newline
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)


def done_ids(path: str, fingerprint: str) -> set[str]:
    """Ids (as `id_key`) already in an output file, after `repair`. Refuses a file that holds
    another recipe's results, or a damaged line, rather than mixing runs."""
    repair(path)
    done = set()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return done
    with f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                key = id_key(obj["id"])
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                raise BatchError(f"{path}:{n} is not a result line of `decode run --prompts`, so the run "
                                 f"cannot resume into this file. Delete that line (its prompt is then "
                                 f"decoded again) or choose another --out file.") from None
            if obj.get("fingerprint") != fingerprint:
                raise BatchError(f"{path}:{n} holds a result of recipe {obj.get('recipe')!r} (fingerprint "
                                 f"{obj.get('fingerprint')}), not of this one ({fingerprint}); resuming "
                                 f"would mix two recipes. Choose another --out file.")
            done.add(key)
    return done


@contextmanager
def appending(path: str) -> Iterator[Callable[[str], None]]:
    """A writer that appends to `path` and flushes each call; on the way out (Ctrl-C
    included) a half-written last line is cut off, so the file stays valid JSONL."""
    repair(path)
    f = open(path, "a", encoding="utf-8")

    def write(text: str) -> None:
        f.write(text)
        f.flush()

    try:
        yield write
    finally:
        f.close()
        repair(path)


def result_line(item: Item, completion) -> str:
    """One output line: the DESIGN `--json` object with the prompt's id in front."""
    return jsonl.dumps({"id": item.id, **completion.to_json()}) + "\n"


# ----------------------------------------------------------------------------- decoding

def prompt_problem(prompt: str | list[int], model) -> str | None:
    """Why the model cannot take this prompt (token ids outside its vocabulary), or None."""
    if isinstance(prompt, str):
        return None
    vocab = int(model.config.vocab_size)
    bad = [x for x in prompt if not 0 <= int(x) < vocab]
    if bad:
        return (f"token id {bad[0]} is outside the model's vocabulary (ids 0 to {vocab - 1})"
                + (f", and {len(bad) - 1} more" if len(bad) > 1 else ""))
    return None


def batches(items: list[Item], size: int) -> Iterable[list[Item]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def prompt_seeds(run_seed: int, items: list[Item]) -> list[int]:
    """Each prompt's sampling seed, from the run seed and its id (not its position)."""
    from decode.compiler.engine import derive_seed

    return [derive_seed(run_seed, id_key(it.id)) for it in items]


def decode_batches(plan, model, items: list[Item], write: Callable[[str], None], *, seed: int,
                   batch_size: int = DEFAULT_BATCH, compiled: bool = True,
                   on_batch: Callable[[int, int], None] | None = None) -> list[LineError]:
    """Decode `items` in batches; `write` gets each batch's output lines as one string.

    A batch the engine refuses (a prompt too long for the context, a text prompt without
    a tokenizer, ...) is retried one prompt at a time, so only the bad prompts fail; they
    come back as LineErrors. `on_batch(prompts, new_tokens)` is called after each write.
    """
    from decode.compiler.engine import run
    from decode.runtime import ModelError

    errors = []
    for it in items:
        problem = prompt_problem(it.prompt, model)
        if problem:
            errors.append(LineError(it.line, it.id, problem))
    bad = {e.line for e in errors}
    items = [it for it in items if it.line not in bad]
    for group in batches(items, batch_size):
        try:
            outs = run(plan, model, [it.prompt for it in group], compiled=compiled,
                       seeds=prompt_seeds(seed, group))
            done = list(zip(group, outs))
        except (ModelError, ValueError, RuntimeError):
            done = []
            for it in group:  # find the prompt(s) at fault; the others still get decoded
                try:
                    out = run(plan, model, [it.prompt], compiled=compiled, seeds=prompt_seeds(seed, [it]))
                    done.append((it, out[0]))
                except (ModelError, ValueError, RuntimeError) as err:
                    errors.append(LineError(it.line, it.id, _one_line(err)))
        if done:
            write("".join(result_line(it, c) for it, c in done))
        if on_batch is not None:
            on_batch(len(group), sum(len(s.ids) for _, c in done for s in c.sequences))
    return errors


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__
