"""`decode viz` on traces that are not as `decode run --trace` wrote them (issue 15, item 17):
every malformed line is one TraceError naming the file, the line and the fix; a last line
cut short is left out with a warning; a tree thousands of levels deep draws without
recursion and without losing a token; --html never overwrites the trace or a file that is
not its page, and writes atomically. A fuzz test mutates a recorded trace every way it can."""
from __future__ import annotations

import io
import json
import os
import random
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from rich.console import Console

from decode.cli import main
from decode.traces.viz import TraceError, read_trace, render_html, render_terminal
from test_cli_run import make_tiny_model

FIX = "record it again with `decode run RECIPE --prompt TEXT --trace"
HEADER = {"type": "header", "trace": 1, "recipe": "beam 2 | max 9", "fingerprint": "f", "search": "Beam",
          "rows": 2, "groups": 1, "eos": [2], "prompts": [{"prompt": "a", "prompt_ids": [5]}]}


def cand(step, node, parent, kept=True, finished=False, token=7, text="x", **more):
    return {"type": "cand", "step": step, "prompt": 0, "row": 0, "token": token, "text": text,
            "logp": -1.0, "group": 0, "kept": kept, "finished": finished, "node": node,
            "parent_node": parent, **more}


def final(node, prompt=0):
    return {"type": "final", "results": [{"prompt": prompt, "sequences": [
        {"ids": [7], "text": "x", "score": -1.0, "finish": "eos", "node": node}]}]}


GOOD = [HEADER, cand(0, 0, None), cand(0, None, None, kept=False, token=9), cand(1, 1, 0), final(1)]


