"""Data-parallel batch files under torchrun: every process decodes a share of the prompts.

    $ torchrun --nproc-per-node 4 -m decode run beam.dec --prompts in.jsonl --out out.jsonl

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them the run is one process, as
before. The plan, by rank:

- rank 0 takes the lock of `out` (`out.jsonl.lock`, compiler/lock.py) for the whole job,
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
import os
import re
from dataclasses import dataclass
from typing import Iterator

from decode.compiler import lock
from decode.compiler.batch import (BatchError, Item, LineError, batches, check_target, cut_torn, id_key,
                                   read_results, write_error)

# Ranks finish their shares at different times and then wait for the slowest; that wait
# is legitimate for as long as a share takes. A dead rank does not leave the others
# waiting out this timeout: torchrun stops them as soon as one fails.
WAIT = datetime.timedelta(days=7)

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
        return World(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def rank_device(device: str | None, world: World) -> str | None:
    """The device this rank decodes on: its own GPU (cuda:LOCAL_RANK) when the run is on
    CUDA and there are several; the device asked for otherwise."""
    import torch

    if world.size == 1 or not torch.cuda.is_available() or device not in (None, "cuda"):
        return device
    return f"cuda:{world.local_rank % torch.cuda.device_count()}"


_group = None  # the gloo group that carries the plan and the final handshake


@contextlib.contextmanager
def joined(world: World, device: str | None) -> Iterator[str | None]:
    """Join the torchrun job for the duration (nccl on GPUs, gloo on CPUs); yields the
    rank's device. A world of one joins nothing."""
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
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=WAIT)
    try:
        # Python objects (ids, counts, errors) travel on CPU: a gloo group beside nccl
        # needs no GPU copies and works with several ranks on one GPU.
        _group = dist.new_group(backend="gloo", timeout=WAIT) if on_gpu else dist.group.WORLD
        yield device
    finally:
        _group = None
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- files

def part_path(out: str, world: World) -> str:
    return f"{out}.part-{world.rank}-of-{world.size}"


def part_files(out: str) -> list[str]:
    """The part files next to `out`, of runs with any number of processes."""
    return sorted(p for p in glob.glob(glob.escape(out) + ".part-*-of-*") if _PART.search(p))


def finished(out: str, fingerprint: str) -> set[str]:
    """Ids (as `id_key`) in `out` and in its part files. Every file is checked to be a
    result file of this recipe before any torn last line is cut off."""
    paths = [out, *part_files(out)]
    found = [read_results(path, fingerprint) for path in paths]
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
    then hold its lock (compiler/lock.py) until the `with` ends, on every path. Under
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
          batch_size: int) -> tuple[list[Item], int, str | None]:
    """(this rank's prompts to decode, how many are done already, the file it appends to).

    Rank 0 reads what is done and tells the others; the batches left are dealt round robin.
    A world of one appends to `out` itself.
    """
    if out is None:
        return list(items), 0, None
    if world.size == 1:
        done = finished(out, fingerprint)
    else:
        done = _from_rank0(lambda: finished(out, fingerprint), world)
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
