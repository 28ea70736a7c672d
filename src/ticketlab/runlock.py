"""One process at a time per run directory.

A process that opens a run (`ticketlab.runs.RunDir.open`) holds the run's ``.lock``, a `filelock` lock
that the operating system releases when the process ends, however it ends. A second process on the same
run stops at once with one line naming the holder (its pid, host and command, kept in ``.lock.holder``
while it holds the lock); `ticketlab runs rm` and `runs clean` take the same lock. Nobody waits for a
lock, so a removed run's lock file is never one that another process is about to take.

A lock is held until the `session` it was taken in ends: every registered method's run is one
(`ticketlab.method.register_method`), whoever calls it (a run command, a sweep job), and so is each run
function of the Python API (``ticketlab.run_rst``, ...); a session inside another (a run command's, which
also covers its report) leaves its locks to the outer one; taken outside any session, until the process
ends. What a thread holds is its own (each thread, and each session, has its own record of the runs it
holds), so threads using the Python API neither release each other's locks nor share a run. Under
torchrun only rank 0 locks (the ranks are one run) and every rank learns whether it got the lock, so none
is left waiting. A held run whose directory disappears or is replaced by another (`check_present`) stops
its process before anything is written into it again.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from ticketlab import distributed
from ticketlab.errors import CheckpointError
from ticketlab.io import atomic_write_bytes

LOCK, HOLDER = ".lock", ".lock.holder"


@dataclass
class _Held:
    lock: Optional[object]  # a filelock.FileLock; None on ranks other than 0, or where nothing can be written
    identity: Optional[Tuple[int, int]] = None  # (device, inode) of the folder once its config.json exists
    note: bytes = b""  # what this process wrote into HOLDER (removed on release only while it is still that)


_HELD: ContextVar[Dict[Path, _Held]] = ContextVar("ticketlab_held_runs")
_IN_SESSION: ContextVar[bool] = ContextVar("ticketlab_in_lock_session", default=False)


def _held() -> Dict[Path, _Held]:
    """The runs held in this context (a thread starts with none)."""
    try:
        return _HELD.get()
    except LookupError:
        _HELD.set({})
        return _HELD.get()


def _identity(run: Path) -> Optional[Tuple[int, int]]:
    try:
        stat = os.stat(run)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def holder(run: Path, wait: float = 1.0) -> str:
    """Who holds ``run``'s lock, in words (from the file the holder writes right after taking it: a
    holder that has only just taken it is given up to ``wait`` seconds to write it)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads((Path(run) / HOLDER).read_text())
            return (f"process {info['pid']} on {info['host']} (`{info['command']}`, since {info['since']})")
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another process"
            time.sleep(0.05)


