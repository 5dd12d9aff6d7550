"""Data-parallel batch files under torchrun: every process decodes a share of the prompts.

    $ torchrun --nproc-per-node 4 -m decode run beam.dec --prompts in.jsonl --out out.jsonl

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them the run is one process, as
before. The plan, by rank:

- rank 0 takes the lock of `out` (`out.jsonl.lock`, jobs/lock.py) for the whole job,
  so a second job (or a single run) on the same `--out` is refused, not doubled.
- rank 0 reads what is already done: `out.jsonl` and every part file `out.jsonl.part-R-of-N`
  a stopped run left (any N: a rerun may use another number of processes). It tells the
  other ranks, over torch.distributed, which ids to skip.
- the prompts still to do are cut into batches in input order, exactly as one process
  would cut them, and dealt round robin: rank R decodes batches R, R+WORLD, R+2*WORLD, ...
  Each prompt is decoded in the very batch, with the same per-prompt seed (run seed +
  prompt id, never the rank), that a single process would use, so the lines are the same
  byte for byte (given the same threads per process: float sums follow the thread count).
  Each rank appends its lines to its own part file as each batch finishes.
- after all ranks reach the end, rank 0 merges `out.jsonl` and the parts into `out.jsonl`
  in input order (atomically, by rename) and deletes the parts.

A rank that dies leaves its finished lines in its part file; the rerun counts them as done.
`--out` must be on a filesystem that every rank sees (for several machines: a shared one).
"""
from __future__ import annotations

import contextlib
import datetime
import glob
import math
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Iterator

from decode.jobs import lock
from decode.jobs.batch import (BatchError, Item, LineError, batches, check_target, cut_torn, id_key,
                                   read_results, write_error)

# Ranks finish their shares at different times and then wait for the slowest; that wait
# is legitimate for as long as a share takes. A dead rank does not leave the others
# waiting out this timeout: torchrun stops them as soon as one fails.
WAIT = datetime.timedelta(days=7)
# A rank that never starts is another matter: the others wait this long for every rank
# to join, then stop and say which did not (--peer-timeout or this variable, in seconds).
PEER_WAIT = 300.0
PEER_WAIT_VAR = "DECODE_PEER_TIMEOUT"

_PART = re.compile(r"\.part-(\d+)-of-(\d+)$")


