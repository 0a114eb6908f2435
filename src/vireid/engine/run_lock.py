"""One live run per run directory: a lock file holding the owner's pid and host.

Two ``vireid train`` processes writing the same checkpoint would each resume
from, and overwrite, the other's state. The lock is created with
``O_CREAT | O_EXCL`` (atomic on a local file system). A lock whose process is
gone (same host, pid no longer alive) is stale: it is taken over with a
warning, so a run killed with SIGKILL can still be resumed by re-running the
command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".vireid.lock"


class RunDirectoryBusy(RuntimeError):
    """Another live process holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_stale(holder: dict | None) -> bool:
    """A lock is stale when unreadable, or written on this host by a process that no longer exists."""
    if holder is None:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(holder["pid"])


def acquire(run_dir: str | Path) -> Path:
    """Create the lock in ``run_dir`` or raise :class:`RunDirectoryBusy` naming the holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if holder == me:
                return path  # re-entrant within one process
            if not _is_stale(holder):
                raise RunDirectoryBusy(
                    f"run directory {run_dir} is in use by process {holder['pid']} on host {holder['host']} "
                    f"(lock file {path}); wait for it to finish or choose another --out. If that process is "
                    "gone for good (e.g. another machine that crashed), delete the lock file") from None
            log.warning("taking over the stale lock %s (held by %s, which is no longer running)", path, holder)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        return path
    raise RunDirectoryBusy(f"could not take the lock {path}: another process took it at the same moment")


def release(path: Path) -> None:
    """Remove the lock if this process still holds it."""
    if _read_holder(path) == {"pid": os.getpid(), "host": socket.gethostname()}:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def run_directory_lock(run_dir: str | Path) -> Iterator[Path]:
    path = acquire(run_dir)
    try:
        yield path
    finally:
        release(path)
