"""Issue 15, items 1, 2, 3, 5, 6: `decode run --prompts in.jsonl --out out.jsonl` never loses
a byte of a file the user has. The output is refused, untouched byte for byte, when it is
the prompts file (by any link), not a result file of this recipe, not a regular file, or
being written by another run; a failed write (a full disk) names the file and leaves it
valid JSON lines; a killed or failed run resumed afterwards writes each id exactly once."""
import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from decode.cli import main
from decode.compiler import engine
from decode.jobs import batch, lock
from test_batch import results, run_batch, write_prompts
from test_cli_run import make_tiny_model

GREEDY = "greedy | max 4"


def hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (what it holds, byte for byte): a change, a new file or a
    removed one shows."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def prompts_without_final_newline(path: Path, n: int) -> Path:
    write_prompts(path, n)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory, sp_tokenizer_dir):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), sp_tokenizer_dir))


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """The prompts and the output of one clean run: what every resumed run must equal."""
    folder = tmp_path_factory.mktemp("ref")
    prompts, out = write_prompts(folder / "in.jsonl", 6), folder / "ref.jsonl"
    code = main(["run", GREEDY, "--model", model, "--prompts", str(prompts), "--out", str(out),
                 "--no-compile", "--batch-size", "2"])
    assert code == 0
    return prompts, out.read_bytes()


def inputs(tmp_path: Path, reference) -> tuple[Path, bytes]:
    """The reference prompts, copied into the test's folder so that `hashes` covers them too."""
    src, ref = reference
    return Path(shutil.copy(src, tmp_path / "in.jsonl")), ref


# -- 1. --prompts and --out the same file ------------------------------------------------

@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
def test_prompts_and_out_the_same_file_is_refused_untouched(link, model, capsys, tmp_path):
    prompts = prompts_without_final_newline(tmp_path / "same.jsonl", 4)
    out = {"same path": prompts, "symlink": tmp_path / "link.jsonl", "hard link": tmp_path / "hard.jsonl"}[link]
    if link == "symlink":
        out.symlink_to(prompts.name)
    elif link == "hard link":
        os.link(prompts, out)
    before = hashes(tmp_path)
    code, err = run_batch(capsys, GREEDY, model, prompts, out)
    assert code == 1
    assert f"--prompts {prompts} and --out {out} are the same file" in err
    assert "Choose another --out file" in err
    assert hashes(tmp_path) == before  # and no lock file left behind


# -- 2. --out an existing file that is not a result file ---------------------------------

NOT_RESULTS = {
    "notes": b"shopping list\neggs\nmilk",  # the notes.txt: no final newline
    "one line": b"hello",
    "json lines": b'{"id": 1, "prompt": "a prompt, not a result"}\n{"id": 2',
    "one json object": b'{"id": 7, "prompt": "whole, but not a result"}',
    "another recipe, torn": b'{"id": 7, "prompt": null, "prompt_ids": [1], "recipe": "beam 2", '
                            b'"fingerprint": "zz',
    "results then notes": None,  # filled in by the test: a result line, then a line of notes
}


@pytest.mark.parametrize("kind", list(NOT_RESULTS))
def test_an_out_file_that_is_not_a_result_file_is_refused_untouched(kind, model, capsys, tmp_path,
                                                                    reference):
    prompts, ref = inputs(tmp_path, reference)
    out = tmp_path / "notes.txt"
    out.write_bytes(NOT_RESULTS[kind] or ref.splitlines(keepends=True)[0] + b"notes\nmore notes")
    before = hashes(tmp_path)
    code, err = run_batch(capsys, GREEDY, model, prompts, out, "--batch-size", "2")
    assert code == 1 and hashes(tmp_path) == before
    if kind == "results then notes":
        assert f"{out}:2 is not a result line" in err and "Delete that line" in err
    else:
        assert f"{out} is not a decode result file (line 1" in err
        assert "choose another --out or remove it" in err


def test_a_result_file_of_another_recipe_with_a_torn_line_is_untouched(model, capsys, tmp_path,
                                                                       reference):
    prompts, ref = inputs(tmp_path, reference)
    out = tmp_path / "out.jsonl"
    out.write_bytes(ref[:-10])  # a run of greedy, killed mid-write
    before = hashes(tmp_path)
    code, err = run_batch(capsys, "beam 2 | max 4", model, prompts, out)
    assert code == 1 and "would mix two recipes" in err
    assert hashes(tmp_path) == before  # the torn line too: it is not this recipe's to repair


# -- 3. --out a device, a pipe, a directory; endless lines -------------------------------

@pytest.mark.parametrize("kind", ["/dev/full", "fifo", "directory"])
def test_an_out_that_is_not_a_regular_file_is_refused(kind, model, capsys, tmp_path, reference):
    prompts, _ = inputs(tmp_path, reference)
    out = {"/dev/full": Path("/dev/full"), "fifo": tmp_path / "pipe", "directory": tmp_path / "dir"}[kind]
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "directory":
        out.mkdir()
    before = hashes(tmp_path)
    code, err = run_batch(capsys, GREEDY, model, prompts, out)  # a FIFO opened to read would hang here
    what = {"/dev/full": "a character device", "fifo": "a pipe (FIFO)", "directory": "a directory"}[kind]
    assert code == 1 and f"--out {out} is {what}, not a regular file" in err
    assert hashes(tmp_path) == before and not Path(f"{out}.lock").exists()


