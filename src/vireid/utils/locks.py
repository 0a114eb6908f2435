"""Exclusive file locks that the kernel releases when their holder dies: ``fcntl.flock`` on a lock file.

Why flock and not "create the file with O_EXCL and write a pid into it": an
O_EXCL file outlives a killed process, so a later process must guess whether
it is stale, and right after creation (before the pid is written) a live
lock looks exactly like a dead one. A flock belongs to the open file: while
the holder lives nobody else gets it, and when the holder dies (even by
SIGKILL) the kernel drops it, so there is nothing to guess.

The lock file is removed on release while still locked; a waiter that then
gets the lock on the removed file notices (the path no longer names the file
it locked) and tries again, so two processes can never both hold a path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class LockBusy(RuntimeError):
    """A non-blocking lock attempt found another holder."""


def lock_path_for(target: str | Path) -> Path:
    """The hidden lock file that guards writes to ``target`` (``dir/.NAME.lock``)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def open_locked(path: str | Path, blocking: bool = True) -> int:
    """An open fd of ``path`` holding an exclusive flock; :class:`LockBusy` when not ``blocking`` and held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockBusy(str(path)) from None
        except BaseException:
            os.close(fd)
            raise
        if _still_named(fd, path):
            return fd
        os.close(fd)  # the holder removed the file before we got it: lock the current one


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def release_locked(fd: int, path: str | Path) -> None:
    """Remove the lock file (while still holding it), then drop the lock."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


@contextlib.contextmanager
def exclusive(target: str | Path) -> Iterator[Path]:
    """Hold the lock guarding ``target`` (waiting for it) for a read-modify-write of that file."""
    path = lock_path_for(target)
    fd = open_locked(path, blocking=True)
    try:
        yield path
    finally:
        release_locked(fd, path)
