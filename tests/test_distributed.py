"""`torchrun -m decode run ... --prompts in.jsonl --out out.jsonl`: two CPU processes (gloo)
write exactly the lines one process writes, a malformed line is reported once, a rank that
dies loses nothing it finished, and a rerun with any number of processes completes the file."""
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decode.cli import main
from decode.jobs import batch, distributed
from decode.jobs.distributed import World
from test_batch import results, same_results, write_prompts
from test_cli_run import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
GREEDY = "greedy | max 8"
SAMPLING = "sample 2 | topk 40 | temp 1.3 | max 8 | seed 11"


@pytest.fixture(scope="module")
def model(tmp_path_factory, sp_tokenizer_dir):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), sp_tokenizer_dir))


@pytest.fixture
def one_thread():
    """torchrun runs each process on one thread; float sums depend on the thread count, so
    the single-process reference runs on one too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torchrun(nproc: int, *argv: str, script: Path | None = None) -> subprocess.CompletedProcess:
    target = [str(script)] if script else ["-m", "decode"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={nproc}", *target, "run", *argv],
                          capture_output=True, text=True, env=env, timeout=240)


def single(capsys, *argv: str) -> tuple[int, str]:
    code = main(["run", *argv])
    return code, capsys.readouterr().err


def run_args(recipe, model, prompts, out, *more):
    return (recipe, "--model", model, "--prompts", str(prompts), "--out", str(out), "--no-compile", *more)


# -- two processes, one result -----------------------------------------------------------

@pytest.mark.parametrize("recipe", [GREEDY, SAMPLING], ids=["greedy", "sampling"])
def test_two_processes_write_exactly_the_single_process_lines(recipe, model, tmp_path, capsys, one_thread):
    prompts = write_prompts(tmp_path / "in.jsonl", 20, {6: '{"id": "bad", "prompt": 3}'})
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    assert single(capsys, *run_args(recipe, model, prompts, ref, "--batch-size", "4"))[0] == 1
    proc = torchrun(2, *run_args(recipe, model, prompts, out, "--batch-size", "4"))
    assert out.read_text() == ref.read_text()  # line for line, byte for byte
    assert len(results(out)) == 20 and not distributed.part_files(str(out))
    assert not Path(f"{out}.lock").exists()  # rank 0 held it for the job and let go
    assert proc.stderr.count(f"{prompts}:6: ") == 1, proc.stderr           # reported by rank 0 only
    assert proc.stderr.count("20 prompts decoded") == 1 and "1 malformed" in proc.stderr
    assert proc.returncode == 1  # as for one process: a skipped line is a failure to report


# -- a rank dies mid-run -----------------------------------------------------------------

DYING_RANK = """
import os, signal, sys
from decode.compiler import engine
from decode.cli import main

real, calls = engine.run, []

def run(*args, **kwargs):  # rank 1 dies as it starts its third batch, like a lost machine
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

