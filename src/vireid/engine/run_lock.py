"""One live run per run directory: an flock on ``.vireid.lock``, which also records the owner's pid and host.

Two ``vireid train`` processes writing the same checkpoint would each resume
from, and overwrite, the other's state. The lock is an exclusive ``flock``
(:mod:`vireid.utils.locks`): the kernel drops it when its process dies, even
by SIGKILL, so a killed run is resumed by re-running the command, and a lock
file that is empty (its holder has not written its pid yet) or names a dead
process is never mistaken for a free one while a live process holds it.
The pid and host written into it are only there for the error message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from vireid.utils.locks import LockBusy, open_locked, release_locked

log = logging.getLogger(__name__)

LOCK_NAME = ".vireid.lock"
_HELD: dict[Path, list[int]] = {}  # lock path -> [fd, depth] for the locks this process holds


class RunDirectoryBusy(RuntimeError):
    """Another live process holds the run directory."""


def _read_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _busy(run_dir: Path, path: Path) -> RunDirectoryBusy:
    holder = _read_holder(path)
    who = (f"process {holder['pid']} on host {holder.get('host')}" if holder
           else "another process (it has just started)")
    return RunDirectoryBusy(f"run directory {run_dir} is in use by {who} (lock file {path}); wait for it to "
                            "finish or choose another --out")


def acquire(run_dir: str | Path) -> Path:
    """Lock ``run_dir`` or raise :class:`RunDirectoryBusy` naming the holder; re-entrant within a process."""
    run_dir = Path(run_dir)
    path = (run_dir / LOCK_NAME).absolute()
    if path in _HELD:
        _HELD[path][1] += 1
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_locked(path, blocking=False)
    except LockBusy:
        raise _busy(run_dir, path) from None
    previous = _read_holder(path)
    if previous is not None:
        log.info("the previous holder of %s (%s) is gone; taking over", path, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
    _HELD[path] = [fd, 1]
    return path


def release(path: Path) -> None:
    """Drop one hold of the lock; the last one removes the lock file and frees the directory."""
    path = Path(path).absolute()
    held = _HELD.get(path)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[path]
        release_locked(held[0], path)


@contextlib.contextmanager
def run_directory_lock(run_dir: str | Path) -> Iterator[Path]:
    path = acquire(run_dir)
    try:
        yield path
    finally:
        release(path)
