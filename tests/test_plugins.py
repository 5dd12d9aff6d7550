"""User-defined stages: `@decode.stage` makes a tensor function a clause of the language that
the parser, the CLI (`--stage FILE`) and the compiler treat like a built-in one; the shipped
example (recipes/plugins/edt.py, entropy-based dynamic temperature) end to end.
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
from decode.dsl import ClauseSpec, Param, fmt, register
from decode.dsl.docs import reference_markdown
from table_model import TableModel, chi_square, sequence_probs

ROOT = Path(__file__).resolve().parents[1]
EDT = ROOT / "recipes" / "plugins" / "edt.py"
EDT_RECIPE = ROOT / "recipes" / "plugins" / "edt.dec"


pytestmark = pytest.mark.usefixtures("restore_catalogue")  # plugins register clauses


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    from llama_factory import make_hf_llama

    return make_hf_llama(tmp_path_factory.mktemp("plugin") / "m", vocab=61, seed=5)


@pytest.fixture(scope="module")
def table():
    return TableModel.random(3, scale=2.0)


def only_token():
    """A user stage that leaves one token possible: greedy must then pick it every step."""
    @decode.stage("only", args=[decode.Arg("token", int, lo=0, static=True)],
                  doc="forbid every token but TOKEN")
    def only(logits, ctx, token):
        assert isinstance(token, int)  # static: a Python value
        keep = torch.arange(logits.shape[-1], device=logits.device) == token
        return logits.masked_fill(~keep, float("-inf"))

    return only


# -- the decorator -------------------------------------------------------------------------

def test_a_decorated_function_becomes_a_clause_the_language_knows():
    @decode.stage("scale", args=[decode.Arg("s", float, 2.0, lo=0.0, doc="factor"),
                                 decode.Arg("mode", "enum", "mul", choices=("mul", "div"), keyword=True)],
                  doc="scale the logits", cite="nobody 2025")
    def scale(logits, ctx, s, mode):
        return logits * s if mode == "mul" else logits / s

    r = decode.parse("beam 4 | scale 3 mode=div")
    assert r.stages[0]["s"] == 3.0 and r.stages[0]["mode"] == "div"
    assert fmt("scale | beam 4") == "beam 4 | scale"
    assert not decode.parse("scale 0.5").sampling
    assert "### `scale [S] [mode=mul]`" in reference_markdown() and "nobody 2025" in reference_markdown()
    with pytest.raises(decode.RecipeError, match="out of range"):
        decode.parse("scale -1")
    with pytest.raises(decode.RecipeError, match="must be one of mul, div"):
        decode.parse("scale mode=pow")


def test_numbers_arrive_as_tensors_unless_static():
    seen = {}

    @decode.stage("probe", args=[decode.Arg("a", float), decode.Arg("n", int, 2, static=True, keyword=True)],
                  doc="record what the kernel receives")
    def probe(logits, ctx, a, n):
        seen.update(a=a, n=n)
        return logits + a

    logits = torch.zeros(2, 5)
    out = decode.transform("probe 0.5 n=3", logits, torch.tensor([[1, 2], [3, 4]]))
    assert torch.equal(out, torch.full((2, 5), 0.5))
    assert isinstance(seen["a"], torch.Tensor) and seen["a"].dim() == 0 and seen["n"] == 3


def test_sampling_flag_makes_a_recipe_sample_and_a_predicate_decides_per_value():
    @decode.stage("hot", args=[decode.Arg("t", float)], doc="a temperature", sampling=lambda p: p["t"] > 0)
    def hot(logits, ctx, t):
        return logits / t

    assert decode.parse("hot 0.5").sampling and not decode.parse("hot 0").sampling


def test_prepare_runs_on_the_host_once_with_the_tokenizer():
    calls = []

    def prepare(params, tokenizer):
        calls.append(tokenizer)
        return {"ids": [int(c) for c in params["digits"]]}

    @decode.stage("boost", args=[decode.Arg("digits", str)], doc="add 1 to the listed token ids",
                  prepare=prepare)
    def boost(logits, ctx, ids):
        return logits.index_add(1, torch.tensor(ids), torch.ones(logits.shape[0], len(ids)))

    out = decode.transform('boost "13"', torch.zeros(1, 4), torch.tensor([[0]]))
    assert out.tolist() == [[0.0, 1.0, 0.0, 1.0]] and calls == [None]


def test_the_compiler_dispatches_to_the_user_function(table):
    only_token()
    out = decode.generate(table, "greedy | only 4 | max 3", [[0, 1]], compile=False)
    assert out[0].sequences[0].ids == [4, 4, 4]
    out = decode.generate(table, "beam 2 | only 5 | max 2", [[0, 1]], compile=False)
    assert out[0].sequences[0].ids == [5, 5]


@pytest.mark.parametrize("declare, message", [
    (lambda: decode.stage("topp", doc="x")(lambda logits, ctx: logits), "already taken .as a built-in"),
    (lambda: decode.stage("2fast", doc="x")(lambda logits, ctx: logits), "letters, digits"),
    (lambda: decode.stage("true", doc="x")(lambda logits, ctx: logits), "letters, digits"),
    (lambda: decode.stage("nodoc")(lambda logits, ctx: logits), "give doc="),
    (lambda: decode.stage("badarg", args=[decode.Arg("a", list)], doc="x")(lambda logits, ctx, a: logits),
     "use int, float, str or bool"),
    (lambda: decode.stage("sig", args=[decode.Arg("a")], doc="x")(lambda logits, ctx: logits),
     r"must take \(logits, ctx, a\)"),
    (lambda: decode.stage("twice", args=[decode.Arg("a"), decode.Arg("a")], doc="x")(lambda l, c, a: l),
     "share a name"),
    (lambda: decode.stage("noenum", args=[decode.Arg("m", "enum")], doc="x")(lambda l, c, m: l),
     "an enum needs choices"),
])
def test_a_wrong_declaration_says_what_to_fix(declare, message):
    with pytest.raises(decode.PluginError, match=message):
        declare()


def test_unknown_clause_suggests_user_stages_too():
    decode.load_stages(EDT)
    with pytest.raises(decode.RecipeError) as err:
        decode.parse("sample | edtt 0.5")
    assert err.value.suggestion == "edt"


def test_a_built_in_stage_is_a_kernel_module_plus_a_catalogue_entry(table):
    """No other list of stages: registering an entry whose impl names a kernel module is enough."""
    register(ClauseSpec("halftemp", "logit", "temperature under another name",
                        positional=(Param("t", "float", lo=0.0),), sampling=True,
                        impl="decode.compiler.stages.temp"))
    a = decode.generate(table, "sample 16 | halftemp 0.5 | max 3", [[0]], seed=4, compile=False)
    b = decode.generate(table, "sample 16 | temp 0.5 | max 3", [[0]], seed=4, compile=False)
    assert [s.ids for s in a[0].sequences] == [s.ids for s in b[0].sequences]


# -- stage files ---------------------------------------------------------------------------

def test_load_stages_returns_the_clauses_a_file_declares_and_loading_again_is_harmless():
    assert decode.load_stages(EDT) == ["edt"]
    assert decode.load_stages(EDT) == ["edt"]
    assert decode.parse("sample | edt 0.8").sampling


def test_another_file_may_not_take_a_declared_name(tmp_path):
    decode.load_stages(EDT)
    other = tmp_path / "mine.py"
    other.write_text("import decode\n"
                     "@decode.stage('edt', doc='mine')\n"
                     "def edt(logits, ctx):\n    return logits\n")
    # the first declaration's file and line, as every plugin message names a function
    line = next(i for i, text in enumerate(EDT.read_text().splitlines(), 1) if text.startswith("@decode.stage"))
    with pytest.raises(decode.PluginError,
                       match=rf"mine.py: stage 'edt': the name is already taken \(by .*edt.py:{line}\)"):
        decode.load_stages(other)


@pytest.mark.parametrize("body, message", [
    ("import decode\nx = 1\nraise RuntimeError('boom')\n", "line 3: RuntimeError: boom"),
    ("def f(:\n", "line 1: "),
    ("import no_such_module_here\n", "line 1: ModuleNotFoundError: No module named"),
])
def test_a_broken_stage_file_is_one_error_naming_file_and_line(tmp_path, body, message):
    bad = tmp_path / "bad.py"
    bad.write_text(body)
    with pytest.raises(decode.PluginError, match=f"cannot load stage file .*bad.py: {message}"):
        decode.load_stages(bad)


def write_pick(path: Path, value: float) -> Path:
    path.write_text("import torch\nimport decode\n\n"
                    "@decode.stage('pick', args=[decode.Arg('tok', int)], doc='set one logit')\n"
                    "def pick(logits, ctx, tok):\n"
                    f"    return torch.where(torch.arange(logits.shape[-1]) == tok, {value}, logits)\n")
    return path


def test_reloading_an_edited_stage_file_redeclares_its_stage(tmp_path):
    """A notebook workflow: edit the file, load it again; the new definition counts."""
    ids, logits = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 4)
    decode.load_stages(write_pick(tmp_path / "pick.py", 100.0))
    assert decode.transform("pick 2", logits, ids)[0, 2] == 100.0
    decode.load_stages(write_pick(tmp_path / "pick.py", -100.0))
    assert decode.transform("pick 2", logits, ids)[0, 2] == -100.0


def test_generate_uses_a_redeclared_stage(tmp_path, table):
    decode.load_stages(write_pick(tmp_path / "pick.py", 100.0))
    assert decode.generate(table, "greedy | pick 3 | max 1", [[0]], compile=False)[0].sequences[0].ids == [3]
    decode.load_stages(write_pick(tmp_path / "pick.py", -100.0))
    assert decode.generate(table, "greedy | pick 3 | max 1", [[0]], compile=False)[0].sequences[0].ids != [3]


# -- a stage that goes wrong: one PluginError naming its file and line ---------------------

def wrong_stage(tmp_path: Path, body: str) -> Path:
    """A stage file declaring 'wrong' (decorator on line 5) whose function body is `body` (line 7)."""
    path = tmp_path / "wrong.py"
    path.write_text("import sys\nimport torch\nimport decode\n\n"
                    "@decode.stage('wrong', doc='misbehave')\ndef wrong(logits, ctx):\n"
                    f"    {body}\n")
    decode.load_stages(path)
    return path


@pytest.fixture(scope="module")
def wide():
    """A table model with 32 tokens, so that a 10-column slice is not the whole vocabulary."""
    return TableModel.random(1, size=32)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("body, returned", [
    ("return None", "None"),
    ("return logits[0]", "a tensor of shape [32]"),
    ("return logits.long()", "a tensor of dtype int64"),
    ("return logits[:, :10]", "a tensor of shape [2, 10]"),
    ("return logits.tolist()", "a list"),
])
def test_a_stage_returning_anything_but_scores_of_its_input_shape_is_named(tmp_path, wide, body, returned,
                                                                           compiled):
    path = wrong_stage(tmp_path, body)
    message = (f"plugin stage 'wrong' ({path}:5) returned {returned}; a stage must return scores of the "
               "input's shape [2, 32] and dtype float32")
    with pytest.raises(decode.PluginError) as err:  # compiled: the eager first step finds it, no dynamo
        decode.generate(wide, "beam 2 | wrong | max 3", [[0]], compile=compiled)
    assert str(err.value) == message


@pytest.mark.parametrize("compiled", [False, True])
def test_a_stage_that_raises_names_the_line_that_raised(tmp_path, wide, compiled):
    path = wrong_stage(tmp_path, "raise ValueError('no scores today')")
    with pytest.raises(decode.PluginError) as err:
        decode.generate(wide, "greedy | wrong | max 3", [[0]], compile=compiled)
    assert str(err.value) == (f"plugin stage 'wrong' ({path}:7) raised ValueError: no scores today; "
                              "fix the plugin")


def test_transform_and_prepare_check_a_stage_too(tmp_path):
    wrong_stage(tmp_path, "return logits[:, :1]")
    with pytest.raises(decode.PluginError, match=r"returned a tensor of shape \[1, 1\]; .* shape \[1, 4\]"):
        decode.transform("wrong", torch.zeros(1, 4), torch.zeros(1, 1, dtype=torch.long))

    @decode.stage("unprepared", doc="a prepare that returns nothing", prepare=lambda params, tok: None)
    def unprepared(logits, ctx, **kw):
        return logits

    with pytest.raises(decode.PluginError, match="prepare returned None; it must return a dict"):
        decode.transform("unprepared", torch.zeros(1, 4), torch.zeros(1, 1, dtype=torch.long))


def test_a_stage_that_cannot_be_compiled_is_named_with_its_line(tmp_path, wide):
    path = wrong_stage(tmp_path, "return logits * 2 if logits.max().item() > 0 else logits")
    assert decode.generate(wide, "greedy | wrong | max 2", [[0]], compile=False)  # fine eagerly
    with pytest.raises(decode.PluginError) as err:
        decode.generate(wide, "greedy | wrong | max 2", [[0]], compile=True)
    assert str(err.value).startswith(f"plugin stage 'wrong' ({path}:7) cannot run in the compiled step (")
    assert "no .item()" in str(err.value) and "--no-compile" in str(err.value)


def test_a_plugin_calling_sys_exit_is_an_error_not_a_silent_exit(tmp_path, wide, capsys):
    loading = tmp_path / "quits.py"
    loading.write_text("import sys\n\nsys.exit(3)\n")
    with pytest.raises(decode.PluginError) as err:
        decode.load_stages(loading)
    assert str(err.value) == (f"plugin {loading}:3 called sys.exit(3); a plugin must raise an exception "
                              "instead")
    assert main(["check", "--stage", str(loading), "greedy"]) == 1
    assert capsys.readouterr().err == f"decode: {err.value}\n"

    path = wrong_stage(tmp_path, "sys.exit(3)")
    with pytest.raises(decode.PluginError) as err:
        decode.generate(wide, "greedy | wrong | max 3", [[0]], compile=False)
    assert str(err.value) == f"plugin {path}:7 called sys.exit(3); a plugin must raise an exception instead"


def test_run_reports_a_broken_stage_in_one_line_with_exit_1(tmp_path, tiny, capsys):
    path = tmp_path / "half.py"
    path.write_text("import decode\n\n@decode.stage('half', doc='keep ten logits')\n"
                    "def half(logits, ctx):\n    return logits[:, :10]\n")
    assert main(["run", "--stage", str(path), "greedy | half | max 3", "--prompt-ids", "1,5",
                 "--model", str(tiny)]) == 1  # compiled (the default)
    err = capsys.readouterr().err
    assert err == (f"decode: plugin stage 'half' ({path}:3) returned a tensor of shape [1, 10]; a stage "
                   "must return scores of the input's shape [1, 61] and dtype float32\n")


# -- the EDT example -------------------------------------------------------------------------

def edt_reference(logits: torch.Tensor, t0: float, theta: float, n: float) -> torch.Tensor:
    """EDT written out row by row in float64: T = T0 * N ** (theta / H)."""
    out = []
    for row in logits.double():
        p = torch.softmax(row, -1)
        h = -sum(float(q) * math.log(float(q)) for q in p if q > 0)
        temp = max(t0 * n ** (theta / h), 1e-3) if h > 0 else 1e-3
        out.append(row / temp)
    return torch.stack(out).float()


def test_edt_divides_each_row_by_its_entropy_temperature():
    decode.load_stages(EDT)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * torch.tensor([0.1, 1.0, 3.0, 8.0, 20.0, 2.0])[:, None]
    logits[5, 10:] = float("-inf")                      # tokens removed by an earlier stage
    ids = torch.zeros(6, 1, dtype=torch.long)
    for t0, theta, n in ((0.8, 1.0, 0.8), (1.2, 0.3, 0.5)):
        ours = decode.transform(f"edt {t0} theta={theta} n={n}", logits, ids)
        torch.testing.assert_close(ours, edt_reference(logits, t0, theta, n), rtol=1e-5, atol=1e-5)
    # theta=0 is a fixed temperature; a single possible token stays the single one, no nan
    assert torch.allclose(decode.transform("edt 0.7 theta=0", logits, ids), decode.transform("temp 0.7", logits, ids))
    one = torch.full((1, 5), float("-inf"))
    one[0, 2] = 3.0
    for recipe in ("edt 0.8", "edt 0.8 theta=0"):
        out = decode.transform(recipe, one, torch.zeros(1, 1, dtype=torch.long))
        assert not out.isnan().any() and torch.isfinite(out).sum() == 1


def test_edt_samples_from_its_processed_distribution(table):
    decode.load_stages(EDT)
    n, prompt = 10000, [0, 3]
    out = decode.generate(table, f"sample {n} | edt 0.8 theta=1.5 | max 2", [prompt], seed=21, compile=False)
    counts = Counter(tuple(s.ids) for s in out[0].sequences)
    stat, p, df = chi_square(counts, sequence_probs(table, "edt 0.8 theta=1.5", prompt, 2), n)
    assert p > 1e-3, f"chi-square {stat:.1f} on {df} df, p={p:.2e}"


# -- the CLI, end to end -----------------------------------------------------------------------

def test_check_accepts_a_user_stage_only_with_its_file(capsys):
    assert main(["check", str(EDT_RECIPE)]) == 1
    assert "unknown clause 'edt'" in capsys.readouterr().err
    assert main(["check", "--stage", str(EDT), str(EDT_RECIPE), "beam 4 | edt 0.3"]) == 0
    out = capsys.readouterr().out
    assert "recipes/plugins/edt.dec" in out and "beam 4 | edt 0.3" in out


def test_check_and_run_report_a_missing_stage_file(capsys, tmp_path):
    assert main(["check", "--stage", str(tmp_path / "nope.py"), "greedy"]) == 1
    assert "cannot load stage file" in capsys.readouterr().err
    assert main(["run", "--stage", str(tmp_path / "nope.py"), "greedy", "--prompt-ids", "1"]) == 1
    assert "no such file" in capsys.readouterr().err


def run_json(args, capsys) -> dict:
    assert main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


RUN = ["beam 4 | edt 0.3 | topp 0.9 | max 6", "--prompt-ids", "1,5,9", "--json", "--seed", "3"]


def test_run_with_a_user_stage_file(tiny, capsys):
    out = run_json(["run", "--stage", str(EDT), *RUN, "--model", str(tiny), "--no-compile"], capsys)
    assert out["recipe"] == "beam 4 | edt 0.3 | topp 0.9 | max 6"
    assert len(out["sequences"]) == 4 and len({tuple(s["ids"]) for s in out["sequences"]}) == 4


@pytest.mark.slow
def test_compiled_run_with_a_user_stage_gives_the_eager_tokens(tiny, capsys):
    eager = run_json(["run", "--stage", str(EDT), *RUN, "--model", str(tiny), "--no-compile"], capsys)
    compiled = run_json(["run", "--stage", str(EDT), *RUN, "--model", str(tiny)], capsys)
    assert [s["ids"] for s in compiled["sequences"]] == [s["ids"] for s in eager["sequences"]]


def test_python_api_with_the_example_recipe(tiny):
    decode.load_stages(EDT)
    m = decode.load(str(tiny))
    recipe = decode.parse(EDT_RECIPE.read_text())
    assert recipe.canonical == "sample 4 | edt 0.8 | topp 0.95 | max 64"
    short = recipe.canonical.replace("max 64", "max 8")
    a = decode.generate(m, short, [[1, 5, 9]], seed=11, compile=False)
    b = decode.generate(m, short, [[1, 5, 9]], seed=11, compile=False)
    assert [[s.ids for s in c.sequences] for c in a] == [[s.ids for s in c.sequences] for c in b]
    assert all(len(c.sequences) == 4 for c in a)


# -- a user stage with state (llama.cpp's init / apply / accept) ----------------------------

def _declare_counting_stage():
    """`frequency` written as a user stage with running counts."""
    def init(ctx, vocab, f):
        return {"n": torch.zeros(ctx.tokens.shape[0], vocab)}

    def accept(state, tokens, scores, f):
        return {"n": state["n"].scatter_add(1, tokens[:, None], torch.ones(tokens.shape[0], 1))}

    @decode.stage("myfreq", args=[decode.Arg("f", float)], doc="subtract F per earlier choice",
                  init=init, accept=accept)
    def myfreq(logits, ctx, state, f):
        return logits - f * state["n"]


@pytest.mark.parametrize("search", ["sample 5", "beam 3", "beam 4 | diverse groups=2 penalty=0.5"])
def test_a_user_stage_with_state_counts_what_was_chosen_and_moves_with_the_rows(table, search):
    _declare_counting_stage()
    ours = decode.generate(table, f"{search} | myfreq 0.7 | max 6", [[0, 3], [1]], seed=3, compile=False)
    want = decode.generate(table, f"{search} | frequency 0.7 | max 6", [[0, 3], [1]], seed=3, compile=False)
    assert [[(s.ids, s.score) for s in c.sequences] for c in ours] == \
           [[(s.ids, s.score) for s in c.sequences] for c in want]
    plain = decode.generate(table, f"{search} | max 6", [[0, 3], [1]], seed=3, compile=False)
    assert [[s.ids for s in c.sequences] for c in plain] != [[s.ids for s in c.sequences] for c in ours]


def test_a_user_stage_whose_state_is_not_a_dict_is_named(table):
    @decode.stage("badstate", doc="keeps a number", init=lambda ctx, vocab: 3, accept=lambda s, t, x: s)
    def badstate(logits, ctx, state):
        return logits

    with pytest.raises(decode.PluginError, match="plugin stage 'badstate' .*: init returned a int; a stage's state"):
        decode.generate(table, "badstate | max 2", [[0]], compile=False)
    with pytest.raises(decode.PluginError, match="gives both init= and accept="):
        decode.stage("half", doc="x", init=lambda ctx, vocab: {})(lambda logits, ctx, state: logits)


@pytest.mark.parametrize("fn", [lambda logits, ctx, f: logits, lambda logits, ctx: logits])
def test_a_stage_with_state_whose_function_does_not_take_it_is_named(fn):
    with pytest.raises(decode.PluginError, match=r"must take \(logits, ctx, state, f\)"):
        decode.stage("nostate", args=[decode.Arg("f", float)], doc="x",
                     init=lambda ctx, vocab, f: {}, accept=lambda s, t, x, f: s)(fn)
