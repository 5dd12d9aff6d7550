"""The rooms' imports point one way: face (decode/) -> rooms (jobs/, traces/, perf/) ->
compiler/ -> leaves (dsl/, runtime/, jsonl/). Checked on the source, so no module runs."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("decode.jobs", "decode.traces", "decode.perf")
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


@pytest.mark.parametrize("path", sorted((ROOT / "compiler").glob("plugin*.py")), ids=lambda p: p.name)
def test_each_user_plugin_module_fits_in_250_lines(path):
    """Issue 16: no file under compiler/ over 250 lines; the user-plugin API is split by job."""
    lines = len(path.read_text().splitlines())
    assert lines <= 250, f"{path.name} has {lines} lines"
