"""Optimisers and learning-rate schedules from plain config values.

The schedule is a factor of the base LR as a function of the epoch (a float,
so warm-up can advance per step): linear warm-up, then multistep or cosine.
Two schedules reproduce released codes that set the rate once per epoch
(the factor then depends on the whole epoch number only):

* ``agw_step_warmup`` -- AGW ``train.py:adjust_learning_rate`` (also CAJ's
  ``train_ext.py`` and HcTri's ``train_mine.py``): (e + 1) / W for epochs
  e < W (W = ``warmup_epochs``, 10), then x ``gamma`` at each milestone
  (20, 50).
* ``vsd_warmup_multistep`` -- VSD's ``WarmupMultiStepLR`` stepped at the
  start of each epoch, so epoch e uses step t = e + 1:
  w(t) = s (1 - t/W) + t/W for t < W (s = ``warmup_start``), then x gamma
  per milestone m <= t.

IDKL's ``MultiStepLR`` stepped at each epoch's end is ``multistep`` without
warm-up. :data:`REFERENCE_SCHEDULES` names each reference's settings.

``iter_step`` counts iterations instead of epochs: x ``gamma`` every
``step_iters`` optimiser steps (Hi-CMD halves every 25k/50k iterations, a
``StepLR`` stepped after every iteration).

A recipe with several optimisers (``Recipe.optimizers()``) gets one per name;
:class:`OptimizerSettings` (``train.optimizers.<name>``) overrides the
``train`` values for one of them, e.g. Adam with betas (0.5, 0.999) for a GAN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from vireid.schema import OPTIMIZERS, SCHEDULES


def build_optimizer(param_groups: Iterable[dict], name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9, nesterov: bool = True,
                    betas: Sequence[float] | None = None) -> torch.optim.Optimizer:
    """``param_groups`` are dicts with ``params`` and an optional ``lr_mult`` (default 1), or ``fixed_lr``: a rate
    of its own that the schedule leaves alone (NFormer's second stage trains at 1e-5 whatever the first
    stage's schedule has reached); a group may also set its own ``weight_decay``.

    ``betas`` (Adam/AdamW only) None keeps torch's default (0.9, 0.999)."""
    groups = []
    for group in param_groups:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)  # read twice below
        fixed = group.pop("fixed_lr", None)
        group["lr"] = float(fixed) if fixed is not None else lr * group.pop("lr_mult", 1.0)
        group["initial_lr"] = group["lr"]
        group["scheduled"] = fixed is None
        groups.append(group)
    adam = ({} if betas is None else {"betas": tuple(betas)}) | adam_kernel(groups)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **adam)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **adam)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               nesterov=nesterov and momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def adam_kernel(param_groups: Sequence[dict]) -> dict:
    """``{"fused": True}`` when every parameter is a floating-point tensor on the CPU, else ``{}`` (torch's choice).

    Why: on the CPU torch's default Adam/AdamW is a Python loop of about ten elementwise passes per
    parameter; the fused kernel updates each parameter in one pass (about 0.1 s of IDKL's 2.5 s training
    step, benchmarks/README.md). Its results differ from the loop's by rounding only. CUDA keeps
    torch's default (foreach).
    """
    params = [p for group in param_groups for p in group["params"]]
    cpu = bool(params) and all(p.device.type == "cpu" and p.is_floating_point() and not p.is_sparse for p in params)
    return {"fused": True} if cpu else {}


def lr_factor(epoch: float, *, schedule: str, epochs: int, warmup_epochs: float = 0.0,
              warmup_start: float = 0.1, milestones: Iterable[int] = (), gamma: float = 0.1,
              min_factor: float = 0.0, factors: Sequence[float] = (), step: int = 0, step_iters: int = 0) -> float:
    """Multiplier of the base LR at (fractional) ``epoch``, or, for ``iter_step``, at iteration ``step``.

    Multistep: ``gamma ** (milestones passed)``, or, when ``factors`` is given
    (one per milestone), the factor of the last milestone passed (MSCLNet's
    0.1 -> 0.05 -> 0.01 -> 0.001 is ``factors: [0.5, 0.1, 0.01]``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if schedule == "iter_step":
        return iteration_factor(step, step_iters, gamma)
    if schedule == "agw_step_warmup":
        e = math.floor(epoch)
        warm = (e + 1) / warmup_epochs if e < warmup_epochs else 1.0
        return warm * gamma ** sum(1 for m in milestones if e >= m)
    if schedule == "vsd_warmup_multistep":
        t = math.floor(epoch) + 1
        warm = warmup_start * (1 - t / warmup_epochs) + t / warmup_epochs if t < warmup_epochs else 1.0
        return warm * gamma ** sum(1 for m in milestones if t >= m)
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


def iteration_factor(step: int, step_iters: int, gamma: float) -> float:
    """``gamma ** (step // step_iters)``: the LR of 0-based iteration ``step`` under a StepLR stepped per iteration."""
    if not isinstance(step_iters, int) or step_iters < 1:
        raise ValueError(f"train.step_iters must be an integer >= 1 for schedule iter_step, got {step_iters!r}")
    return gamma ** (step // step_iters)


# lr_factor settings of each reference's schedule; the golden ``lr_schedule`` vectors pin them.
REFERENCE_SCHEDULES = {
    "agw_step_warmup": {"schedule": "agw_step_warmup", "warmup_epochs": 10, "milestones": (20, 50), "gamma": 0.1},
    "vsd_warmup_multistep": {"schedule": "vsd_warmup_multistep", "warmup_epochs": 10, "warmup_start": 0.01,
                             "milestones": (210,), "gamma": 0.1},
    "idkl_multistep": {"schedule": "multistep", "warmup_epochs": 0, "milestones": (55, 95), "gamma": 0.1},
}


def epoch_rates(base_lr: float, epochs: int, **settings) -> list[float]:
    """The learning rate of each whole epoch 0..epochs-1 under ``lr_factor(**settings)``."""
    settings.setdefault("epochs", epochs)
    return [base_lr * lr_factor(float(e), **settings) for e in range(epochs)]


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * (factor if group.get("scheduled", True) else 1.0)
