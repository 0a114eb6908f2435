"""Checkpoints that load without executing code and survive being killed mid-write.

A checkpoint holds only tensors and plain Python types, so ``torch.load(...,
weights_only=True)`` reads it. It is written to a temp file in the same
directory and renamed over the old one, so an interrupted save leaves the
previous checkpoint intact. It carries a sha256 of its contents (every
tensor's bytes, dtype and shape, every plain value) under ``CHECKSUM_KEY``;
:func:`load_checkpoint` recomputes it, so a flipped byte inside a tensor,
which would load silently and evaluate to other numbers, is refused by name.
Checkpoints written before the checksum existed load unchecked.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.utils.io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
CHECKSUM_KEY = "vireid_sha256"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def state_checksum(state: Any) -> str:
    """sha256 over a nested state (dicts in key order, sequences, tensors' dtype/shape/bytes, plain values)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY} if isinstance(state, dict) else state)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode() + b":")
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({**state, CHECKSUM_KEY: state_checksum(state)}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """The state dict saved by :func:`save_checkpoint`, with a plain error for each way a file can be wrong.

    A missing file, a truncated one (interrupted copy, full disk), a file that
    is not a PyTorch checkpoint at all, and one that holds pickled objects
    (refused: loading it could run code) each get their own message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _ZIP_MAGIC:
        raise ValueError(f"{path} is not a PyTorch checkpoint (it does not start like a torch.save file: "
                         f"first bytes {magic!r}); vireid reads checkpoints written by torch >= 1.6")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is truncated or damaged ({path.stat().st_size} bytes, the archive's end is "
                         "missing); copy it again, or delete it to train from the start")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"cannot load {path} as a vireid checkpoint: it holds pickled Python objects, which are refused "
            f"(only tensors and plain Python types are accepted, so loading never runs code): {exc}"
        ) from None
    except Exception as exc:  # torch raises several types for damaged archives
        raise ValueError(f"{path} is damaged and cannot be read as a checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint (a dict of tensors and values)")
    expected = state.pop(CHECKSUM_KEY, None)
    if expected is not None and state_checksum(state) != expected:
        raise ValueError(f"{path} is corrupt: its contents do not match the sha256 written with it (damaged on disk "
                         "or in a copy); copy it again, or delete it to train from the start")
    return state


def rng_state() -> dict:
    """Every random generator training touches, as tensors and plain types."""
    np_state = np.random.get_state()
    state = {
        "python": _plain(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
