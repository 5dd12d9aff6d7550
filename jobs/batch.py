"""Batch files: prompts from a JSONL file, results to a JSONL file, resumable.

    $ decode run beam.dec --prompts in.jsonl --out out.jsonl     # again after Ctrl-C: resumes

Each input line is `{"id": ..., "prompt": "text"}` or `{"id": ..., "prompt_ids": [1, 2]}`
(other keys are ignored). Each output line is the object `decode run --json` prints
(prompt, prompt_ids, recipe, fingerprint, sequences, provenance) with the `id` in front, written straight to the file as its batch finishes, whole or not at all
(a full disk or Ctrl-C mid-write is cut back to the last whole line). A rerun skips the
ids already in the output, after checking that every line of it is a result of this
recipe and only then cutting off a last line that a crash left half-written: a file that
is not a result file of this recipe is refused byte for byte untouched. So is an output
that is the prompts file (by any link) or not a regular file. A bad input line is
reported with its number and skipped; it never stops the others. (The CLI also locks the
output against a second run: jobs/lock.py.)

Sampling is seeded per prompt from the run seed and the prompt's id, so a result does
not depend on which batch the prompt fell in, nor on a resume.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator

from decode import jsonl
from decode.dsl.errors import unicode_problem

DEFAULT_BATCH = 8
MAX_LINE = 64 << 20  # bytes; a result line is a few KB, so a longer line is not one of ours


class BatchError(Exception):
    """A batch run cannot start or go on: its output file is the input, not a regular file,
    not a result file of this recipe, locked by another run, or cannot be written."""


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
        for n, raw in _lines(f, path):
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

def check_target(prompts: str, out: str, what: str = "--out") -> None:
    """Refuse an output path that is the prompts file under any name (the same path, a
    symlink, a hard link) or that is not a regular file, before anything is written.

        >>> check_target("in.jsonl", "out.jsonl")   # fine; "in.jsonl" twice raises BatchError
    """
    if _same_file(prompts, out):
        raise BatchError(f"--prompts {prompts} and {what} {out} are the same file, so the results "
                         f"would be written into the prompts. Choose another --out file.")
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise BatchError(f"{what} {out} is {_kind(mode)}, not a regular file: a batch writes its "
                         f"results to a file that a rerun resumes from. Give a file path, or leave "
                         f"out --out to print the results.")


def check_single_out(out: str) -> None:
    """Refuse a `--out` for one prompt's result that is not a regular file, or that exists and
    is not a file of decode's JSON lines (each a `--json` object), before anything is written:
    results are appended only to a file of results.

        >>> check_single_out("results.jsonl")   # new, or decode's results: fine
    """
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise BatchError(f"--out {out} is {_kind(mode)}, not a regular file: give a file path")
    with _open_regular(out) as f:
        for n, raw in _lines(f, out):
            why = None
            if not raw.endswith(b"\n"):
                why = "its last line is incomplete"
            else:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = None
                if not (isinstance(obj, dict) and _is_output(obj)):
                    why = "it is not a decode result"
            if why:
                raise BatchError(f"--out {out} is not a file of decode results (line {n}: {why}); "
                                 f"results are only appended to such a file, so it is left as it "
                                 f"is: choose another --out or remove it")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)  # same device and inode: links of every kind
    except OSError:                    # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _lines(f: BinaryIO, path: str) -> Iterator[tuple[int, bytes]]:
    """(number, raw line) of a binary file, each read with a bounded length: a file of
    endless bytes without a newline is an error, not all of the machine's memory."""
    for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), 1):
        if len(raw) > MAX_LINE:
            raise BatchError(f"{path}:{n} is longer than {MAX_LINE >> 20} MiB without a line break, "
                             f"so {path} is not a JSON lines file of decode. Check the file name.")
        yield n, raw


@dataclass(frozen=True)
class Results:
    """What a resume finds in an output file (read, not changed)."""
    done: set[str]              # ids (as `id_key`) of its whole result lines
    whole: int                  # bytes up to the end of its last whole line
    size: int                   # bytes in all: more than `whole` when a crash tore the last line


def read_results(path: str, fingerprint: str, logprobs: int | None = None) -> Results:
    """The results already in `path` (a missing file has none), without changing a byte.
    Refuses a file that is not a result file of this recipe: every line but a torn last one
    must be a result line of `fingerprint`, and a torn one must be the start of one. With
    `logprobs` (a run's --logprobs N) every line must carry N alternatives (0: none), so a
    resumed file reads as a fresh one.

        >>> read_results("out.jsonl", recipe.fingerprint).done
    """
    def foreign(n: int, obj: dict) -> str:
        return (f"{path}:{n} holds a result of recipe {obj.get('recipe')!r} (fingerprint "
                f"{obj['fingerprint']}), not of this one ({fingerprint}); resuming "
                f"would mix two recipes. Choose another --out file.")

    done, found = read_done(path, {fingerprint}, foreign, logprobs)
    return Results(done.get(fingerprint, set()), found.whole, found.size)


