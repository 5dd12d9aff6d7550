"""The README's two set-up commands are exactly what CI runs."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    out, inside = [], False
    for line in lines:
        if line.startswith("```"):
            inside = line.strip() == "```bash" and not inside
            continue
        if inside and line.startswith("pip install"):
            out.append(line.strip())
    return out


def test_ci_runs_exactly_the_readme_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [c for c in ci if c.startswith("pip install")] == cmds


def test_readme_says_how_torch_is_installed_on_cpu():
    assert "torch==2.13.0" in (ROOT / "README.md").read_text()


def test_the_diversity_table_is_what_its_script_writes():
    """The README's table of diversity methods has the layout, rows and order that
    benchmarks/diversity.py writes (its numbers are the script's run, not checked here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diversity_table", ROOT / "benchmarks" / "diversity.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = (ROOT / "README.md").read_text()
    block = text[text.index(script.START) + len(script.START):text.index(script.END)].strip().splitlines()
    recipes = script.BASELINES + [r for r, _ in script.METHODS]
    assert len(script.METHODS) == 12 and block[:2] == script.HEADER and len(block) == 2 + len(recipes)
    for line, recipe in zip(block[2:], recipes):
        assert script.ROW.match(line), line
        assert line.startswith("| `" + recipe.replace("|", "\\|") + "` |"), (line, recipe)