def _acquire(run: Path, doing: Optional[str]) -> _Held:
    """The lock of ``run`` (its ``lock`` None where the folder cannot be written: nobody can write the run
    there either); raises CheckpointError naming the holder, ending with ``doing``, when another process holds
    it (``doing`` None: a caller that does not show the message, so the holder is not waited for)."""
    import filelock

    try:
        Path(run).mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(Path(run) / LOCK), timeout=0)
        lock.acquire()
    except filelock.Timeout:
        if doing is None:
            raise CheckpointError(f"{run} is in use by another process") from None
        raise CheckpointError(f"{run} is in use by {holder(run)}; {doing}") from None
    except OSError:
        return _Held(None)
    info = {"pid": os.getpid(), "host": platform.node(), "command": " ".join(sys.argv[:8])[:200],
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    note = (json.dumps(info) + "\n").encode()
    try:
        atomic_write_bytes(Path(run) / HOLDER, note, checksum=False)  # never read back for results
    except OSError:  # only the message of a refused process would lack the details
        note = b""
    return _Held(lock, note=note)


def hold(run: Path) -> None:
    """Take ``run``'s lock (a no-op if this thread holds it already); raises CheckpointError with
    one line when another process holds it. Under torchrun every rank calls this at the same point."""
    key = Path(run).absolute()
    held = _held().get(key)
    if held is not None:
        if held.identity is None or _identity(key) == held.identity:
            return
        release(key)  # the folder held before was removed since: this is a new run in its place
    held, failure = _Held(None), None
    if distributed.is_writer():
        try:
            held = _acquire(key, "wait for it to finish or stop it, then run the command again")
        except CheckpointError as exc:
            failure = exc
    if not distributed.gate(failure is None):
        raise failure if failure is not None else CheckpointError(f"{run} is in use by another process; see rank 0's "
                                                                  "error")
    _held()[key] = held


def watch(run: Path) -> None:
    """From now on the held ``run`` must stay this folder with a ``config.json`` (`check_present`)."""
    held = _held().get(Path(run).absolute())
    if held is not None:
        held.identity = _identity(run)


def release(run: Path) -> None:
    key = Path(run).absolute()
    held = _held().pop(key, None)
    if held is not None:
        _unlock(key, held)


def _unlock(run: Path, held: _Held) -> None:
    """Release ``held``; its holder file goes too, unless it is no longer ours (the folder was renamed
    away or replaced since, and ``run`` is now another process's run)."""
    if held.lock is None:
        return
    try:
        if held.note and (run / HOLDER).read_bytes() == held.note:
            (run / HOLDER).unlink()
    except OSError:
        pass
    held.lock.release()


def check_present(path: Path, every_rank: bool = False) -> None:
    """Raise if the held run that ``path`` lies in has been removed or replaced, instead of writing its
    files again into a folder without a config (called before a run's files are written). Under
    torchrun only rank 0 knows; ``every_rank``: a point every rank reaches together, and all of them
    raise (else only rank 0 does, and reports it through `ticketlab.runs.ensure`)."""
    path = Path(path).absolute()
    gone = next((run for run, held in _held().items()
                 if held.identity is not None and held.lock is not None and (run == path or run in path.parents)
                 and (_identity(run) != held.identity or not (run / "config.json").is_file())), None)
    if every_rank and not distributed.gate(gone is None) and gone is None:
        raise CheckpointError("the run directory was removed while rank 0 was training it; see its error")
    if gone is not None:
        raise CheckpointError(f"{gone} was removed while this process was training it; stopped without writing "
                              "into it again (run the command again to start that run afresh)")


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Release, on leaving, the locks taken inside (a run command, a sweep job, an API call) in this
    context only; also a decorator. A session inside another leaves them to the outer one: a run command
    keeps its run until it has drawn the run's report, after the method's own session returned."""
    if _IN_SESSION.get():
        yield
        return
    inside = _IN_SESSION.set(True)
    try:
        with _releasing():
            yield
    finally:
        _IN_SESSION.reset(inside)


@contextlib.contextmanager
def _releasing() -> Iterator[None]:
    outer = _held()
    token = _HELD.set(dict(outer))  # the session's own record, starting with what its context holds
    try:
        yield
    finally:
        inner = _HELD.get()
        _HELD.reset(token)
        for run in [r for r in outer if inner.get(r) is not outer[r]]:
            del outer[run]  # released inside (its folder was replaced)
        for run, held in inner.items():
            if outer.get(run) is not held:
                _unlock(run, held)


@contextlib.contextmanager
def holding(run: Path, doing: Optional[str]) -> Iterator[None]:
    """``run``'s lock for the block (`runs rm`, `runs clean`); ``doing`` ends the refusal's line (None: a
    caller that only needs to know, see `_acquire`)."""
    key = Path(run).absolute()
    if key in _held():
        yield
        return
    held = _acquire(Path(run), doing)
    try:
        yield
    finally:
        _unlock(key, held)


__all__ = ["hold", "watch", "release", "check_present", "session", "holding", "holder", "LOCK", "HOLDER"]
