"""The initial weights of the trajectory golden vectors (README-trajectory.md, "Initial weights").

Every tensor is a function of its formula key (torchvision name for a
ResNet-50 copy, else the reference's state_dict name) and shape: uniform
values from FNV-1a-32 of the key and a SplitMix64 counter, or a constant.
Each ``.npz`` stores the per-tensor table (``init_*``); :func:`reference_state`
builds a reference-named state dict from it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

FNV_OFFSET, FNV_PRIME = 0x811C9DC5, 0x01000193
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1, MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def fnv1a32(key: str) -> int:
    h = FNV_OFFSET
    for b in key.encode("utf-8"):
        h = ((h ^ b) * FNV_PRIME) % 2**32
    return h


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 values (numpy wraps modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = z + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        return z ^ (z >> np.uint64(31))


def uniforms(key: str, n: int) -> np.ndarray:
    """u_i in [0, 1), float64, for i = 0..n-1."""
    z = np.uint64(fnv1a32(key)) * np.uint64(2**32) + np.arange(n, dtype=np.uint64)
    return (splitmix64(z) >> np.uint64(11)).astype(np.float64) * 2.0**-53


@lru_cache(maxsize=1024)  # ResNet copies share keys; tests clear it when done
def _uniform_tensor(key: str, n: int, scale: float) -> np.ndarray:
    values = (scale * (2.0 * uniforms(key, n) - 1.0)).astype(np.float32)
    values.flags.writeable = False
    return values


def clear_cache() -> None:
    """Drop the cached values (a ResNet-50 is ~100 MB of them)."""
    _uniform_tensor.cache_clear()


def formula_value(key: str, shape: tuple[int, ...], rule: str, scale: float, const: float,
                  integer: bool = False) -> torch.Tensor:
    """One tensor by the formula (a fresh tensor: callers may train it in place)."""
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if rule == "uniform":
        return torch.from_numpy(_uniform_tensor(key, n, float(scale)).copy()).reshape(shape)
    if rule != "const":
        raise ValueError(f"unknown init rule {rule!r} for {key}")
    if integer:
        return torch.full(shape, int(const), dtype=torch.int64)
    return torch.full(shape, float(const), dtype=torch.float32)


def shape_of(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split("x")) if text else ()


def formula_sumsq(d, i: int) -> float:
    """Sum of squares (float64) of row ``i``'s initial tensor, without materialising a copy."""
    n = int(np.prod(shape_of(str(d["init_shape"][i])), dtype=np.int64))
    if str(d["init_rule"][i]) == "const":
        return n * float(np.float32(d["init_const"][i])) ** 2  # the float32 value, squared in float64
    values = _uniform_tensor(str(d["init_formula_key"][i]), n, float(d["init_scale"][i])).astype(np.float64)
    return float(values @ values)


def reference_state(d, names=None) -> dict[str, torch.Tensor]:
    """Reference name -> initial tensor for every row of the file's ``init_*`` table (or only ``names``)."""
    wanted = None if names is None else set(names)
    out = {}
    for i, name in enumerate(d["init_name"]):
        name = str(name)
        if wanted is not None and name not in wanted:
            continue
        out[name] = formula_value(str(d["init_formula_key"][i]), shape_of(str(d["init_shape"][i])),
                                  str(d["init_rule"][i]), float(d["init_scale"][i]), float(d["init_const"][i]),
                                  integer=str(d["init_kind"][i]) == "num_batches_tracked")
    return out
