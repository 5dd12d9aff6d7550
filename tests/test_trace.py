"""`decode run --trace` and `decode viz`: the trace is complete (every kept hypothesis
reaches the prompt, every returned sequence is a path of kept tokens), its tree matches
the search's true parents, and the terminal and HTML drawings show it."""
import copy
import dataclasses
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from decode.cli import main
from test_cli_run import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "greedy": "greedy | max 10",
    "sample": "sample 3 | temp 1.5 | max 10",
    "beam": "beam 4 | max 10",
    "diverse": "beam 4 | diverse groups=2 penalty=0.5 | max 10",
    "diverse_sampling": "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7 | max 10",
    "sbeam": "sbeam 4 | max 10",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory, sp_tokenizer_dir):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), sp_tokenizer_dir))


@pytest.fixture(scope="module")
def demo():
    import decode

    return decode.load()


@pytest.fixture(scope="module")
def traces(model, tmp_path_factory):
    """name -> (trace lines, the run's --json object), one run per recipe."""
    folder = tmp_path_factory.mktemp("traces")
    out = {}
    for name, recipe in RECIPES.items():
        path = folder / f"{name}.jsonl"
        buf = io.StringIO()
        from contextlib import redirect_stdout

        with redirect_stdout(buf):
            code = main(["run", recipe, "--model", model, "--prompt", "ROMEO:", "--trace", str(path),
                         "--json", "--no-compile", "--seed", "5"])
        assert code == 0
        out[name] = (path, [json.loads(x) for x in path.read_text().splitlines()], json.loads(buf.getvalue()))
    return out


def kept_nodes(lines):
    return {c["node"]: c for c in lines if c["type"] == "cand" and c["kept"]}


def test_a_trace_is_a_header_candidates_and_a_final_line(traces):
    _, lines, result = traces["beam"]
    head, *cands, final = lines
    assert head["type"] == "header" and head["recipe"] == "beam 4 | max 10" and head["rows"] == 4
    assert head["fingerprint"] == result["fingerprint"]
    assert head["prompts"] == [{"prompt": "ROMEO:", "prompt_ids": result["prompt_ids"]}]
    assert {c["type"] for c in cands} == {"cand"}
    for c in cands:
        assert set(c) == {"type", "step", "prompt", "row", "token", "text", "logp", "group", "kept",
                          "finished", "node", "parent_node"}
        assert 0 <= c["row"] < 4 and isinstance(c["logp"], float) and (c["node"] is None) != c["kept"]
    assert final["type"] == "final"
    assert [s["ids"] for s in final["results"][0]["sequences"]] == [s["ids"] for s in result["sequences"]]


@pytest.mark.parametrize("name", RECIPES)
def test_every_kept_hypothesis_reaches_the_prompt_and_every_result_is_a_path(traces, name):
    _, lines, result = traces[name]
    nodes = kept_nodes(lines)
    for c in (x for x in lines if x["type"] == "cand"):
        if c["parent_node"] is not None:
            assert not nodes[c["parent_node"]]["finished"]  # nothing extends a finished hypothesis
        steps, ref = 0, c["parent_node"]
        while ref is not None:  # the parent chain climbs one step at a time to the prompt
            assert nodes[ref]["step"] == c["step"] - 1 - steps
            ref = nodes[ref]["parent_node"]
            steps += 1
        assert steps == c["step"]
    assert len(lines[-1]["results"][0]["sequences"]) == len(result["sequences"])
    assert result_path_problems(lines) == [], name


def result_path_problems(lines) -> list[str]:
    """Each returned sequence whose node's path (tokens up the parent chain) does not spell
    its ids, or that ended on EOS at a node not marked finished."""
    nodes, wrong = kept_nodes(lines), []
    for result in lines[-1]["results"]:
        for rank, seq in enumerate(result["sequences"]):
            path = _path(nodes, seq["node"])
            if path != seq["ids"]:
                wrong.append(f"prompt {result['prompt']} #{rank + 1}: path {path} spells not {seq['ids']}")
            elif seq["finish"] == "eos" and not nodes[seq["node"]]["finished"]:
                wrong.append(f"prompt {result['prompt']} #{rank + 1}: ends on EOS at an unfinished node")
    return wrong


