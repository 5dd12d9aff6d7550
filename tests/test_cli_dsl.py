"""The check / fmt / explain commands, run through main() and as a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decode.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.dec"))


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "check" in out and "explain" in out and "topp P [keep=1]" in out


def test_check_valid_inline_recipe(capsys):
    assert main(["check", "beam 4 | topp 0.9"]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_invalid_recipe_shows_caret_on_stderr(capsys):
    assert main(["check", "beam 4 | topq 0.9"]) == 1
    err = capsys.readouterr().err
    assert "unknown clause 'topq'" in err and "          ^^^^" in err and "did you mean 'topp'" in err


def test_check_several_recipes_fails_if_any_is_invalid(capsys):
    assert main(["check", "greedy", "beam 0", "sample"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("ok") == 2 and "out of range" in captured.err


def test_check_shows_warnings_but_passes(capsys):
    assert main(["check", "temp 0 | topp 0.9"]) == 0
    assert "warning: temp 0 means argmax" in capsys.readouterr().err


def test_check_file_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.dec"
    bad.write_text("# header\nbeam 4\ntopp 2\n")
    assert main(["check", str(bad)]) == 1
    assert f"{bad}:3:6: error: out of range" in capsys.readouterr().err


def test_binary_file_is_a_clean_error(tmp_path, capsys):
    f = tmp_path / "bin.dec"
    f.write_bytes(b"\xff\xfe\x00beam")
    assert main(["explain", str(f)]) == 1
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and "Traceback" not in err


def test_missing_file_is_a_clean_error(capsys):
    assert main(["check", "no/such/file.dec"]) == 1
    err = capsys.readouterr().err
    assert "no such recipe file 'no/such/file.dec'" in err and "Traceback" not in err


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_bundled_recipes_pass_check_and_cite_a_source(path, capsys):
    assert main(["check", str(path)]) == 0
    header = path.read_text().splitlines()[0]
    assert header.startswith("#")


def test_at_least_eight_bundled_recipes():
    names = {p.name for p in RECIPES}
    assert len(names) >= 8
    assert {"greedy.dec", "beam.dec", "diverse_beam.dec", "nucleus.dec", "minp.dec", "typical.dec",
            "sbeam.dec", "diverse_beam_sampling.dec"} <= names
    assert "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7" in \
        (ROOT / "recipes" / "diverse_beam_sampling.dec").read_text()


def test_fmt_prints_the_canonical_form(capsys):
    assert main(["fmt", "topp .90 temp 1 | beam 4 lenpen=1"]) == 0
    assert capsys.readouterr().out == "beam 4 | topp 0.9 | temp 1.0\n"


def test_fmt_write_rewrites_the_file_keeping_its_header(tmp_path, capsys):
    f = tmp_path / "r.dec"
    f.write_text("# Source: somewhere 2020\n\ntopp .9\nmax 32\n")
    assert main(["fmt", "--write", str(f)]) == 0
    assert f.read_text() == "# Source: somewhere 2020\ngreedy | topp 0.9 | max 32\n"
    assert capsys.readouterr().out == f"rewrote {f}\n"
    assert main(["fmt", "--write", str(f)]) == 0  # already canonical: left alone
    assert capsys.readouterr().out == ""


def test_fmt_write_refuses_inline_text_as_a_usage_error(capsys):
    assert main(["fmt", "--write", "greedy"]) == 2
    assert "--write rewrites .dec files; 'greedy' is recipe text" in capsys.readouterr().err


def test_fmt_bad_recipe_is_a_clean_error(capsys):
    assert main(["fmt", "beam 4 4"]) == 1
    err = capsys.readouterr().err
    assert "too many positional values" in err and "Traceback" not in err


def test_explain_shows_stages_selection_and_missing_reference(capsys):
    assert main(["explain", "beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7"]) == 0
    out = capsys.readouterr().out
    for text in ("topp", "p=0.9", "keep=1", "lenpen=1.0", "return=4", "groups=2",
                 "selection: sampling, because topp 0.9, temp 0.7 sample",
                 "no equivalent generate() call, because transformers rejects diverse"):
        assert text in out
    assert out.index("topp") < out.index("temp")


def test_explain_shows_the_generate_call(capsys):
    assert main(["explain", "beam 4 lenpen=0.6 | max 32"]) == 0
    out = capsys.readouterr().out
    assert "selection: argmax" in out and "num_beams=4," in out and "length_penalty=0.6," in out


def test_explain_hf_prints_every_kwarg(capsys):
    assert main(["explain", "--hf", "sample | topp 0.9"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("generate(") and "top_k=None," in out and "do_sample=True," in out
    assert main(["explain", "--hf", "sbeam 4"]) == 0
    assert "no transformers 4.55.4 equivalent" in capsys.readouterr().out


def test_explain_hf_with_a_model_prints_real_ids_and_the_seed_note(capsys, tmp_path):
    import decode
    from decode.runtime.loaders import DEMO_DIR

    recipe = 'sample | ban "lord" | bias "king" 2 | seed 3'
    assert main(["explain", "--hf", recipe]) == 0
    out = capsys.readouterr().out
    assert "ids('lord')" in out and "# note: call torch.manual_seed(3) right before generate()" in out
    assert main(["explain", "--hf", recipe, "--model", str(DEMO_DIR)]) == 0
    out = capsys.readouterr().out
    tok = decode.load(DEMO_DIR).tokenizer
    assert f"bad_words_ids=[{tok.encode('lord', bos=False)}]" in out and "ids(" not in out
    assert f"sequence_bias={{{tuple(tok.encode('king', bos=False))}: 2.0}}" in out
    assert main(["explain", "--hf", recipe, "--model", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60)


def test_dsl_does_not_import_torch():
    proc = _run("-c", "import decode.dsl, decode.cli, sys; assert 'torch' not in sys.modules, 'torch'")
    assert proc.returncode == 0, proc.stderr


def test_cli_on_a_bad_recipe_prints_no_traceback():
    proc = _run("-m", "decode", "check", "beam 4 | diverse groups=3")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "groups=3 does not divide" in proc.stderr


def test_check_with_a_model_warns_when_a_banned_word_would_not_match_mid_text(capsys):
    from decode.runtime.loaders import DEMO_DIR

    recipe = 'sample | ban "lord" " Lord" | bias "king" 2 | max 4'
    assert main(["check", recipe]) == 0
    assert "warning" not in capsys.readouterr().err          # without a tokenizer it cannot know
    assert main(["check", recipe, "--model", str(DEMO_DIR)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 2                       # " Lord" already matches mid-text
    assert 'write " lord" to match it there' in err and 'write " king"' in err
    assert "  1 | sample" in err and "^^^^^^" in err          # with a caret under the string
    assert main(["run", recipe, "--prompt", "ROMEO:", "--no-compile", "--json", "--seed", "1"]) == 0
    assert capsys.readouterr().err.count("warning:") == 2    # run has the tokenizer: it warns too


@pytest.mark.parametrize("recipe, says", [
    ("greedy | lookup | repetition 1.2 | max 4", "'lookup' verifies drafts with stateless logit stages only, "
     "and 'repetition 1.2' keeps state across tokens; drop one of them"),
    ("greedy | lookup n=1 | cfg scale=1.5 | max 4", "'lookup' verifies drafts on the rows alone, and "
     "'cfg scale=1.5' guides each row by unconditional rows beside it; drop one of them"),
    ('sample 2 | draft "m" | cfg scale=2 | max 4', "'draft' verifies drafts on the rows alone"),
])
def test_check_refuses_a_speculative_recipe_run_refuses_in_runs_words(recipe, says, capsys):
    from decode.compiler.plan import compile as lower
    from decode.compiler.speculative_run import refuse_stages

    with pytest.raises(ValueError) as run_says:  # what `run` asks before decoding
        refuse_stages(lower(recipe))
    assert main(["check", recipe]) == 1
    captured = capsys.readouterr()
    assert says in captured.err and str(run_says.value) in captured.err and "ok" not in captured.out
    assert "Traceback" not in captured.err


def test_check_passes_a_speculative_recipe_with_stateless_stages(capsys):
    assert main(["check", "greedy | lookup | topk 5 | max 4"]) == 0
    assert "ok" in capsys.readouterr().out
