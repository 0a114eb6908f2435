"""``--device`` values checked when the command line is read: a typo or a GPU this machine lacks is one line.

Why at parse time: ``--device bogus`` used to reach ``torch.device`` deep in
a command (a RuntimeError traceback) and ``--device cuda`` on a CPU-only
PyTorch failed after the model and data were loaded. Accepted: ``auto``,
``cpu``, ``cuda``, ``cuda:N`` (N a visible GPU), ``mps`` where PyTorch has it.
"""

from __future__ import annotations

import argparse

import torch

CHOICES = "auto, cpu, cuda, cuda:N"


def check_device(name: str) -> str:
    """``name`` if this machine can run on it; ValueError saying why not otherwise."""
    text = str(name).strip().lower()
    if text in ("auto", "cpu"):
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; expected one of {CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {name!r} was asked for but {why}; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are {torch.cuda.device_count()} GPU(s), numbered from 0")
        return text
    if device.type == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return text
    raise ValueError(f"device {name!r} is not available here; expected one of {CHOICES}")


def device_arg(name: str) -> str:
    """argparse ``type=``: :func:`check_device` with argparse's one-line usage error."""
    try:
        return check_device(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
