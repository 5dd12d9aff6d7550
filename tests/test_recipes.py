"""Every recipe in recipes/ runs on the bundled demo model (a few tokens each, eager)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import decode
from decode.cli import main
from decode.compiler.plan import compile as lower
from decode.dsl import read_recipe
from decode.dsl.check import folder_of

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.dec"))
PLUGIN = ROOT / "recipes" / "plugins" / "edt.py"


@pytest.fixture(scope="module")
def demo():
    return decode.load()


def test_the_library_has_at_least_twelve_recipes_with_the_design_card_example():
    assert len(RECIPES) >= 12
    texts = [decode.parse(read_recipe(str(p)), folder_of(str(p))) for p in RECIPES]
    assert decode.parse("beam 4 | diverse groups=2 penalty=0.5 | topp 0.9 temp 0.7") in texts


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_on_the_demo_model(demo, path):
    text = path.read_text()
    assert text.lstrip().startswith("#"), "each recipe starts with a comment citing its source"
    plan = replace(lower(decode.parse(read_recipe(str(path)), folder_of(str(path)))), max_new=6)
    out = decode.generate(demo, plan, ["ROMEO:", "To be, or not"], seed=0, compile=False)
    assert len(out) == 2
    for comp in out:
        assert comp.sequences and all(s.ids for s in comp.sequences)
        assert all(s.finish in ("eos", "max", "stop") for s in comp.sequences)


def test_plugin_recipe_runs_from_the_cli(capsys, restore_catalogue):
    code = main(["run", str(ROOT / "recipes" / "plugins" / "edt.dec"), "--stage", str(PLUGIN),
                 "--prompt", "ROMEO:", "--json", "--no-compile", "--seed", "1"])
    assert code == 0
    assert '"sequences"' in capsys.readouterr().out
