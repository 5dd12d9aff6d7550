"""User-defined searches: `@decode.search` makes a `decode.Search` subclass a clause, loaded
by `--stage FILE` like a user stage. Mirostat 2.0, once the shipped example search, is now a
built-in stage with state: it is checked by distribution against a plain enumeration, and
token for token against the old search (tests/plugins/mirostat_search.py), which also runs
from the CLI, in `decode.steps`, and compiled. The shipped beam variant
(recipes/plugins/wordreward.py) is in tests/test_beam_variant.py.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

import decode
from decode.cli import main
from table_model import TableModel, chi_square

ROOT = Path(__file__).resolve().parents[1]
MIROSTAT = ROOT / "tests" / "plugins" / "mirostat_search.py"
EOS = 7


pytestmark = pytest.mark.usefixtures("restore_catalogue")  # plugins register clauses


@pytest.fixture(scope="module")
def table():
    return TableModel.random(11, scale=2.0)


def mirostat_probs(model, prompt, tau, eta, max_new):
    """Every sequence Mirostat 2.0 can produce, with its probability, written out: keep the
    tokens whose surprise (bits) is at most mu (and the likeliest), draw from them
    renormalised, move mu by eta times (the draw's surprise - tau)."""
    out = {}

    def walk(seq, mu, p):
        if seq and (seq[-1] == EOS or len(seq) == max_new):
            out[tuple(seq)] = p
            return
        lp = torch.log_softmax(model.table[(prompt + seq)[-1]].double(), -1).tolist()
        best = max(range(len(lp)), key=lambda v: lp[v])
        keep = [v for v in range(len(lp)) if -lp[v] / math.log(2) <= mu or v == best]
        z = math.log(sum(math.exp(lp[v]) for v in keep))
        for v in keep:
            lq = lp[v] - z
            walk(seq + [v], mu - eta * (-lq / math.log(2) - tau), p * math.exp(lq))

    walk([], 2 * tau, 1.0)
    return out


def test_the_old_mirostat_search_still_declares_one_search():
    assert decode.load_stages(MIROSTAT) == ["mirostat_search"]
    r = decode.parse("mirostat_search 2 tau=3 | temp 0.9")
    assert r.search.name == "mirostat_search" and r.sampling
    assert r.canonical == "mirostat_search 2 tau=3.0 | temp 0.9"
    assert decode.load_stages(MIROSTAT) == ["mirostat_search"]  # loading it again re-declares it


def test_the_mirostat_stage_is_one_small_file():
    assert len((ROOT / "compiler" / "stages" / "mirostat.py").read_text().splitlines()) <= 30


@pytest.mark.parametrize("tau,eta", [(1.5, 0.5), (2.0, 1.0)])
def test_mirostat_draws_follow_the_enumerated_distribution(table, tau, eta):
    n, prompt = 4000, [0, 3]
    exact = mirostat_probs(table, prompt, tau, eta, 3)
    assert len(exact) > 5  # several paths, and mu moves along them
    out = decode.generate(table, f"sample {n} | mirostat tau={tau} eta={eta} | max 3", [prompt], seed=1,
                          compile=False)
    counts = Counter(tuple(s.ids) for s in out[0].sequences)
    stat, p, df = chi_square(counts, exact, n)
    assert p > 1e-3, f"chi-square {stat:.1f} on {df} df, p = {p:.2e}"
    plain = mirostat_probs(table, prompt, 100.0, 0.0, 3)  # a test that could fail: no truncation
    assert chi_square(counts, {**plain, **{k: 1e-12 for k in exact if k not in plain}}, n)[1] < 1e-3


@pytest.mark.parametrize("stages", ["", "topk 5 |", "temp 0.8 |"])
def test_the_mirostat_stage_gives_the_old_searchs_tokens_and_scores(table, stages):
    decode.load_stages(MIROSTAT)
    prompts = [[0, 3], [1], [5, 2, 6]]
    stage = decode.generate(table, f"sample 6 | {stages} mirostat tau=2 eta=0.3 | max 7", prompts, seed=4,
                            compile=False)
    search = decode.generate(table, f"mirostat_search 6 tau=2 eta=0.3 | {stages} max 7", prompts, seed=4,
                             compile=False)
    got = [sorted((s.ids, round(s.score, 5)) for s in c.sequences) for c in stage]  # sample: best first;
    assert got == [sorted((s.ids, round(s.score, 5)) for s in c.sequences) for c in search]  # the plugin: rows
    assert len({tuple(s.ids) for c in stage for s in c.sequences}) > 3  # it samples


def test_the_old_search_runs_from_the_cli_with_stage(capsys):
    code = main(["run", "--stage", str(MIROSTAT), "mirostat_search 2 tau=3 | max 6", "--prompt", "ROMEO:",
                 "--json", "--no-compile", "--seed", "1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["recipe"] == "mirostat_search 2 tau=3.0 | max 6" and len(out["sequences"]) == 2
    assert main(["explain", "--stage", str(MIROSTAT), "mirostat_search tau=3"]) == 0
    assert "Mirostat 2.0" in capsys.readouterr().out


def test_a_user_search_shows_in_steps_and_agrees_with_generate():
    decode.load_stages(MIROSTAT)
    m = decode.load()
    steps = list(decode.steps(m, "mirostat_search 2 tau=3 | max 6 | seed 3", "ROMEO:"))
    want = decode.generate(m, "mirostat_search 2 tau=3 | max 6 | seed 3", ["ROMEO:"], compile=False)[0]
    assert [s.ids for s in steps[-1].result.sequences] == [s.ids for s in want.sequences]
    assert [r.ids for r in steps[-1].rows] == [s.ids for s in want.sequences]
    # no trace code in the search: each step lists both rows' draws, kept, among their alternatives
    assert all(sum(c.kept for c in st.candidates) == 2 and len(st.candidates) >= 2 for st in steps)


@pytest.mark.slow  # ~20 s of compiling
def test_compiled_user_search_gives_the_eager_tokens(table):
    decode.load_stages(MIROSTAT)
    recipe = "mirostat_search 8 tau=2 eta=0.3 | topk 5 | max 6"
    eager = decode.generate(table, recipe, [[0, 3], [1]], seed=2, compile=False)
    compiled = decode.generate(table, recipe, [[0, 3], [1]], seed=2, compile=True)
    assert [[s.ids for s in c.sequences] for c in compiled] == [[s.ids for s in c.sequences] for c in eager]


# -- the decorator -----------------------------------------------------------------------------

def test_an_inline_search_implementing_the_interface_runs(table):
    @decode.search("firstbest", doc="greedy written as a user search")
    class FirstBest(decode.Search):
        logprobs = False

        def step(self, scores, at, state):
            x = at.process(scores, None)
            tok = x.argmax(-1)
            return decode.Choice(tok, None, at.score + torch.log_softmax(x, -1).gather(1, tok[:, None])[:, 0])

    out = decode.generate(table, "firstbest | max 4", [[0, 3]], compile=False)[0].sequences[0]
    greedy = decode.generate(table, "greedy | max 4", [[0, 3]], compile=False)[0].sequences[0]
    assert (out.ids, out.score, out.finish) == (greedy.ids, greedy.score, greedy.finish)


WHOLE = {"step": lambda *a: None}


@pytest.mark.parametrize("declare,message", [
    (lambda: decode.search("beam", doc="x")(type("B", (decode.Search,), WHOLE)), "already taken .*built-in"),
    (lambda: decode.search("plain", doc="x")(object), "derived from decode.Search"),
    (lambda: decode.search("half", doc="x")(type("H", (decode.Search,), {"init": lambda *a: {}})),
     "must define step"),
    (lambda: decode.search("1x", doc="x")(type("X", (decode.Search,), {})), "search name '1x'"),
    (lambda: decode.search("stepbeam", doc="x")(type("S", (decode.Beam,), WHOLE)), "changes `rescore`, not `step`"),
    (lambda: decode.search("nodoc")(type("N", (decode.Search,), WHOLE)), "give doc="),
])
def test_declaration_mistakes_are_reported_in_words(declare, message):
    with pytest.raises(decode.PluginError, match=message):
        declare()


def test_two_files_cannot_declare_the_same_search(tmp_path):
    src = MIROSTAT.read_text()
    (tmp_path / "copy.py").write_text(src)
    decode.load_stages(MIROSTAT)
    with pytest.raises(decode.PluginError, match="already taken"):
        decode.load_stages(tmp_path / "copy.py")


# -- a search that goes wrong: one PluginError naming its file and line -----------------------

WILD = """import torch
import decode


@decode.search("wild", doc="greedy, with a step that goes wrong at t = 2")
class Wild(decode.Search):
    logprobs = False

    def init(self, device, seq_len):
        return {"n": torch.zeros((), device=device)}

    def step(self, scores, at, state):
        tok, t = at.process(scores, None).argmax(-1), at.t
        return decode.Choice(WRONG, None, at.score, {"n": state["n"] + 1})

    def done(self, state):
        return state["own"]["n"] < 0
"""


def wild(tmp_path, wrong: str) -> Path:
    path = tmp_path / "wild.py"
    path.write_text(WILD.replace("WRONG", wrong))
    decode.load_stages(path)
    return path


@pytest.mark.parametrize("compiled", [False, True])
def test_a_search_returning_ids_outside_the_vocabulary_is_named_not_decoded(tmp_path, table, compiled):
    path = wild(tmp_path, "torch.where(t == 2, 100, tok)")
    with pytest.raises(decode.PluginError) as err:  # compiled: found in the graph, reported without a sync
        decode.generate(table, "wild | max 5", [[0], [1]], compile=compiled)
    assert str(err.value) == (f"plugin search 'wild' ({path}:12) returned token id 100 for row 0 at "
                              "step 2, outside the model's vocabulary (0..7); a search's step must return "
                              "token ids in 0..7")


@pytest.mark.parametrize("wrong, returned", [
    ("tok.float()", "tokens of shape [1] and dtype float32"),
    ("tok[:, None]", "tokens of shape [1, 1] and dtype int64"),
    ("None", "tokens as None"),
])
def test_a_search_step_returning_the_wrong_shape_or_dtype_is_named(tmp_path, table, wrong, returned):
    path = wild(tmp_path, wrong)
    with pytest.raises(decode.PluginError) as err:
        decode.generate(table, "wild | max 5", [[0]], compile=False)
    assert str(err.value) == (f"plugin search 'wild' ({path}:12): step returned {returned}; step must return "
                              "decode.Choice(tokens [1] int64, parents [1] int64 or None, scores [1] float, "
                              "state dict or None)")


def test_a_search_that_raises_names_the_line_that_raised(tmp_path, table):
    path = wild(tmp_path, "tok if t.dim() else tok")
    path.write_text(path.read_text().replace("return state[\"own\"][\"n\"] < 0", "raise KeyError('n')"))
    decode.load_stages(path)
    with pytest.raises(decode.PluginError) as err:
        decode.generate(table, "wild | max 8", [[0]], compile=False)
    assert str(err.value) == f"plugin search 'wild' ({path}:17) raised KeyError: 'n'; fix the plugin"


def test_a_search_can_change_the_hidden_states_before_the_head():
    """`before_head` reaches the llama's forward (no built-in search uses it now: npad adds its
    noise through the head): pushing each row's last state along token X's output embedding
    makes greedy decoding take X at every step, the first (after the prompt) included. X is the
    token of the longest embedding, so no other token's gains as much: w_v·w_x < |w_x|²."""
    model = decode.load()
    x = int(model.output.weight.norm(dim=-1).argmax())

    @decode.search("pushed", doc="greedy with every state pushed toward one token")
    class Pushed(decode.Search):
        logprobs, hidden = False, "pushed"

        def before_head(self, keys, t, hp):
            return lambda h: h + 1000 * model.output.weight[x]

        def step(self, scores, at, state):
            tok = at.process(scores, None).argmax(-1)
            return decode.Choice(tok, None, at.score + torch.log_softmax(scores, -1).gather(1, tok[:, None])[:, 0])

    out = decode.generate(model, "pushed | max 3", ["To be"], compile=False)[0].sequences[0]
    assert out.ids == [x] * 3
    assert decode.generate(model, "greedy | max 3", ["To be"], compile=False)[0].sequences[0].ids != [x] * 3
