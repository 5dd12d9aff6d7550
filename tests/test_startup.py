"""Before a run starts (issue 15, item 18): bench's numbers are checked by argparse (exit 2),
Ctrl-C anywhere is "decode: interrupted" with exit 130 and no traceback, and a torchrun
rank whose peers never come gives up after --peer-timeout, naming the ranks it missed."""
from __future__ import annotations

import socket
import time

import pytest

from decode.cli import main
from test_batch import write_prompts


# -- bench numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value,least", [
    ("--new", "0", 1), ("--threads", "-1", 0), ("--batch", "0", 1), ("--repeats", "0", 1),
    ("--new", "-64", 1), ("--batch", "1.5", 1), ("--repeats", "five", 1), ("--threads", "", 0),
])
def test_bench_numbers_out_of_range_are_usage_errors_naming_the_flag(flag, value, least, capsys):
    assert main(["bench", "greedy", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: takes a whole number of at least {least}, got {value!r}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["-1", "1.5", "x", "18446744073709551616"])
def test_a_run_seed_outside_the_seed_clause_range_is_a_usage_error_naming_the_flag(value, capsys):
    assert main(["run", "sample | max 2", "--prompt-ids", "1,2", "--seed", value]) == 2
    err = capsys.readouterr().err
    assert f"argument --seed: takes a whole number from 0 to {2**64 - 1}, got {value!r}" in err
    assert "Traceback" not in err


def test_bench_table_shows_a_recipe_holding_brackets_as_text(capsys, monkeypatch):
    from decode.perf import bench

    def timed(recipe, **kw):  # the table, not the timing, is under test
        meta = {"recipe": recipe.canonical, "fingerprint": recipe.fingerprint, "shape": "24m", "batch": 1,
                "rows": 1, "new": 2, "device": "cpu", "dtype": "fp32", "threads": 1, "clock": "wall",
                "note": "[/note]"}
        return {"meta": meta, "rows": [bench.Row("decode", 1.0, 2.0)], "ratios": {"ours/floor": 1.0}}

    monkeypatch.setattr(bench, "random_model", lambda *a: None)
    monkeypatch.setattr(bench, "bench", timed)
    assert main(["bench", 'greedy | ban "[/x]" | max 2']) == 0
    out = capsys.readouterr().out
    assert 'ban "[/x]"' in out and "[/note]" in out


# -- Ctrl-C while starting ------------------------------------------------------------------

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


START_UP = {  # where the Ctrl-C lands -> (module, function), the command
    "parsing the command line": ("decode.cli", "build_parser", ["check", "greedy"]),
    "building bench's model": ("decode.perf.bench", "random_model", ["bench", "greedy"]),
    "loading --stage files": ("decode.compiler.plugin_files", "load_stages",
                              ["check", "greedy", "--stage", "mine.py"]),
    "reading a trace": ("decode.traces.viz", "read_trace", ["viz", "t.jsonl"]),
    "loading the model to run": ("decode", "load", ["run", "greedy", "--prompt", "a", "--no-compile"]),
}


@pytest.mark.parametrize("where", START_UP)
def test_ctrl_c_during_start_up_says_interrupted_and_exits_130(where, capsys, monkeypatch):
    import importlib

    module, name, argv = START_UP[where]
    monkeypatch.setattr(importlib.import_module(module), name, interrupt)
    try:
        code = main(argv)
    except KeyboardInterrupt:  # left alone, it would also stop pytest itself
        pytest.fail("Ctrl-C escaped main() as a KeyboardInterrupt traceback")
    assert code == 130
    err = capsys.readouterr().err
    assert err.strip() == "decode: interrupted" and "Traceback" not in err


# -- a torchrun rank alone ------------------------------------------------------------------

@pytest.fixture
def torchrun_env(monkeypatch):
    """Set the variables torchrun sets for one rank of two, at a free port, no agent store."""
    def rank(r: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for key, value in {"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
        monkeypatch.delenv("DECODE_PEER_TIMEOUT", raising=False)

    return rank


def run_alone(tmp_path, capsys, *more) -> tuple[int, str, float]:
    prompts = write_prompts(tmp_path / "in.jsonl", 2)
    start = time.monotonic()
    code = main(["run", "greedy", "--prompts", str(prompts), "--out", str(tmp_path / "out.jsonl"),
                 "--no-compile", *more])
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "out.jsonl").exists()
    return code, err, time.monotonic() - start


@pytest.mark.parametrize("rank,missing", [(0, 1), (1, 0)])
def test_a_rank_whose_peer_never_comes_gives_up_after_the_peer_timeout_naming_it(
        rank, missing, tmp_path, capsys, torchrun_env):
    torchrun_env(rank)
    code, err, took = run_alone(tmp_path, capsys, "--peer-timeout", "2")
    assert code == 1
    assert f"decode: rank {rank} of 2: rank {missing} did not join within 2 s" in err
    assert "torchrun --nproc-per-node 2" in err and "--peer-timeout SECONDS" in err
    assert 2 <= took < 60


def test_the_peer_timeout_comes_from_decode_peer_timeout_when_not_given(tmp_path, capsys, torchrun_env,
                                                                        monkeypatch):
    torchrun_env(0)
    monkeypatch.setenv("DECODE_PEER_TIMEOUT", "1.5")
    code, err, _ = run_alone(tmp_path, capsys)
    assert code == 1 and "rank 1 did not join within 1.5 s" in err
    monkeypatch.setenv("DECODE_PEER_TIMEOUT", "soon")
    code, err, _ = run_alone(tmp_path, capsys)
    assert code == 2 and "DECODE_PEER_TIMEOUT='soon' is not a positive number of seconds" in err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "two"])
def test_peer_timeout_takes_a_positive_number_of_seconds(value, capsys):
    assert main(["run", "greedy", "--prompt", "a", "--peer-timeout", value]) == 2
    err = capsys.readouterr().err
    assert f"argument --peer-timeout: takes a positive number of seconds, got {value!r}" in err


@pytest.mark.parametrize("world,rank", [("2", "2"), ("x", "0"), ("2", "-1")])
def test_torchrun_variables_that_name_no_process_are_a_clean_error(world, rank, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", rank)
    code, err, _ = run_alone(tmp_path, capsys)
    assert code == 1 and f"RANK={rank!r}, WORLD_SIZE={world!r}" in err and "start it with torchrun" in err