engine.run = run
sys.exit(main())
"""


def kill_rank_one(tmp_path, model, prompts, out) -> None:
    script = tmp_path / "dying_rank.py"
    script.write_text(DYING_RANK)
    proc = torchrun(2, *run_args(SAMPLING, model, prompts, out, "--batch-size", "2"), script=script)
    assert proc.returncode != 0 and "SIGKILL" in proc.stderr
    part = Path(distributed.part_path(str(out), World(1, 2)))
    assert len(results(part)) == 4  # its two finished batches survive it
    assert not out.exists()         # nobody merged


@pytest.mark.parametrize("processes", [2, 1])
def test_a_killed_rank_loses_nothing_and_a_rerun_finishes(processes, model, tmp_path, capsys):
    prompts = write_prompts(tmp_path / "in.jsonl", 20)
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    assert single(capsys, *run_args(SAMPLING, model, prompts, ref))[0] == 0
    kill_rank_one(tmp_path, model, prompts, out)
    parts = {k: v for p in distributed.part_files(str(out)) for k, v in results(Path(p)).items()}
    if processes == 2:
        proc = torchrun(2, *run_args(SAMPLING, model, prompts, out, "--batch-size", "2"))
        code, err = proc.returncode, proc.stderr
    else:  # the rerun may use another number of processes
        code, err = single(capsys, *run_args(SAMPLING, model, prompts, out, "--batch-size", "2"))
    assert code == 0, err
    assert f"resuming: {len(parts)} of 20 prompts are already in" in err
    assert f"{20 - len(parts)} prompts decoded, {len(parts)} already done" in err
    final = results(out)                         # raises on an id written twice
    assert list(final) == list(results(ref))     # input order
    assert {k: final[k] for k in parts} == parts  # what was finished is kept, not redone
    same_results(final, results(ref))
    assert not distributed.part_files(str(out))


def test_a_locked_out_stops_every_process_with_one_message(model, tmp_path):
    prompts, out = write_prompts(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    held = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "2025-01-01 10:00:00"})
    Path(f"{out}.lock").write_text(held)  # this test process plays the run that writes out.jsonl
    proc = torchrun(2, *run_args(GREEDY, model, prompts, out))
    assert proc.returncode != 0
    assert proc.stderr.count(f"{out} is being written by decode (pid {os.getpid()}") == 1, proc.stderr
    assert not out.exists() and not distributed.part_files(str(out))
    assert Path(f"{out}.lock").read_text() == held


# -- the pieces --------------------------------------------------------------------------

def test_batches_are_dealt_round_robin_and_each_prompt_goes_to_one_rank(tmp_path):
    items, _ = batch.read_prompts(str(write_prompts(tmp_path / "in.jsonl", 23)))
    cut = list(batch.batches(items, 4))
    for size in (1, 2, 3, 7):
        shares = [distributed.deal(items, World(r, size), 4) for r in range(size)]
        assert sorted(it.line for s in shares for it in s) == [it.line for it in items]
        for r, share in enumerate(shares):  # whole batches, exactly as one process cuts them
            assert list(batch.batches(share, 4)) == cut[r::size]


def test_merge_writes_each_id_once_in_input_order_and_removes_the_parts(tmp_path):
    items, _ = batch.read_prompts(str(write_prompts(tmp_path / "in.jsonl", 6)))
    out = tmp_path / "out.jsonl"
    line = lambda i, tag="": json.dumps({"id": i, "tag": tag}) + "\n"  # noqa: E731
    out.write_text(line(2) + line("gone"))
    (tmp_path / "out.jsonl.part-0-of-2").write_text(line(4) + line(1) + line(2, "again"))
    (tmp_path / "out.jsonl.part-1-of-2").write_text(line("t3") + '{"id": 5, "tor')  # killed mid-write
    (tmp_path / "out.jsonl.part-2-of-3").write_text(line(5))                        # an older run's
    distributed.merge(str(out), items)
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(o["id"], o["tag"]) for o in got] == [(1, ""), (2, ""), ("t3", ""), (4, ""), (5, ""),
                                                   ("gone", "")]  # ids the input lacks: kept, last
    assert not distributed.part_files(str(out)) and not (tmp_path / "out.jsonl.merging").exists()
    before = out.read_text()
    distributed.merge(str(out), items)
    assert out.read_text() == before


def test_a_merge_onto_a_full_disk_names_the_file_and_keeps_every_part(tmp_path, monkeypatch):
    items, _ = batch.read_prompts(str(write_prompts(tmp_path / "in.jsonl", 3)))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": 1}) + "\n")
    (tmp_path / "out.jsonl.part-0-of-2").write_text(json.dumps({"id": 2}) + "\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):  # where NFS and others report a full disk: at fsync
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(batch.BatchError, match=rf"cannot write {out}.merging: No space left on device; "
                                               rf"free space and rerun: finished prompts are kept"):
        distributed.merge(str(out), items)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_part_file_of_another_recipe_is_not_resumed_into(tmp_path):
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.part-1-of-2").write_text(
        json.dumps({"id": 1, "recipe": "beam 2", "fingerprint": "other", "sequences": []}) + "\n")
    with pytest.raises(batch.BatchError, match=r"part-1-of-2:1 .*would mix two recipes"):
        distributed.finished(str(out), "mine")


def test_the_world_comes_from_torchrun_variables(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert World.from_env() == World(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert World.from_env() == World(3, 4, 1)
    assert distributed.part_path("o.jsonl", World(3, 4, 1)) == "o.jsonl.part-3-of-4"


def test_several_processes_need_an_out_file(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    prompts = write_prompts(tmp_path / "in.jsonl", 2)
    code = main(["run", GREEDY, "--model", model, "--prompts", str(prompts)])
    assert code == 2 and "needs --out FILE" in capsys.readouterr().err
