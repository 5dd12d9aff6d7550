"""A hostile user at the command line: recipes from the catalogue with extreme values, bad
flags and bad files. Every case ends in exit 0 with valid JSON (no NaN, no Infinity), or in
exit 1-2 with a message and no traceback.

A few hundred cases run in the normal suite; `-m slow` runs 20,000. A failing case prints
its argv, so it can be rerun by hand: `decode run <argv>`.
"""
import io
import json
import random
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from decode.cli import main
from decode.dsl import CATALOGUE
from test_cli_run import make_tiny_model

INTS = ["0", "1", "2", "3", "-1", "4", "2147483648", "9223372036854775808", "1e26",
        "nan", "inf", "1.5"]
FLOATS = ["0", "-0", "1", "0.5", "0.9", "2", "1e-45", "1e-320", "-1e38", "1e38", "1e300",
          "nan", "inf", "-inf", "1e-7", "-1", "5"]
STRINGS = ['""', '"the"', '"\\ud800"', '"a b"', '"\\n"', '"' + "x" * 300 + '"', '"é"']
BOOLS = ["true", "false", "1"]


def _value(rng: random.Random, p) -> str:
    if p.type == "int":
        return rng.choice(INTS)
    if p.type == "float":
        return rng.choice(FLOATS)
    if p.type == "str":
        return rng.choice(STRINGS)
    if p.type == "bool":
        return rng.choice(BOOLS)
    return rng.choice(list(p.choices) + ["bogus"])


def _clause(rng: random.Random, spec) -> str:
    parts = [spec.name]
    for p in spec.positional:
        if p.required or rng.random() < 0.5:
            parts.append(_value(rng, p))
    for p in spec.keywords:
        if rng.random() < 0.3:
            parts.append(f"{p.name}={_value(rng, p)}")
    if rng.random() < 0.02:
        parts.append(rng.choice(["extra=1", "1 2 3 4", '"stray"']))
    return " ".join(parts)


def recipe(rng: random.Random) -> str:
    specs = [s for s in CATALOGUE.values() if s.name not in ("max",)]
    searches = [s for s in specs if s.kind == "search"]
    others = [s for s in specs if s.kind != "search"]
    clauses = [_clause(rng, rng.choice(searches))] if rng.random() < 0.8 else []
    clauses += [_clause(rng, rng.choice(others)) for _ in range(rng.randint(0, 3))]
    rng.shuffle(clauses)
    # a long run on a random model is slow, not hostile: keep `max` small but sometimes odd
    clauses.append(f"max {rng.choice(['1', '2', '3', '4', '3', '0', '-1', '100000', '1e26'])}")
    return " | ".join(clauses)


def argv_for(rng: random.Random, model: str, files: dict) -> list[str]:
    argv = ["run", recipe(rng), "--json", "--no-compile"]
    r = rng.random()
    if r < 0.55:
        argv += ["--prompt", rng.choice(["ROMEO:", "ROMEO:", "a", " ", "\udcff\udcfe", "é" * 40,
                                          ""])]
    elif r < 0.85:
        argv += ["--prompt-ids", rng.choice(["1,2,3", "5", "1,,2", "-1", "99999999", "1.5", "",
                                             "1, 2", "0"])]
    else:
        argv += ["--prompts", rng.choice([files["prompts"], files["garbage"], files["missing"],
                                          files["dir"]])]
        if rng.random() < 0.5:
            argv += ["--out", rng.choice([files["out"], files["prompts"], files["notes"],
                                          "/dev/full", files["dir"]])]
    argv += ["--model", rng.choice([model] * 18 + [files["missing"], files["dir"]])]
    if rng.random() < 0.3:
        argv += ["--seed", rng.choice(["0", "7", "-1", "1.5", "x", "18446744073709551616"])]
    if rng.random() < 0.1:
        argv += ["--device", rng.choice(["cpu", "cuda:7", "tpu", ""])]
    if rng.random() < 0.1:
        argv += ["--dtype", rng.choice(["float32", "bfloat16", "foo", "float16"])]
    return argv


def _strict_json(line: str):
    def refuse(const):
        raise ValueError(f"{const} in JSON output")

    return json.loads(line, parse_constant=refuse)


def check(argv: list[str]) -> str | None:
    """None when the case behaved, else what went wrong."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
    except BaseException as exc:  # noqa: BLE001 - that is the finding
        return f"raised {type(exc).__name__}: {exc}"
    stdout, stderr = out.getvalue(), err.getvalue()
    if "Traceback" in stderr or 'File "' in stderr:
        return f"exit {code} with a traceback: {stderr[-600:]}"
    if code == 0:
        if "--out" in argv:
            return None
        try:
            objs = [_strict_json(line) for line in stdout.splitlines() if line.strip()]
        except ValueError as exc:
            return f"exit 0 but stdout is not strict JSON lines ({exc}): {stdout[:300]!r}"
        if not objs or any(not o.get("sequences") for o in objs):
            return f"exit 0 but an object has no sequences: {stdout[:300]!r}"
        return None
    if code in (1, 2):
        return None if stderr.strip() else f"exit {code} with nothing on stderr"
    return f"exit {code}: {stderr[-300:]}"


@pytest.fixture(scope="module")
def setting(tmp_path_factory, sp_tokenizer_dir):
    d = tmp_path_factory.mktemp("fuzz")
    model = str(make_tiny_model(d / "model", sp_tokenizer_dir))
    (d / "prompts.jsonl").write_text('{"id": "a", "prompt": "ROMEO:"}\n{"id": "b", "prompt": "JULIET:"}\n')
    (d / "garbage.jsonl").write_bytes(b'{"id": 1, "prompt": \xff\n[1,2\n')
    (d / "notes.txt").write_text("my notes\nlast line without newline")
    (d / "adir").mkdir()
    files = {k: str(d / v) for k, v in [("prompts", "prompts.jsonl"), ("garbage", "garbage.jsonl"),
                                        ("notes", "notes.txt"), ("missing", "missing.jsonl"),
                                        ("dir", "adir"), ("out", "out.jsonl")]}
    return model, files, d


def _snapshot(d: Path, files: dict) -> dict:
    return {k: Path(files[k]).read_bytes() for k in ("prompts", "garbage", "notes")}


@pytest.fixture
def bounded_memory():
    """A runaway allocation fails the case (MemoryError) instead of the machine."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def fuzz(setting, n: int, seed: int) -> None:
    model, files, d = setting
    before = _snapshot(d, files)
    problems = []
    for i in range(n):
        argv = argv_for(random.Random(seed * 1_000_003 + i), model, files)
        problem = check(argv)
        if problem:
            problems.append(f"case {i}: {argv!r}\n    {problem}")
        Path(files["out"]).unlink(missing_ok=True)
        Path(files["out"] + ".lock").unlink(missing_ok=True)
    assert _snapshot(d, files) == before, "an input file was modified"
    assert not problems, f"{len(problems)} of {n} cases misbehaved:\n" + "\n".join(problems[:15])


def test_hostile_command_lines_end_in_json_or_one_message(setting, bounded_memory):
    fuzz(setting, 300, seed=1)


@pytest.mark.slow
def test_hostile_command_lines_long_run(setting, bounded_memory):
    fuzz(setting, 20_000, seed=2)