def read_done(path: str, fingerprints: set[str], foreign,
              logprobs: int | None = None) -> tuple[dict[str, set[str]], Results]:
    """The ids (as `id_key`) already in `path` per recipe fingerprint, and where its whole lines
    end (`Results`, for `cut_torn`), without changing a byte. Every line but a torn last one
    must be a result line of one of `fingerprints` (else BatchError; `foreign(n, obj)` words
    a result of another recipe), and a torn one must be the start of one. With `logprobs`,
    every whole line must have been written with that --logprobs N (see `read_results`)."""
    done: dict[str, set[str]] = {}
    whole = 0
    try:
        f = _open_regular(path)
    except FileNotFoundError:
        return done, Results(set(), 0, 0)
    with f:
        for n, raw in _lines(f, path):
            seen = set().union(*done.values())
            if not raw.endswith(b"\n"):
                if not any(_torn_result(raw, fp) for fp in fingerprints):
                    raise BatchError(_not_results(path, n, seen, "not a result line"))
                return done, Results(set(), whole, whole + len(raw))
            whole += len(raw)
            if raw.strip():
                obj = _result(path, n, raw, seen)
                if obj["fingerprint"] not in fingerprints:
                    raise BatchError(foreign(n, obj))
                if logprobs is not None and written_with(obj) != logprobs:
                    raise BatchError(_other_logprobs(path, n, written_with(obj), logprobs))
                done.setdefault(obj["fingerprint"], set()).add(id_key(obj["id"]))
    return done, Results(set(), whole, whole)


def written_with(obj: dict) -> int:
    """The --logprobs N a result line was written with (0: it has no log-probs)."""
    meaning = obj.get("logprobs")
    return meaning.get("top", 0) if isinstance(meaning, dict) else 0


def _other_logprobs(path: str, n: int, have: int, want: int) -> str:
    def said(k: int) -> str:
        return f"--logprobs {k}" if k else "no --logprobs"

    return (f"{path}:{n} was written with {said(have)}, and this run has {said(want)}: resuming "
            f"would mix lines {'with and without log-probs' if 0 in (have, want) else 'of two widths'}. "
            f"Run it {'with --logprobs ' + str(have) if have else 'without --logprobs'} to resume, "
            f"or choose another --out file.")


def _open_regular(path: str) -> BinaryIO:
    # O_NONBLOCK: a FIFO swapped in after check_target must not hang the open
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BatchError(f"{path} is {_kind(mode)}, not a regular file of results; give a file path.")
    return os.fdopen(fd, "rb")


def _torn_result(raw: bytes, fingerprint: str) -> bool:
    """Whether a last line without a newline is what a crash leaves of a `result_line` of
    this recipe: its start, or all of it but the newline (either way, decoded again)."""
    if not (raw.startswith(_RESULT_START) or _RESULT_START.startswith(raw)):
        return False
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):  # cut short: what is there must fit
        return _fingerprint_fits(raw, fingerprint)
    return isinstance(obj, dict) and _is_result(obj) and obj["fingerprint"] == fingerprint


_RESULT_START = b'{"id": '
_FINGERPRINT = b'"fingerprint": "'  # unescaped quotes: only the key itself, never text in a value


def _fingerprint_fits(raw: bytes, fingerprint: str) -> bool:
    """A cut-short line agrees with `fingerprint` as far as it goes."""
    at = raw.find(_FINGERPRINT)
    if at < 0:
        return True
    have, want = raw[at + len(_FINGERPRINT):], fingerprint.encode() + b'"'
    return have[:len(want)] == want[:len(have)]


def _result(path: str, n: int, raw: bytes, done: set[str]) -> dict:
    """Line n as a result object, or BatchError saying what it is instead."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BatchError(_not_results(path, n, done, "not UTF-8 text")) from None
    except json.JSONDecodeError:
        raise BatchError(_not_results(path, n, done, "not JSON")) from None
    if not isinstance(obj, dict) or not _is_result(obj):
        raise BatchError(_not_results(path, n, done, "not a result object"))
    return obj


def _is_output(obj: dict) -> bool:
    """A `--json` object of decode: a fingerprint and a list of sequences."""
    return isinstance(obj.get("fingerprint"), str) and isinstance(obj.get("sequences"), list)


def _is_result(obj: dict) -> bool:
    """A batch result line: a `--json` object with the prompt's id."""
    id_ = obj.get("id")
    return isinstance(id_, (str, int)) and not isinstance(id_, bool) and _is_output(obj)


def _not_results(path: str, n: int, done: set[str], why: str) -> str:
    if not done:  # nothing of ours before it: someone else's file
        return (f"{path} is not a decode result file (line {n}: {why}); choose another --out "
                f"or remove it.")
    return (f"{path}:{n} is not a result line of `decode run --prompts` ({why}), so the run "
            f"cannot resume into this file. Delete that line (its prompt is then decoded again) "
            f"or choose another --out file.")