def test_a_corrupted_parent_breaks_the_result_path_check(traces):
    """The path check above can fail: a result's node moved under another node of the same
    step (the chain still climbs one step at a time) no longer spells the result."""
    _, lines, _ = traces["beam"]
    lines = copy.deepcopy(lines)
    nodes = kept_nodes(lines)
    end = nodes[next(q for q in lines[-1]["results"][0]["sequences"] if len(q["ids"]) > 1)["node"]]
    parent = nodes[end["parent_node"]]
    other = next(n for n, c in nodes.items() if c["step"] == parent["step"]
                 and _path(nodes, n) != _path(nodes, end["parent_node"]))
    assert result_path_problems(lines) == []
    end["parent_node"] = other
    assert result_path_problems(lines)


def test_beam_keeps_k_hypotheses_at_every_step_but_the_last(traces):
    _, lines, _ = traces["beam"]
    cands = [c for c in lines if c["type"] == "cand"]
    last = max(c["step"] for c in cands)
    for step in range(last):
        going = [c for c in cands if c["step"] == step and c["kept"] and not c["finished"]]
        assert len(going) == 4, step
    assert any(c["finished"] for c in cands)  # the tiny model's EOS (newline) does come


def test_diverse_groups_are_recorded(traces):
    _, lines, _ = traces["diverse"]
    assert lines[0]["groups"] == 2
    assert {c["group"] for c in lines if c["type"] == "cand" and c["kept"]} == {0, 1}


def _path(nodes: dict, node) -> list[int]:
    path = []
    while node is not None:
        path.append(nodes[node]["token"])
        node = nodes[node]["parent_node"]
    return path[::-1]