class PeerFailed(Exception):
    """Rank 0 refused the run and said why; the other ranks stop without repeating it."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @staticmethod
    def from_env() -> "World":
        """The torchrun process this is (WORLD_SIZE, RANK, LOCAL_RANK), or a world of one."""
        env = os.environ
        if "WORLD_SIZE" not in env:
            return World()
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        got = [env.get(name, "0").strip() for name in names]
        if not all(g.isdigit() for g in got) or not int(got[0]) < int(got[1]):
            raise ValueError(", ".join(f"{n}={g!r}" for n, g in zip(names, got)) + " is not a process of a "
                             "torchrun job (0 <= RANK < WORLD_SIZE): start it with torchrun, which sets them")
        return World(*map(int, got))


def rank_device(device: str | None, world: World) -> str | None:
    """The device this rank decodes on: its own GPU (cuda:LOCAL_RANK) when the run is on
    CUDA and there are several; the device asked for otherwise."""
    import torch

    if world.size == 1 or not torch.cuda.is_available() or device not in (None, "cuda"):
        return device
    return f"cuda:{world.local_rank % torch.cuda.device_count()}"


_group = None  # the gloo group that carries the plan and the final handshake


def peer_wait(given: float | None = None) -> float:
    """Seconds a rank waits for the others to join: `given` (--peer-timeout), else
    $DECODE_PEER_TIMEOUT, else PEER_WAIT.

        >>> peer_wait(2.0)
        2.0
    """
    if given is not None:
        return given
    text = os.environ.get(PEER_WAIT_VAR, "").strip()
    if not text:
        return PEER_WAIT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"{PEER_WAIT_VAR}={text!r} is not a positive number of seconds "
                         f"(e.g. {PEER_WAIT_VAR}=600)")
    return value


@contextlib.contextmanager
def joined(world: World, device: str | None, wait: float = PEER_WAIT) -> Iterator[str | None]:
    """Join the torchrun job for the duration (nccl on GPUs, gloo on CPUs); yields the
    rank's device. A world of one joins nothing. Every rank must join within `wait`
    seconds, else this one stops with a BatchError naming the ranks that did not."""
    global _group
    device = rank_device(device, world)
    if world.size == 1:
        yield device
        return
    import torch
    import torch.distributed as dist

    on_gpu = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(torch.device(device or "cuda"))
    store = _meet(world, wait)
    dist.init_process_group("nccl" if on_gpu else "gloo", store=dist.PrefixStore("default_pg", store),
                            rank=world.rank, world_size=world.size, timeout=WAIT)
    try:
        # Python objects (ids, counts, errors) travel on CPU: a gloo group beside nccl
        # needs no GPU copies and works with several ranks on one GPU.
        _group = dist.new_group(backend="gloo", timeout=WAIT) if on_gpu else dist.group.WORLD
        yield device
    finally:
        _group = None
        dist.destroy_process_group()


def _meet(world: World, wait: float):
    """The store every rank shares (torchrun's, or one rank 0 starts at MASTER_ADDR:
    MASTER_PORT as torch's env:// does), once every rank has checked in on it. torch itself
    would wait for a missing rank as long as a collective may take (WAIT, days). The waits
    are polled here: torch's own timeouts log C++ stack traces."""
    import torch.distributed as dist

    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT", "")
    if not addr or not port.isdigit():
        raise BatchError(f"WORLD_SIZE={world.size} but MASTER_ADDR and MASTER_PORT are not both set: "
                         f"start the processes with torchrun, which sets them")
    deadline = time.monotonic() + wait
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun hosts the store
    hosts = world.rank == 0 and not agent
    if not hosts and not _listening(addr, int(port), deadline):
        if agent:
            raise BatchError(f"rank {world.rank} of {world.size}: torchrun's store at {addr}:{port} did "
                             f"not answer within {wait:g} s; is torchrun still running?")
        raise BatchError(_missing(world, [0], wait, f" (nothing listens at {addr}:{port})"))
    try:
        store = dist.TCPStore(addr, int(port), world.size, is_master=hosts, wait_for_workers=False,
                              timeout=WAIT, multi_tenant=True)
    except dist.DistError as err:
        what = "serve (is the port taken?)" if hosts else "reach"
        raise BatchError(f"rank {world.rank} of {world.size}: cannot {what} the job's store at "
                         f"{addr}:{port}: {str(err).splitlines()[0]}") from None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # a restarted job checks in anew
    keys = [f"decode/{attempt}/joined/{r}" for r in range(world.size)]
    store.set(keys[world.rank], "1")
    while not store.check(keys):
        if time.monotonic() > deadline:
            raise BatchError(_missing(world, [r for r, k in enumerate(keys) if not store.check([k])],
                                      wait, ""))
        time.sleep(0.05)
    return store


def _listening(addr: str, port: int, deadline: float) -> bool:
    """Whether something accepts connections at addr:port before the deadline."""
    while True:
        try:
            socket.create_connection((addr, port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def _missing(world: World, ranks: list[int], wait: float, detail: str) -> str:
    who = ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
    return (f"rank {world.rank} of {world.size}: {who} did not join within {wait:g} s{detail}. "
            f"Start all {world.size} processes together (`torchrun --nproc-per-node {world.size} -m "
            f"decode run ...` does; on several machines, one torchrun per machine with the same "
            f"--rdzv-endpoint), or give a slow start longer with --peer-timeout SECONDS or "
            f"{PEER_WAIT_VAR}=SECONDS")


# ----------------------------------------------------------------------------- files

def part_path(out: str, world: World) -> str:
    return f"{out}.part-{world.rank}-of-{world.size}"


def part_files(out: str) -> list[str]:
    """The part files next to `out`, of runs with any number of processes."""
    return sorted(p for p in glob.glob(glob.escape(out) + ".part-*-of-*") if _PART.search(p))


def finished(out: str, fingerprint: str, logprobs: int | None = None) -> set[str]:
    """Ids (as `id_key`) in `out` and in its part files. Every file is checked to be a
    result file of this recipe (written with `logprobs`, when given) before any torn last
    line is cut off."""
    paths = [out, *part_files(out)]
    found = [read_results(path, fingerprint, logprobs) for path in paths]
    for path, f in zip(paths, found):
        cut_torn(path, f)
    return set().union(*(f.done for f in found))


def merge(out: str, items: list[Item]) -> None:
    """Fold the part files into `out`, one line per id in input order (then ids the input
    no longer has, as found), and delete the parts. Safe to repeat after a crash: `out` is
    replaced by rename, and an id found twice is kept once; a torn last line is left out.
    A failed write (a full disk) leaves `out` and the parts as they were."""
    parts = part_files(out)
    where: dict[str, tuple[int, int, int]] = {}  # id -> (file, offset, length)
    sources = [p for p in [out, *parts] if os.path.exists(p)]
    for n, path in enumerate(sources):
        with open(path, "rb") as f:
            offset = 0
            for raw in f:
                if raw.strip() and raw.endswith(b"\n"):
                    where.setdefault(id_key(_line_id(raw)), (n, offset, len(raw)))
                offset += len(raw)
    order = [id_key(it.id) for it in items]
    known = set(order)
    order += [k for k in where if k not in known]
    tmp = out + ".merging"
    try:
        _write_merged(tmp, sources, [where[k] for k in order if k in where])
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise write_error(tmp, err) from None
    os.replace(tmp, out)
    for p in parts:
        os.remove(p)


def _write_merged(tmp: str, sources: list[str], lines: list[tuple[int, int, int]]) -> None:
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(p, "rb")) for p in sources]
        with open(tmp, "wb") as dst:
            for n, offset, length in lines:
                files[n].seek(offset)
                dst.write(files[n].read(length))
            dst.flush()
            os.fsync(dst.fileno())


def _line_id(raw: bytes):
    import json

    return json.loads(raw.decode("utf-8"))["id"]


# ----------------------------------------------------------------------------- the run

@contextlib.contextmanager
def owning(out: str | None, prompts: str, world: World) -> Iterator[str | None]:
    """Own `out` for the run: refuse it when it is the prompts file or not a regular file,
    then hold its lock (jobs/lock.py) until the `with` ends, on every path. Under
    torchrun rank 0 holds it for the whole job: the parts are written only by the job that
    owns `out`. Yields a note when a stale lock was taken over."""
    if out is None:
        yield None
        return

    def claim() -> str | None:
        for path, what in [(out, "--out"), *((p, "part file") for p in part_files(out))]:
            check_target(prompts, path, what)
        return lock.acquire(out)

    note = claim() if world.size == 1 else _from_rank0(claim, world)
    try:
        yield note
    finally:
        if world.rank == 0:
            lock.release(out)


def share(out: str | None, fingerprint: str, items: list[Item], world: World,
          batch_size: int, logprobs: int | None = None) -> tuple[list[Item], int, str | None]:
    """(this rank's prompts to decode, how many are done already, the file it appends to).

    Rank 0 reads what is done and tells the others; the batches left are dealt round robin.
    A world of one appends to `out` itself. With `logprobs` (the run's --logprobs N) what is
    done must have been written with the same N (`batch.read_results`).
    """
    if out is None:
        return list(items), 0, None
    if world.size == 1:
        done = finished(out, fingerprint, logprobs)
    else:
        done = _from_rank0(lambda: finished(out, fingerprint, logprobs), world)
    todo = [it for it in items if id_key(it.id) not in done]
    mine = deal(todo, world, batch_size)
    return mine, len(items) - len(todo), out if world.size == 1 else part_path(out, world)


def deal(todo: list[Item], world: World, batch_size: int) -> list[Item]:
    """This rank's batches: the single-process cut of `todo`, every WORLD-th from RANK."""
    return [it for b, group in enumerate(batches(todo, batch_size)) if b % world.size == world.rank
            for it in group]


def _from_rank0(compute, world: World):
    """`compute()` on rank 0, its result on every rank; a BatchError there reaches rank 0's
    caller as itself and the others' as PeerFailed, so it is reported once."""
    import torch.distributed as dist

    box = [None]
    if world.rank == 0:
        try:
            box = [("ok", compute())]
        except BatchError as err:
            box = [("error", str(err))]
        except OSError as err:  # the others must not wait for an answer that never comes
            box = [("error", f"{err.strerror or err}: {err.filename}")]
    dist.broadcast_object_list(box, src=0, group=_group)
    kind, value = box[0]
    if kind == "ok":
        return value
    if world.rank == 0:
        raise BatchError(value)
    raise PeerFailed(value)


def finish(out: str | None, items: list[Item], world: World, decoded: int,
           failed: list[LineError]) -> tuple[int, list[LineError]]:
    """Wait for every rank, merge on rank 0; returns (prompts decoded, prompts the model
    refused) summed over the ranks (rank 0's view; the others get their own)."""
    if world.size > 1:
        import torch.distributed as dist

        got = [None] * world.size if world.rank == 0 else None
        dist.gather_object((decoded, failed), got, dst=0, group=_group)  # also the barrier
        if world.rank == 0:
            decoded = sum(n for n, _ in got)
            failed = sorted((e for _, errs in got for e in errs), key=lambda e: e.line or 0)
    if out is not None and world.rank == 0 and part_files(out):
        merge(out, items)
    if world.size > 1:
        dist.barrier(group=_group)  # nobody leaves (and ends the job) before the merge is done
    return decoded, failed
