"""Optimisers and learning-rate schedules from plain config values.

The schedule is a factor of the base LR as a function of the epoch (a float,
so warm-up can advance per step): linear warm-up, then multistep or cosine.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("multistep", "cosine", "constant")


def build_optimizer(param_groups: Iterable[dict], name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9, nesterov: bool = True) -> torch.optim.Optimizer:
    """``param_groups`` are dicts with ``params`` and an optional ``lr_mult`` (default 1)."""
    groups = []
    for group in param_groups:
        group = dict(group)
        group["lr"] = lr * group.pop("lr_mult", 1.0)
        group["initial_lr"] = group["lr"]
        groups.append(group)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               nesterov=nesterov and momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def lr_factor(epoch: float, *, schedule: str, epochs: int, warmup_epochs: float = 0.0,
              warmup_start: float = 0.1, milestones: Iterable[int] = (), gamma: float = 0.1,
              min_factor: float = 0.0, factors: Sequence[float] = ()) -> float:
    """Multiplier of the base LR at (fractional) ``epoch``.

    Multistep: ``gamma ** (milestones passed)``, or, when ``factors`` is given
    (one per milestone), the factor of the last milestone passed (MSCLNet's
    0.1 -> 0.05 -> 0.01 -> 0.001 is ``factors: [0.5, 0.1, 0.01]``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if epoch < warmup_epochs:
        return warmup_start + (1.0 - warmup_start) * epoch / warmup_epochs
    if schedule == "multistep":
        passed = sum(1 for m in milestones if epoch >= m)
        if factors:
            return 1.0 if passed == 0 else float(factors[passed - 1])
        return gamma ** passed
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-9)
        progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