def test_resume_state_is_read_with_a_bounded_line_length(model, capsys, tmp_path, reference,
                                                         monkeypatch):
    prompts, _ = inputs(tmp_path, reference)
    monkeypatch.setattr(batch, "MAX_LINE", 1 << 20)  # 64 MiB in use; 1 MiB keeps the test small
    out = tmp_path / "zeros.jsonl"
    out.write_bytes(b"\0" * (3 << 20))  # what /dev/full or /dev/zero read like: no newline, ever
    before = hashes(tmp_path)
    code, err = run_batch(capsys, GREEDY, model, prompts, out)
    assert code == 1 and f"{out}:1 is longer than 1 MiB without a line break" in err
    assert hashes(tmp_path) == before
    code, err = run_batch(capsys, GREEDY, model, out, tmp_path / "o.jsonl")  # the same, as prompts
    assert code == 1 and f"{out}:1 is longer than 1 MiB without a line break" in err
    assert hashes(tmp_path) == before


# -- 5. two runs on one --out ------------------------------------------------------------

def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(model, capsys, tmp_path,
                                                                     reference, monkeypatch):
    prompts, ref = inputs(tmp_path, reference)
    out = tmp_path / "o.jsonl"
    real, seen = engine.run, {}

    def second_run_during_the_second_batch(*args, **kwargs):
        if len(seen) == 0 and out.exists() and out.stat().st_size:
            seen["before"] = hashes(tmp_path)
            seen["code"] = main(["run", GREEDY, "--model", model, "--prompts", str(prompts),
                                 "--out", str(out), "--no-compile", "--batch-size", "2"])
            seen["after"] = hashes(tmp_path)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "run", second_run_during_the_second_batch)
    code, err = run_batch(capsys, GREEDY, model, prompts, out, "--batch-size", "2")
    assert code == 0 and seen["code"] == 1 and seen["after"] == seen["before"]
    assert f"{out} is being written by decode (pid {os.getpid()}, since " in err
    assert "wait for it or choose another --out" in err
    assert out.read_bytes() == ref and not Path(f"{out}.lock").exists()
    results(out)  # each id once


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_run_is_resumed_over_its_stale_lock_with_each_id_once(model, capsys, tmp_path,
                                                                      reference):
    prompts, ref = inputs(tmp_path, reference)
    out = tmp_path / "o.jsonl"
    lines = ref.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # SIGKILL'd inside its second batch's write
    Path(f"{out}.lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                               "since": "2025-01-01 00:00:00"}))
    code, err = run_batch(capsys, GREEDY, model, prompts, out, "--batch-size", "2")
    assert code == 0 and f"took over {out}.lock: its run (pid " in err
    assert "resuming: 2 of 6 prompts are already in" in err
    assert out.read_bytes() == ref and not Path(f"{out}.lock").exists()
    results(out)


def test_a_lock_of_a_live_unknown_or_linked_owner_is_not_taken_over(tmp_path):
    out = str(tmp_path / "o.jsonl")
    for owner, says in [({"pid": os.getpid(), "host": socket.gethostname(), "since": "t"}, "being written"),
                        ({"pid": 1, "host": "elsewhere", "since": "t"}, "pid 1 on elsewhere"),
                        (None, "names no process")]:
        Path(lock.lock_path(out)).write_text(json.dumps(owner) if owner else "")
        with pytest.raises(batch.BatchError, match=says):
            lock.acquire(out)
        assert Path(lock.lock_path(out)).read_text() == (json.dumps(owner) if owner else "")
    os.remove(lock.lock_path(out))
    Path(out).touch()
    os.symlink(out, tmp_path / "link.jsonl")
    with lock.held(out):  # a second name for the file is the same file
        with pytest.raises(batch.BatchError, match="being written"):
            lock.acquire(str(tmp_path / "link.jsonl"))
    assert not Path(lock.lock_path(out)).exists()


def test_the_lock_is_removed_when_the_run_is_interrupted(model, capsys, tmp_path, reference,
                                                         monkeypatch):
    prompts, _ = inputs(tmp_path, reference)
    out = tmp_path / "o.jsonl"

    def interrupted(*args, **kwargs):
        assert Path(f"{out}.lock").exists()  # held while decoding
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run", interrupted)
    code, err = run_batch(capsys, GREEDY, model, prompts, out)
    assert code == 130 and not Path(f"{out}.lock").exists()


# -- 6. a full disk ----------------------------------------------------------------------

def test_a_full_disk_names_the_file_keeps_whole_lines_and_the_rerun_completes(model, capsys, tmp_path,
                                                                              reference, monkeypatch):
    prompts, ref = inputs(tmp_path, reference)
    out = tmp_path / "o.jsonl"
    real, calls = os.write, []

    def disk_fills_in_the_second_batch(fd, data):
        if not out.exists() or os.fstat(fd).st_ino != out.stat().st_ino:
            return real(fd, data)
        calls.append(len(data))
        if len(calls) == 2:  # the kernel takes half, then the disk is full
            return real(fd, bytes(data)[:len(data) // 2])
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    with monkeypatch.context() as m:
        m.setattr(os, "write", disk_fills_in_the_second_batch)
        code, err = run_batch(capsys, GREEDY, model, prompts, out, "--batch-size", "2")
    assert code == 1
    assert (f"cannot write {out}: No space left on device; free space and rerun: finished prompts "
            f"are kept") in err
    first_batch = b"".join(ref.splitlines(keepends=True)[:2])
    assert out.read_bytes() == first_batch and not Path(f"{out}.lock").exists()

    code, err = run_batch(capsys, GREEDY, model, prompts, out, "--batch-size", "2")
    assert code == 0 and "resuming: 2 of 6 prompts are already in" in err
    assert out.read_bytes() == ref
    results(out)  # each id once
