"""Replay fixed batches through a method's own training step, one optimiser step at a time.

"Replay these batches and show me each term" is how one debugs a diverging
run, and how vireid is checked against a reference code's first optimiser
steps (tests/test_trajectory_golden.py). Nothing here re-implements training:
:func:`replay` builds the :class:`~vireid.engine.trainer.Trainer` the config
would build (the recipe's parameter groups, the optimiser with its weight
decay, momentum/Nesterov or Adam settings, frozen parameters left out by
``requires_grad``) and calls its step, after setting every group's LR from
``train.schedule`` at the given epoch, exactly as a training epoch would.

Per step, optionally: ``seeds[i]`` seeds torch's generator first (dropout
masks then repeat a recorded run's), ``after_backward(i, trainer)`` sees the
gradients before the optimiser uses them (``trainer.recipe.model``, and
``trainer.optimizer`` with the step's LRs), ``after_step(i, trainer, record)``
sees the updated weights. Models are in train mode (BN running statistics
update as in training).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch

from vireid.engine.trainer import Recipe, TrainConfig, Trainer


class _FixedBatches:
    """The given batches as one epoch (the Trainer's ``Batches`` protocol)."""

    def __init__(self, batches: Sequence):
        self.items = list(batches)

    def __len__(self) -> int:
        return len(self.items)

    def epoch(self, epoch: int, start: int = 0):
        return iter(self.items[start:])


def replay(recipe: Recipe, batches: Sequence[Any], cfg: TrainConfig | dict, *, epoch: float = 0,
           steps_per_epoch: int | None = None, state_dict: dict | None = None,
           seeds: Sequence[int] | None = None,
           after_backward: Callable[[int, Trainer], None] | None = None,
           after_step: Callable[[int, Trainer, dict], None] | None = None,
           device: torch.device | str = "cpu") -> list[dict]:
    """Run ``batches`` (the data loader's layout for this method) as consecutive training steps.

    Args:
        recipe: a built recipe (``vireid.methods.build_recipe``); its model is trained in place.
        cfg: the ``train`` section (a dict is parsed like a config's).
        epoch: the epoch the steps belong to; every group's LR is ``train.lr`` x its multiplier x the
            schedule's factor there (AGW's warm-up: epoch e gives (e + 1) / 10).
        steps_per_epoch: when given, step i sits at ``epoch + i / steps_per_epoch`` of the schedule (per-step
            warm-ups advance); None holds the schedule at ``epoch``.
        state_dict: weights to load (strictly) before the first step.
        seeds: ``torch.manual_seed(seeds[i])`` before step i (one per batch).

    Returns one record per step: ``step``, ``lr`` (one per parameter group of the first optimiser) and
    every term the recipe logged.
    """
    tc = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    if seeds is not None and len(seeds) != len(batches):
        raise ValueError(f"replay got {len(seeds)} seeds for {len(batches)} batches; give one per batch")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if state_dict is not None:
        recipe.model.load_state_dict(state_dict)
    with tempfile.TemporaryDirectory(prefix="vireid-replay-") as run_dir:  # a replay writes no checkpoint
        trainer = Trainer(recipe, _FixedBatches(batches), tc, run_dir, device=device, progress=False)
        if after_backward is not None:
            trainer.after_backward = lambda t: after_backward(t.global_step, t)
        recipe.model.train()
        set_progress = getattr(recipe, "set_progress", None)
        records = []
        for i, batch in enumerate(batches):
            trainer.apply_schedule(epoch + (i / steps_per_epoch if steps_per_epoch else 0.0), set_progress)
            if seeds is not None:
                torch.manual_seed(int(seeds[i]))
            lrs = [group["lr"] for group in trainer.optimizer.param_groups]
            terms = trainer.train_step(trainer.to_device(batch, trainer.device))
            record = {"step": i, "lr": lrs, **terms}
            trainer.global_step += 1
            if after_step is not None:
                after_step(i, trainer, record)
            records.append(record)
    return records
