"""The rooms' imports point one way: face (decode/) -> rooms (jobs/, traces/, perf/) ->
compiler/ -> leaves (dsl/, runtime/, jsonl/). Checked on the source, so no module runs."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("decode.jobs", "decode.traces", "decode.perf", "decode.report", "decode.watermark", "decode.replay")
BELOW = {  # folder -> the packages it must never import
    "compiler": ("decode.cli", *ROOMS),
    "dsl": ("decode.cli", *ROOMS, "decode.compiler", "decode.runtime"),
    "runtime": ("decode.cli", *ROOMS, "decode.compiler", "decode.dsl"),
    "jsonl": ("decode.cli", *ROOMS, "decode.compiler", "decode.dsl", "decode.runtime"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("folder", BELOW)
def test_a_lower_layer_imports_nothing_above_it(folder):
    wrong = [f"{p.relative_to(ROOT)}: {name}" for p in sorted((ROOT / folder).rglob("*.py"))
             for name in _imports(p) if name.startswith(BELOW[folder])]
    assert not wrong


def test_every_package_maps_to_a_folder_of_the_repository():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setup["package-dir"]
    for package in setup["packages"]:
        top = next(p for p in sorted(folders, key=len, reverse=True) if package == p or package.startswith(p + "."))
        folder = ROOT / folders[top] / package[len(top):].lstrip(".").replace(".", "/")
        assert (folder / "__init__.py").is_file(), package


# Issue 16: a hot path and its searches you can read on one screen
LIMITS = {"compiler/engine.py": 250, "compiler/search/pool.py": 150}
HELPERS = {"compiler/search/base.py", "compiler/search/draw.py", "compiler/search/record.py",
           "compiler/search/plugin.py", "compiler/search/overlap.py", "compiler/search/__init__.py",
           "compiler/stages/__init__.py", "compiler/stages/_common.py", "compiler/stages/_nucleus.py",
           "compiler/search/_dola.py", "compiler/search/_constraints.py", "compiler/search/_banks.py",
           "compiler/stages/_greenlist.py",
           "compiler/stages/_dry.py", "compiler/search/_poisson.py", "compiler/stages/_constrain.py",
           "compiler/search/_draft_model.py", "compiler/search/_hidden.py"}


def _limit(rel: str) -> int:
    if rel in LIMITS:
        return LIMITS[rel]
    if rel not in HELPERS and rel.startswith("compiler/search/"):
        return 80   # a built-in search
    if rel not in HELPERS and rel.startswith("compiler/stages/"):
        return 40   # a logit stage
    return 250


@pytest.mark.parametrize("path", sorted((ROOT / "compiler").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_compiler_file_fits_its_limit(path):
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    assert lines <= _limit(rel), f"{rel} has {lines} lines, over {_limit(rel)}"


# What a clause means hangs off its catalogue entry (dsl/catalogue.py) or its implementation
# (compiler/stages/, compiler/search/); nothing else decides by a clause's, a parameter's or
# a class's name.
# (traces/viz.py and traces/tree.py read the trace format's own keys, "groups", "text",
# "penalty", and are left out; so do compiler/provenance.py and replay/, which read the
# provenance and result formats' own keys, "seed", "text")
NAME_FREE = ("decode/*.py", "dsl/*.py", "compiler/*.py", "compiler/search/base.py", "compiler/search/record.py",
             "jobs/*.py", "perf/*.py", "traces/record.py", "traces/steps.py")
NAME_HOMES = ("dsl/catalogue.py", "compiler/provenance.py")


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def _name_decisions(path: Path, names: set[str]) -> list[str]:
    """'file:line: name' for each comparison, subscript or .get/.param/lookup call that uses a
    clause or parameter name (or compares a `__name__`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        used: list[str] = []
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            used = [s for side in sides for s in _strings(side)]
            used += ["__name__" for side in sides for x in ast.walk(side)
                     if isinstance(x, ast.Attribute) and x.attr == "__name__"]
        elif isinstance(node, ast.Subscript):
            used = _strings(node.slice)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            used = _strings(node.args[0]) if func in ("get", "param", "lookup", "pop", "setdefault") else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {s}" for s in used if s in names | {"__name__"}]
    return found


def test_no_decision_on_a_clause_or_parameter_name_outside_its_entry():
    from decode.dsl import CATALOGUE

    names = set(CATALOGUE) | {p.name for spec in CATALOGUE.values() for p in spec.params}
    files = sorted({p for pattern in NAME_FREE for p in ROOT.glob(pattern)} - {ROOT / h for h in NAME_HOMES})
    assert len(files) > 20
    assert [hit for path in files for hit in _name_decisions(path, names)] == []
