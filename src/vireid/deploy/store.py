"""Feature files and gallery indexes on disk: safetensors with the paths packed as bytes, checked on load.

Why safetensors: it loads without executing code, memory-maps large arrays
and keeps string metadata next to them. Paths go in as one UTF-8 byte tensor
plus offsets (a million paths would not fit the header). Every file carries a
sha256 of its tensors, so a damaged file is refused by name instead of giving
wrong results; the JSON metadata (the run's identity, the faiss settings)
has its own sha256 (``meta_sha256``), so a changed byte there is refused
too (files written before it existed load without that check). Each file is
written to a temp file and renamed, so an interrupted write never leaves half
a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from vireid.utils.io import atomic_path

VERSION = "1"


def pack_strings(items: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 bytes, int64 offsets of length N + 1): item i is bytes[offsets[i]:offsets[i + 1]]."""
    encoded = [s.encode("utf-8") for s in items]
    offsets = torch.zeros(len(encoded) + 1, dtype=torch.int64)
    if encoded:
        offsets[1:] = torch.cumsum(torch.tensor([len(b) for b in encoded], dtype=torch.int64), 0)
    data = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if offsets[-1] else \
        torch.zeros(0, dtype=torch.uint8)
    return data, offsets


def unpack_strings(data: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    raw = data.numpy().tobytes()
    bounds = offsets.tolist()
    return [raw[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def save_checked(path: str | Path, kind: str, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write ``tensors`` and JSON-able ``metadata`` atomically with the format name and a checksum."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fields = {k: json.dumps(v) for k, v in metadata.items()}
    header = {"format": kind, "version": VERSION, "sha256": checksum(tensors), "meta_sha256": meta_checksum(fields),
              **fields}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_checked(path: str | Path, kind: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a file written by :func:`save_checked` as ``kind``; clear errors otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for damaged headers and data
        raise ValueError(f"{path} is corrupt or not a vireid {what} (cannot read it as safetensors: {exc}); "
                         "rebuild it") from None
    if header.get("format") != kind:
        raise ValueError(f"{path} is not a vireid {what} (format {header.get('format')!r}, expected {kind!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} is a version {header.get('version')} {what}; this vireid reads version {VERSION}")
    if checksum(tensors) != header.get("sha256"):
        raise ValueError(f"{path} is corrupt: its contents do not match the checksum written with it; rebuild it")
    fields = {k: v for k, v in header.items() if k not in RESERVED}
    if "meta_sha256" in header and meta_checksum(fields) != header["meta_sha256"]:
        raise ValueError(f"{path} is corrupt: its metadata does not match the checksum written with it; rebuild it")
    try:
        metadata = {k: json.loads(v) for k, v in fields.items()}
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt: its metadata is not valid JSON ({exc}); rebuild it") from None
    return tensors, metadata


RESERVED = ("format", "version", "sha256", "meta_sha256")


def meta_checksum(fields: dict[str, str]) -> str:
    """sha256 over the metadata's (name, JSON text) pairs in name order."""
    return hashlib.sha256(json.dumps(sorted(fields.items())).encode()).hexdigest()


FEATURES_KIND = "vireid-features"


def save_features(path: str | Path, features: torch.Tensor, paths: list[str], modalities: list[int],
                  run: dict, failed: list[tuple[str, str]] = ()) -> None:
    """What ``vireid extract`` writes: features (N, D), paths, modalities, the run's identity, skipped files."""
    if len(features) != len(paths) or len(paths) != len(modalities):
        raise ValueError(f"{len(features)} features, {len(paths)} paths and {len(modalities)} modalities")
    data, offsets = pack_strings(list(paths))
    save_checked(path, FEATURES_KIND,
                 {"features": features.float(), "modality": torch.tensor(list(modalities), dtype=torch.uint8),
                  "paths_utf8": data, "paths_offsets": offsets},
                 {"run": run, "failed": [list(f) for f in failed]})


def load_features(path: str | Path) -> dict:
    """{"features", "paths", "modalities", "run", "failed"} of a ``vireid extract`` file."""
    tensors, meta = load_checked(path, FEATURES_KIND, "feature file")
    return {"features": tensors["features"], "paths": unpack_strings(tensors["paths_utf8"], tensors["paths_offsets"]),
            "modalities": tensors["modality"].long().tolist(), "run": meta.get("run"), "failed": meta.get("failed")}