def _recorded_against_true_rows(m, plan, prompts):
    """Record a trace and, beside it, each row's true tokens, rebuilt from the rows the engine
    says each new row continues. Yields (a row's node, its node's path, its true tokens up to
    its first EOS) for every row of every prompt at every step."""
    from decode.compiler.engine import eos_ids, run
    from decode.traces.record import TraceRecorder
    from decode.traces.tree import DEAD

    buf, seen = io.StringIO(), []
    rec = TraceRecorder(buf, plan, m, prompts)

    def on_step(t, tokens, info):
        rec(t, tokens, info)
        seen.append((tokens.tolist(), info["from"].tolist(), [list(tree.rows) for tree in rec.trees]))

    rec.finish(run(plan, m, prompts, compiled=False, on_step=on_step, trace=True, seeds=[1, 2]))
    nodes = kept_nodes([json.loads(x) for x in buf.getvalue().splitlines()])
    eos, history = set(eos_ids(m)), None
    for tokens, parents, rows in seen:
        history = [(history[p] if history else []) + [tok] for p, tok in zip(parents, tokens)]
        k = len(tokens) // len(prompts)
        for r, ids in enumerate(history):
            true = next((ids[:i + 1] for i, tok in enumerate(ids) if tok in eos), ids)
            node = rows[r // k][r % k]
            yield node, None if node == DEAD else _path(nodes, node), true


@pytest.mark.parametrize("name", [*RECIPES, "user sampler"])
def test_every_rows_recorded_node_spells_the_tokens_the_engine_gave_that_row(model, name):
    """The recorder's rows against the engine's own parents: a row's node spells exactly the
    row's tokens (to its EOS), and a row of greedy or sampling is never dropped, even for a
    search the recorder has never heard of (a user's sampler, not named Greedy) drawing a
    token the step did not list."""
    import decode
    from decode.compiler.plan import compile as lower

    plan = lower(RECIPES["sample" if name == "user sampler" else name])
    if name == "user sampler":
        plan = dataclasses.replace(plan, search=type("MySampler", (plan.search,), {}))
    checked = 0
    for node, path, true in _recorded_against_true_rows(decode.load(model), plan, ["ROMEO:", [1, 40, 41, 42]]):
        if name in ("greedy", "sample", "user sampler"):  # rows that never move nor stop early
            assert path is not None, (name, true)
        if path is not None:
            assert path == true, name
            checked += 1
    assert checked


# -- one tree rebuilder, for the recorder and decode.steps ----------------------------------

def _fed(plan, m, prompt="ROMEO:"):
    """A TraceRecorder and decode.steps' builder fed the same two hand-made steps of one
    prompt with two rows: step 0 keeps tokens 5 and 6 of the prompt; at step 1 row 0 takes
    its kept 8, row 1 takes 11, which no candidate lists. Returns (trace lines, the steps)."""
    import torch

    from decode.traces.record import TraceRecorder
    from decode.traces.steps import _Builder

    records = [(0, [5, 6], {"token": [[5, 6, 7]], "logp": [[-0.1, -0.5, -1.0]], "parent": [[0, 0, 0]],
                            "kept": [[True, True, False]], "finished": [[False] * 3], "from": [0, 0]}),
               (1, [8, 11], {"token": [[8, 9]], "logp": [[-0.3, -0.7]], "parent": [[0, 1]],
                             "kept": [[True, False]], "finished": [[False] * 2], "from": [0, 1]})]
    buf = io.StringIO()
    rec, build = TraceRecorder(buf, plan, m, [prompt]), _Builder(plan, m, prompt)
    steps = []
    for t, tokens, info in records:
        info = {**info, "group": [[0] * len(info["token"][0])], "penalty": [[0.0] * len(info["token"][0])]}
        rec(t, torch.tensor(tokens), {k: torch.tensor(v) for k, v in info.items()})
        steps.append(build.step(t, tokens, info))
    return [json.loads(x) for x in buf.getvalue().splitlines()], steps


@pytest.mark.parametrize("recipe", ["beam 2 | max 4", "sample 2 | max 4"])
def test_a_chosen_token_no_candidate_lists_gets_an_unlisted_node_whatever_the_search(demo, recipe):
    from decode.compiler.plan import compile as lower

    lines, steps = _fed(lower(recipe), demo)
    six = next(c["node"] for c in lines if c["type"] == "cand" and c["token"] == 6)
    unlisted = [c for c in lines if c["type"] == "cand" and c["logp"] is None]
    assert [(c["step"], c["row"], c["token"], c["kept"], c["parent_node"]) for c in unlisted] == \
        [(1, 1, 11, True, six)]
    assert [(r.ids, r.active) for r in steps[1].rows] == [([5, 8], True), ([6, 11], True)]
    assert steps[1].rows[1].score is None  # its log-prob is unknown
    assert [c.token for c in steps[1].candidates] == [8, 9]  # no made-up candidate is shown


@pytest.mark.parametrize("ranks_sequences", [False, True])
@pytest.mark.parametrize("pad, eos", [(0, [2]), (2, [2])])
def test_a_row_writing_padding_has_stopped_unless_the_padding_is_an_eos_it_may_have_drawn(
        ranks_sequences, pad, eos):
    """Two rows of the prompt write the padding. Row 0's the step lists, unkept (a done
    group, a stopped row): no node. Row 1's no candidate lists: no node either, unless the
    padding is an EOS that a search listing only a few candidates per row may have drawn."""
    from decode.traces.tree import DEAD, Tree

    tree = Tree(rows=2, eos=eos, pad=pad, ranks_sequences=ranks_sequences)
    listed = {"token": pad, "logp": -1.0, "row": 0, "kept": False, "finished": False, "group": 0, "penalty": 0.0}
    seen = tree.step([listed], chosen=[pad, pad], sources=[0, 1])
    drawn = pad in eos and not ranks_sequences
    assert tree.rows[0] == DEAD and (tree.rows[1] != DEAD) == drawn
    assert [(s.row, s.logp, s.finished) for s in seen if s.kept] == ([(1, None, True)] if drawn else [])


def test_steps_and_the_trace_rebuild_the_same_tree(traces, model):
    """At every step, the trace's kept nodes spell exactly decode.steps' rows going on and the
    hypotheses that ended there."""
    import decode

    m = decode.load(model)
    for name in ("greedy", "sample", "beam", "diverse", "sbeam"):
        _, lines, _ = traces[name]
        nodes = kept_nodes(lines)
        for st in decode.steps(m, RECIPES[name], "ROMEO:", seed=5):
            traced = sorted(_path(nodes, n) for n, c in nodes.items() if c["step"] == st.t)
            shown = sorted([r.ids for r in st.rows if r.active and len(r.ids) == st.t + 1]
                           + [h.ids for h in st.finished if h.step == st.t])
            assert traced == shown, (name, st.t)


def test_trace_groups_come_from_the_search_not_a_parameter_name(demo):
    from decode.compiler.plan import compile as lower
    from decode.compiler.search.beam import Beam
    from decode.traces.record import TraceRecorder

    grouped = dataclasses.replace(lower("beam 4"), search=type("Grouped", (Beam,), {"groups": 2}))
    named = dataclasses.replace(lower("beam 4 | diverse groups=2"), search=Beam)  # "groups", no groups
    assert [TraceRecorder(io.StringIO(), p, demo, ["a"]).groups for p in (grouped, named)] == [2, 1]


@pytest.mark.parametrize("name, alias", [("beam", "Greedy"), ("sample", "StochasticBeam")])
def test_nothing_in_a_trace_depends_on_the_search_class_name(model, tmp_path, capsys, name, alias):
    """The header names the search's class; the tree, and viz's drawing of it, do not change
    when the class is called something else."""
    import decode
    from decode.compiler.engine import run
    from decode.compiler.plan import compile as lower
    from decode.traces.record import TraceRecorder

    m, plan = decode.load(model), lower(RECIPES[name])
    drawn = []
    for p in (plan, dataclasses.replace(plan, search=type(alias, (plan.search,), {}))):
        path = tmp_path / f"{p.search.__name__}.jsonl"
        with path.open("w") as f:
            rec = TraceRecorder(f, p, m, ["ROMEO:"])
            rec.finish(run(p, m, ["ROMEO:"], compiled=False, on_step=rec, trace=True, seed=5))
        head, *rest = path.read_text().splitlines()
        assert main(["viz", str(path)]) == 0
        out = capsys.readouterr().out.replace(f"search={p.search.__name__}", "search=?")
        drawn.append((json.loads(head) | {"search": "?"}, rest, out))
    assert drawn[0] == drawn[1]


# -- decode viz --------------------------------------------------------------------------

def test_terminal_tree_shows_kept_text_results_and_pruned(traces, capsys):
    path, lines, result = traces["beam"]
    assert main(["viz", str(path)]) == 0
    out = capsys.readouterr().out
    assert "prompt 0: ROMEO:" in out and "beam 4 | max 10" in out
    for rank in range(1, 5):
        assert f"← #{rank} score" in out
    assert "✗ pruned:" in out and "■ finished" in out


def test_terminal_tree_of_greedy_is_one_line_of_its_tokens(traces, capsys):
    path, lines, result = traces["greedy"]
    assert main(["viz", str(path), "--pruned", "0"]) == 0
    out = capsys.readouterr().out
    pieces = [c["text"].replace("\n", "↵") for c in lines if c["type"] == "cand" and c["kept"]]
    assert len(pieces) == len(result["sequences"][0]["ids"])
    assert any("".join(pieces) in line for line in out.splitlines()) and "pruned" not in out


class Page(HTMLParser):
    """Counts what the structure test checks."""

    def __init__(self):
        super().__init__()
        self.tags, self.kept, self.pruned, self.more, self.trees = [], [], 0, 0, 0
        self.attrs, self._in_more, self._title_for = [], False, None
        self.names = []
        self.titles = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs += [v or "" for _, v in attrs]
        self.names += [k for k, _ in attrs]
        cls = a.get("class", "").split()
        self.trees += tag == "svg" and "tree" in cls
        if tag == "g" and "kept" in cls:
            self.kept.append(a)
            self._title_for = "kept"
        if tag == "g" and "pruned" in cls:
            if "more" in cls:
                self._in_more = True
            else:
                self.pruned += 1

    def handle_data(self, data):
        if self._in_more and data.startswith("+"):
            self.more += int(data[1:])
            self._in_more = False
        if self.tags and self.tags[-1] == "title" and self._title_for == "kept":
            self.titles.append(data)
            self._title_for = None


@pytest.mark.parametrize("name", ["greedy", "sample", "beam", "diverse", "diverse_sampling"])
def test_html_page_is_self_contained_with_one_node_per_kept_token(traces, name, tmp_path, capsys):
    path, lines, _ = traces[name]
    page = tmp_path / "tree.html"
    assert main(["viz", str(path), "--html", str(page)]) == 0
    text = page.read_text()
    parser = Page()
    parser.feed(text)
    cands = [c for c in lines if c["type"] == "cand"]
    assert parser.trees == 1  # one tree per prompt
    assert len(parser.kept) == sum(c["kept"] for c in cands)
    assert sorted(int(a["data-node"]) for a in parser.kept) == sorted(c["node"] for c in cands if c["kept"])
    shown = {(c["prompt"], c["parent_node"], c["token"]) for c in cands if not c["kept"]} - \
        {(c["prompt"], c["parent_node"], c["token"]) for c in cands if c["kept"]}
    assert parser.pruned + parser.more == len(shown)  # each pruned token once per node
    assert all("logp" in t for t in parser.titles) and len(parser.titles) == len(parser.kept)
    assert parser.tags.count("script") == 1 and "link" not in parser.tags and "img" not in parser.tags
    assert "src" not in parser.names  # the one script is inline: zoom and pan, nothing fetched
    assert 'preserveAspectRatio="xMinYMin meet"' in text and "width: 100%" in text  # fits the window
    assert not re.search(r"https?:|//[a-z]", text) and not any("url(" in v for v in parser.attrs)
    if name.startswith("diverse"):
        assert {a["data-group"] for a in parser.kept} == {"0", "1"}


def test_viz_starts_without_torch(traces):
    path, _, _ = traces["beam"]
    code = ("import sys; from decode.cli import main; assert main(['viz', sys.argv[1]]) == 0; "
            "assert 'torch' not in sys.modules, 'viz imported torch'")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_viz_of_something_else_is_a_clean_error(tmp_path, capsys):
    f = tmp_path / "out.jsonl"
    f.write_text('{"id": 1, "prompt": "x"}\n')
    assert main(["viz", str(f)]) == 1
    err = capsys.readouterr().err
    assert "a trace starts with a header line" in err and "Traceback" not in err
    assert main(["viz", str(tmp_path / "missing.jsonl")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_viz_draws_a_trace_cut_short_by_an_interrupt(traces, tmp_path, capsys):
    path, lines, _ = traces["beam"]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # no final line
    assert main(["viz", str(cut)]) == 0
    out = capsys.readouterr().out
    assert "the run stopped early" in out and "← #" not in out
    assert main(["viz", str(cut), "--html", str(tmp_path / "cut.html")]) == 0
    assert "stopped before the end" in (tmp_path / "cut.html").read_text()


def test_a_line_break_inside_a_token_stays_inside_its_json_line():
    """Text is written unescaped, but U+2028/U+2029/U+0085 end a line for str.splitlines."""
    from decode import jsonl

    obj = {"piece": "a\u2028b\u2029c\x85d\ne"}
    line = jsonl.dumps(obj)
    assert line.splitlines() == [line]
    assert json.loads(line) == obj