def cut_torn(path: str, found: Results) -> None:
    """Cut off the torn last line that `read_results` found (a write a crash interrupted)."""
    if found.size > found.whole:
        os.truncate(path, found.whole)


@contextmanager
def appending(path: str) -> Iterator[Callable[[str], None]]:
    """A writer that appends each call's text to `path` whole or not at all: one write,
    straight to the file; on any failure (a full disk, Ctrl-C) the file is cut back to
    where the call started, so it stays valid JSON lines, and a write error names the file.

        >>> with appending("out.jsonl") as write:
        ...     write('{"id": 1, ...}\\n')
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as err:
        raise write_error(path, err) from None

    def write(text: str) -> None:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, text.encode("utf-8"))
        except BaseException as err:
            _cut_back(fd, start)
            if isinstance(err, OSError):
                raise write_error(path, err) from None
            raise

    try:
        yield write
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a regular file takes it in one call; the loop covers a short write
        view = view[os.write(fd, view):]


def _cut_back(fd: int, size: int) -> None:
    with suppress(OSError):  # else the torn line stays; the rerun's read_results cuts it off
        os.ftruncate(fd, size)


def write_error(path: str, err: OSError) -> BatchError:
    """The error for a failed write to a batch file: names the file, the cause and the fix."""
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    return BatchError(f"cannot write {path}: {err.strerror or err}; "
                      f"{'free space' if full else 'fix that'} and rerun: finished prompts are kept")


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
    from decode.compiler.provenance import derive_seed

    return [derive_seed(run_seed, id_key(it.id)) for it in items]


def decode_batches(plan, model, items: list[Item], write: Callable[[str], None], *, seed: int,
                   batch_size: int = DEFAULT_BATCH, compiled: bool = True,
                   on_batch: Callable[[int, int], None] | None = None, logprobs: int = 0,
                   refill: bool = False) -> list[LineError]:
    """Decode `items` in batches; `write` gets each batch's output lines as one string.

    A batch the engine refuses (a prompt too long for the context, a text prompt without
    a tokenizer, ...) is retried one prompt at a time, so only the bad prompts fail; they
    come back as LineErrors. `on_batch(prompts, new_tokens)` is called after each write.
    `logprobs=N` gives every token its log-probs and N alternatives (compiler/logprobs.py).
    `refill=True`: continuous batching where the recipe allows it (`_refilled`).
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
    if refill and len(items) > batch_size and _refills(plan, model, batch_size, logprobs):
        items = _refilled(plan, model, items, write, errors, seed=seed, batch_size=batch_size,
                          compiled=compiled, on_batch=on_batch, logprobs=logprobs)
    for group in batches(items, batch_size):
        try:
            outs = run(plan, model, [it.prompt for it in group], compiled=compiled, seed=seed,
                       seeds=prompt_seeds(seed, group), logprobs=logprobs)
            done = list(zip(group, outs))
        except (ModelError, ValueError, RuntimeError):
            done = []
            for it in group:  # find the prompt(s) at fault; the others still get decoded
                try:
                    out = run(plan, model, [it.prompt], compiled=compiled, seed=seed,
                              seeds=prompt_seeds(seed, [it]), logprobs=logprobs)
                    done.append((it, out[0]))
                except (ModelError, ValueError, RuntimeError) as err:
                    errors.append(LineError(it.line, it.id, _one_line(err)))
        if done:
            write("".join(result_line(it, c) for it, c in done))
        if on_batch is not None:
            on_batch(len(group), sum(len(s.ids) for _, c in done for s in c.sequences))
    return errors


def _refills(plan, model, batch_size: int, logprobs: int) -> bool:
    from decode.compiler import refill

    return refill.fits(plan, model, batch_size, logprobs)


def _refilled(plan, model, items: list[Item], write, errors: list[LineError], *, seed, batch_size, compiled,
              on_batch, logprobs) -> list[Item]:
    """Decode `items` with continuous batching (compiler/refill.py): a finished prompt's rows
    take the next waiting prompt. Each line is written as its prompt finishes (it carries its
    id, so lines come in the order prompts finish). Returns the items left undone if the run
    stopped on an error that is not one prompt's own (they then go batch by batch, which
    finds the prompt at fault)."""
    from decode.compiler import refill
    from decode.runtime import ModelError

    left = {it.line: it for it in items}
    try:
        for i, out in refill.run(plan, model, [it.prompt for it in items], prompt_seeds(seed, items),
                                 batch_size, compiled=compiled, seed=seed, logprobs=logprobs):
            it = items[i]
            del left[it.line]
            if isinstance(out, Exception):
                errors.append(LineError(it.line, it.id, _one_line(out)))
            else:
                write(result_line(it, out))
            if on_batch is not None:
                on_batch(1, 0 if isinstance(out, Exception) else sum(len(s.ids) for s in out.sequences))
    except (ModelError, ValueError, RuntimeError):
        pass
    return list(left.values())


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__
