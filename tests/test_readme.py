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
