"""Output paths checked before any work: a command that would fail to write its result fails at once.

Why: ``vireid eval --json`` or ``search --grid`` used to run every model
forward first and only then hit ``IsADirectoryError`` or a read-only disk,
with a traceback. Every command that writes calls :func:`output_file` or
:func:`output_dir` on its paths first; each problem is one line naming the
path (an existing directory where a file goes, a file where a directory goes
or on the way to it, a parent that cannot be written).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot be written as asked."""


def _nearest_existing(path: Path) -> Path:
    """The deepest existing ancestor of ``path`` (``path`` itself excluded); a file there is an error."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"cannot write {path}: {parent} is a file, not a directory")
            return parent
    return Path(path.anchor or "/")


def _require_writable(folder: Path, path: Path) -> None:
    """Try to create (and remove) a file in ``folder``: permissions, read-only file systems and quotas alike."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".vireid-write-check.", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {folder} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def output_file(path: str | Path | None, option: str = "--out", overwrite: bool = True) -> Path | None:
    """Check that ``path`` can be written as a file (``None``: no such output asked for).

    ``overwrite`` False refuses an existing file too (for outputs never replaced).
    """
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a directory; give a file name (e.g. {path / 'out'}...)")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{option} {path} exists and is not a regular file")
    if path.exists() and not overwrite:
        raise OutputPathError(f"{option} {path} already exists")
    folder = path.parent if path.parent.is_dir() else _nearest_existing(path)
    _require_writable(folder, path)
    return path


def output_dir(path: str | Path, option: str = "--out") -> Path:
    """Check that ``path`` is, or can be created as, a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file; it must be a directory (new or existing)")
    _require_writable(path if path.is_dir() else _nearest_existing(path), path)
    return path