def write(path: Path, lines) -> Path:
    """Lines as JSON (objects, lists) or as given (str, bytes), one per line."""
    raw = []
    for line in lines:
        if isinstance(line, (dict, list)):
            line = json.dumps(line, ensure_ascii=False)  # as the writer does
        raw.append(line.encode() if isinstance(line, str) else line)
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def viz(capsys, *argv) -> tuple[int, str, str]:
    code = main(["viz", *map(str, argv)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def deep(levels: int) -> list[dict]:
    """A trace that branches at every step: a finished leaf (token text "fT") and the line
    that goes on ("nT"), so every level nests one deeper in the terminal."""
    lines, parent = [HEADER], None
    for t in range(levels):
        lines += [cand(t, 2 * t, parent, finished=True, text=f"f{t}"),
                  cand(t, 2 * t + 1, parent, text=f"n{t}")]
        parent = 2 * t + 1
    return lines + [final(parent)]


def tokens(text: str) -> set[str]:
    return set(re.findall(r"\b[fn]\d+\b", text))


def every_token(levels: int) -> set[str]:
    return {f"{kind}{t}" for t in range(levels) for kind in "fn"}


def test_a_well_formed_hand_written_trace_draws(tmp_path, capsys):
    code, out, _ = viz(capsys, write(tmp_path / "t.jsonl", GOOD))
    assert code == 0 and "← #1" in out and "pruned" in out


C0, C1 = cand(0, 0, None), cand(1, 1, 0)
SURROGATE = ('{"type": "cand", "step": 0, "prompt": 0, "row": 0, "token": 7, "text": "\\ud800", "logp": -1.0, '
             '"group": 0, "kept": true, "finished": false, "node": 0, "parent_node": null}')
BAD_SCORE = {"type": "final", "results": [{"prompt": 0, "sequences": [
    {"ids": [7], "text": "x", "score": "high", "finish": "eos", "node": 0}]}]}
# name -> (the line at fault, the trace, what the message says); each was a traceback (or a
# silently wrong drawing) before
MALFORMED = {
    "missing key": (3, [HEADER, C0, {k: v for k, v in C1.items() if k != "step"}], '"step" is missing'),
    "string for a number": (2, [HEADER, cand("0", 0, None)],
                            '"step" must be a whole number >= 0, got "0"'),
    "bool for a number": (2, [HEADER, cand(0, 0, None, group=True)],
                          '"group" must be a whole number >= 0, got true'),
    "number for a bool": (2, [HEADER, cand(0, 0, None, kept=1)], '"kept" must be true or false, got 1'),
    "NaN log-prob": (2, [HEADER, {**C0, "logp": float("nan")}],
                     '"logp" must be a finite number or null, got NaN'),
    "list for an object": (2, [HEADER, [1, 2]], "a trace line is a JSON object, got a list of 2"),
    "unknown kind": (2, [HEADER, {"type": "step"}], '"type" must be one of header, cand, final, got "step"'),
    "list for a kind": (2, [HEADER, {**C0, "type": []}], '"type" must be one of header, cand, final'),
    "header without prompts": (1, [{k: v for k, v in HEADER.items() if k != "prompts"}],
                               '"prompts" is missing'),
    "prompts not a list": (1, [{**HEADER, "prompts": 3}], '"prompts" must be a list, got 3'),
    "prompt ids of text": (1, [{**HEADER, "prompts": [{"prompt": None, "prompt_ids": ["a"]}]}],
                           '"prompts[0].prompt_ids[0]" must be a whole number >= 0, got "a"'),
    "other version": (1, [{**HEADER, "trace": 2}], "trace version 2 is not 1"),
    "second header": (3, [HEADER, C0, HEADER], "a second header line"),
    "prompt out of range": (2, [HEADER, {**C0, "prompt": 1}], '"prompt" 1 is not in the header'),
    "negative prompt": (2, [HEADER, {**C0, "prompt": -1}], '"prompt" must be a whole number >= 0'),
    "unknown parent": (2, [HEADER, cand(1, 1, 7)], '"parent_node" 7 is no node introduced on an earlier line'),
    "parent of another prompt": (3, [{**HEADER, "prompts": HEADER["prompts"] * 2}, C0, {**C1, "prompt": 1}],
                                 '"parent_node" 0 is a node of prompt 0'),
    "a step skipped": (3, [HEADER, C0, cand(5, 1, 0)], '"step" 5 does not follow step 0'),
    "a huge step": (2, [HEADER, cand(10 ** 18, 0, None)], "does not follow step -1"),
    "kept without a node": (2, [HEADER, cand(0, None, None)], 'a kept candidate needs a "node" id'),
    "node introduced twice": (3, [HEADER, C0, C0], "node 0 was already introduced on line 2"),
    "line after the final": (4, [HEADER, C0, final(0), C1], "a line after the final line 3"),
    "final names no node": (3, [HEADER, C0, final(9)],
                            '"results[0].sequences[0].node" 9 is no node introduced'),
    "final of no prompt": (3, [HEADER, C0, final(0, prompt=4)], '"results[0].prompt" 4 is not in the header'),
    "final score text": (3, [HEADER, C0, BAD_SCORE],
                         '"results[0].sequences[0].score" must be a finite number or null, got "high"'),
    "lone surrogate": (2, [HEADER, SURROGATE], '"text" must be a string or null, got "\\ud800"'),
    "not UTF-8": (2, [HEADER, json.dumps(C0).encode().replace(b'"x"', b'"\xff"')], "byte 0xff at column"),
    "not JSON": (2, [HEADER, "{'type': 'cand'}", C0], "not JSON (Expecting property name"),
    "JSON nested thousands deep": (2, [HEADER, "[" * 100000 + "]" * 100000], "the JSON nests too deeply"),
    "an integer of 5000 digits": (2, [HEADER, '{"type": "cand", "step": ' + "9" * 5000 + "}"], "not JSON"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_line_is_a_trace_error_naming_file_line_and_fix(name, tmp_path, capsys):
    n, lines, words = MALFORMED[name]
    path = write(tmp_path / "t.jsonl", lines)
    code, _, err = viz(capsys, path)
    assert code == 1, err
    assert f"decode: {path}:{n}: " in err and words in err and FIX in err, err
    assert err.count("\n") == 1  # one message


def test_a_file_that_is_not_a_trace_says_how_to_write_one(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, _, err = viz(capsys, empty)
    assert code == 1 and "an empty file, not a trace" in err and "--trace" in err
    code, _, err = viz(capsys, write(tmp_path / "cand.jsonl", [cand(0, 0, None)]))
    assert code == 1 and "cand.jsonl:1: a trace starts with a header line" in err


def test_a_line_longer_than_the_bound_is_refused_without_reading_on(tmp_path, monkeypatch, capsys):
    from decode.traces import viz as module

    monkeypatch.setattr(module, "MAX_LINE", 4096)  # /dev/zero would fill memory otherwise
    path = write(tmp_path / "t.jsonl", [HEADER, b"\0" * 10000])
    code, _, err = viz(capsys, path)
    assert code == 1 and f"{path}:2: the line is longer than" in err


@pytest.mark.parametrize("cut", ["mid-JSON", "mid-UTF-8"])
def test_a_torn_last_line_is_left_out_with_a_warning_and_the_rest_drawn(cut, tmp_path, capsys):
    whole = write(tmp_path / "whole.jsonl", [HEADER, cand(0, 0, None, text="é"), cand(1, 1, 0, text="ü")])
    raw = whole.read_bytes()[:-1]                      # no final newline: a killed writer
    end = raw.rindex("ü".encode()) + (1 if cut == "mid-UTF-8" else 2)
    path = tmp_path / "torn.jsonl"
    path.write_bytes(raw[:end])
    code, out, err = viz(capsys, path)
    assert code == 0
    assert f"{path}:3: the last line is cut short" in err
    assert "é" in out and "line 3 is cut short" in out and "the run stopped early" in out
    page = tmp_path / "t.html"
    assert viz(capsys, path, "--html", page)[0] == 0
    assert "Line 3 of the trace is cut short" in page.read_text()


def test_a_torn_line_before_the_end_is_an_error(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", [HEADER, '{"type": "cand", "st', cand(0, 0, None)])
    code, _, err = viz(capsys, path)
    assert code == 1 and f"{path}:2: not JSON" in err


class Collect:
    """A console that keeps what it is given instead of drawing it (rich's own drawing is
    iterative; the tree building is what recursed)."""

    width = 80

    def __init__(self):
        self.printed = []

    def print(self, thing):
        self.printed.append(thing)


def tree_labels(tree) -> tuple[list[str], int]:
    """Every label of a rich Tree and its depth, walked without recursion."""
    labels, deepest, todo = [], 0, [(tree, 0)]
    while todo:
        t, level = todo.pop()
        labels.append(str(t.label))
        deepest = max(deepest, level)
        todo += [(c, level + 1) for c in t.children]
    return labels, deepest


def test_a_tree_5000_levels_deep_draws_without_recursion(tmp_path):
    trace = read_trace(str(write(tmp_path / "deep.jsonl", deep(5000))))
    console = Collect()
    render_terminal(trace, console)
    trees = [p for p in console.printed if hasattr(p, "children")]
    labels = [label for t in trees for label in tree_labels(t)[0]]
    assert max(tree_labels(t)[1] for t in trees) <= 14  # (80 - 24) // 4 levels, then a new part
    assert tokens("\n".join(labels)) == every_token(5000)  # no token lost
    page = render_html(trace)
    assert page.count('class="node kept') == 10000


def test_a_tree_deeper_than_the_console_goes_on_in_parts_and_shows_every_token(tmp_path, capsys):
    code, out, _ = viz(capsys, write(tmp_path / "deep.jsonl", deep(60)))
    assert code == 0
    assert tokens(out) == every_token(60), out
    assert "n13  [13]  ↪ part 2" in out and "prompt 0, part 2: … n13  [13] goes on" in out
    assert max(len(line) for line in out.splitlines()) <= 80


# -- --html and --pruned -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["same path", "hard link", "symbolic link", "another spelling"])
def test_html_onto_the_trace_itself_is_refused_and_the_trace_kept(how, tmp_path, capsys, monkeypatch):
    trace = write(tmp_path / "t.jsonl", GOOD)
    before = trace.read_bytes()
    page = {"same path": trace, "hard link": tmp_path / "h.html", "symbolic link": tmp_path / "s.html",
            "another spelling": Path("sub/../t.jsonl")}[how]
    if how == "hard link":
        os.link(trace, page)
    if how == "symbolic link":
        page.symlink_to(trace)
    if how == "another spelling":
        monkeypatch.chdir(tmp_path)
        (tmp_path / "sub").mkdir()
    code, _, err = viz(capsys, trace, "--html", page)
    assert code == 2 and "is the trace itself" in err and "give the page another name" in err
    assert trace.read_bytes() == before


def test_html_refuses_to_overwrite_a_file_that_is_not_its_page(tmp_path, capsys):
    trace = write(tmp_path / "t.jsonl", GOOD)
    notes = tmp_path / "notes.html"
    notes.write_text("my notes")
    code, _, err = viz(capsys, trace, "--html", notes)
    assert code == 2 and "exists and is not a page `decode viz` wrote" in err
    assert notes.read_text() == "my notes"
    code, _, err = viz(capsys, trace, "--html", tmp_path)
    assert code == 2 and "is not a regular file" in err
    code, _, err = viz(capsys, trace, "--html", tmp_path / "no" / "t.html")
    assert code == 2 and "does not exist" in err


def test_html_replaces_its_own_page_atomically(tmp_path, capsys, monkeypatch):
    trace = write(tmp_path / "t.jsonl", GOOD)
    page = tmp_path / "t.html"
    assert viz(capsys, trace, "--html", page)[0] == 0
    old = page.read_text()
    assert viz(capsys, write(trace, deep(3)), "--html", page)[0] == 0  # a page of ours: replaced
    assert page.read_text() != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.html", "t.jsonl"]  # no temporary file left
    mine = page.read_text()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = viz(capsys, write(trace, GOOD), "--html", page)
    assert code == 1 and f"cannot write {page}: No space left on device" in err
    assert page.read_text() == mine  # the old page, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.html", "t.jsonl"]


def test_html_through_a_link_replaces_the_links_target(tmp_path, capsys):
    trace = write(tmp_path / "t.jsonl", GOOD)
    target = tmp_path / "real.html"
    assert viz(capsys, trace, "--html", target)[0] == 0
    link = tmp_path / "link.html"
    link.symlink_to(target)
    assert viz(capsys, write(trace, deep(2)), "--html", link)[0] == 0
    assert link.is_symlink() and "n1" in target.read_text()


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_pruned_takes_a_whole_number_of_at_least_zero(value, tmp_path, capsys):
    code, _, err = viz(capsys, write(tmp_path / "t.jsonl", GOOD), "--pruned", value)
    assert code == 2 and f"argument --pruned: takes a whole number of at least 0, got '{value}'" in err


# -- fuzz: a recorded trace, mutated every way ----------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory, sp_tokenizer_dir) -> bytes:
    """A real trace: `decode run "beam 3 | max 4" --trace`, on the tiny random model."""
    folder = tmp_path_factory.mktemp("rec")
    model = make_tiny_model(folder, sp_tokenizer_dir)
    path = folder / "t.jsonl"
    with redirect_stdout(io.StringIO()):
        assert main(["run", "beam 3 | max 4", "--model", str(model), "--prompt", "ROMEO:", "--trace",
                     str(path), "--json", "--no-compile"]) == 0
    return path.read_bytes()


def draws_or_trace_error(path: Path) -> bool:
    """True if the trace drew (terminal and page), False if it was a TraceError; anything
    else raises and fails the test."""
    try:
        trace = read_trace(str(path))
    except TraceError as err:
        assert f"{path}:" in str(err)
        return False
    render_terminal(trace, Console(file=io.StringIO(), width=80))
    render_html(trace)
    return True


def key_paths(obj, prefix=()):
    """Every key of a line, nested ones too (in the first item of each list)."""
    for key, value in obj.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from key_paths(value, prefix + (key,))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            yield from key_paths(value[0], prefix + (key, 0))
        elif isinstance(value, list) and value:
            yield prefix + (key, 0)


def mutated(obj, path, value, drop: bool):
    obj = json.loads(json.dumps(obj))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


OTHER_VALUES = ["x", 7, -1, 1.5, None, [], {}, True, float("nan"), 10 ** 30, "\ud800"]


def test_a_mutated_trace_either_draws_or_is_a_trace_error(recorded, tmp_path):
    lines = recorded.decode().splitlines()
    objs = [json.loads(x) for x in lines]
    picks = {"header": 0, "kept": next(i for i, o in enumerate(objs) if o.get("kept")),
             "pruned": next(i for i, o in enumerate(objs) if o.get("kept") is False),
             "final": len(objs) - 1}
    path = tmp_path / "t.jsonl"
    outcomes = []
    for i in picks.values():
        for keys in key_paths(objs[i]):
            for drop, value in [(True, None)] + [(False, v) for v in OTHER_VALUES]:
                changed = lines[:i] + [json.dumps(mutated(objs[i], keys, value, drop))] + lines[i + 1:]
                path.write_text("\n".join(changed) + "\n")
                outcomes.append(draws_or_trace_error(path))
    rng = random.Random(15)
    for _ in range(60):  # cut anywhere, as a killed writer or a full disk would
        path.write_bytes(recorded[:rng.randrange(len(recorded))])
        outcomes.append(draws_or_trace_error(path))
    for _ in range(40):  # bytes that are not UTF-8, anywhere
        at = rng.randrange(len(recorded))
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])
        path.write_bytes(recorded[:at] + bad + recorded[at:])
        outcomes.append(draws_or_trace_error(path))
    for _ in range(20):  # a line lost or repeated
        at = rng.randrange(1, len(lines))
        path.write_text("\n".join(lines[:at] + lines[at + rng.choice([0, 1]):] if rng.random() < 0.5
                                  else lines[:at] + [lines[at]] + lines[at:]) + "\n")
        outcomes.append(draws_or_trace_error(path))
    assert len(outcomes) > 500 and any(outcomes) and not all(outcomes)
