"""One writer per output file: `out.jsonl.lock` says which process writes `out.jsonl`.

Two batch runs appending to one file would each decode every prompt and write every id
twice. So a run first creates `<out>.lock` atomically (O_CREAT|O_EXCL: of two runs exactly
one succeeds), holding its pid, host and start time, and removes it when it ends, on every
path (an error, Ctrl-C). A run that finds the lock says who holds it. A lock whose pid no
longer runs on this host is what a killed run left: it is taken over, with a note.

Why not `filelock`: its flock lock cannot say who holds it, and its soft lock cannot tell
a stale lock from a live one. A lock on another host cannot be checked from here: the
message names it and how to remove it. Two runs taking over the same stale lock in the
same instant can both win; a killed run, then two restarts within microseconds, is rare
enough to accept.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from dataclasses import dataclass
from typing import Iterator

from decode.jobs.batch import BatchError


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    since: str  # local time the run took the lock, for the message

    @staticmethod
    def me() -> "Owner":
        now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
        return Owner(os.getpid(), socket.gethostname(), now)

    def is_gone(self) -> bool:
        """True when this owner was on this host and its process no longer runs."""
        if self.host != socket.gethostname() or os.name == "nt":
            return False  # cannot tell from here; on Windows os.kill(pid, 0) would end it
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # it runs, as another user
        return False


def lock_path(out: str) -> str:
    """The lock beside the file `out` names: runs given two symlinks to one file share it."""
    return os.path.realpath(out) + ".lock"


@contextlib.contextmanager
def held(out: str) -> Iterator[str | None]:
    """Hold `out`'s lock for the `with` body; yields a note when a stale lock was taken over.

        >>> with held("out.jsonl") as note:
        ...     ...   # only this process writes out.jsonl here
    """
    note = acquire(out)
    try:
        yield note
    finally:
        release(out)


def acquire(out: str) -> str | None:
    """Take `out`'s lock or raise BatchError naming its holder; returns a note when the
    lock was a stale one (its process is gone) and was taken over."""
    path = lock_path(out)
    if _create(out, path):
        return None
    owner = _read(path)
    if owner is None or not owner.is_gone():
        raise BatchError(_held_message(out, path, owner))
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    if not _create(out, path):  # another run took it over first
        raise BatchError(_held_message(out, path, _read(path)))
    return (f"took over {path}: its run (pid {owner.pid}, since {owner.since}) is gone, "
            f"killed before it could remove it")


def _create(out: str, path: str) -> bool:
    """Create the lock holding this process; False when it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise BatchError(f"cannot create the lock file {path} for {out}: {err.strerror}; "
                         f"--out must be in a folder that exists and that you can write") from None
    try:
        os.write(fd, (json.dumps(Owner.me().__dict__) + "\n").encode())
    except BaseException as err:
        os.close(fd)
        os.remove(path)  # a lock that names nobody would block every later run
        if isinstance(err, OSError):
            raise BatchError(f"cannot write the lock file {path}: {err.strerror}") from None
        raise
    os.close(fd)
    return True


def release(out: str) -> None:
    """Remove `out`'s lock if this process holds it."""
    path = lock_path(out)
    owner = _read(path)
    if owner is not None and (owner.pid, owner.host) == (os.getpid(), socket.gethostname()):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _read(path: str) -> Owner | None:
    """The lock's owner; None when it is gone or names nobody (a run killed as it took it)."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read(4096).decode("utf-8"))
        return Owner(int(obj["pid"]), str(obj["host"]), str(obj["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _held_message(out: str, path: str, owner: Owner | None) -> str:
    if owner is None:
        return (f"{out} is locked by {path}, which names no process (a run killed as it started?); "
                f"if no decode is writing {out}, delete {path} and rerun")
    where = "" if owner.host == socket.gethostname() else f" on {owner.host}"
    return (f"{out} is being written by decode (pid {owner.pid}{where}, since {owner.since}); "
            f"wait for it or choose another --out. If no decode runs as pid {owner.pid}{where}, "
            f"delete {path}")
