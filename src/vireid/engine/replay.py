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
masks then repeat a recorded run's, with the same torch build and call
order), ``dropout_masks[i]`` replaces the masks the model's ``nn.Dropout``
layers draw by given keep-masks, in call order (a recorded run from another
torch build or code; the hooks exist only during the replay), ``after_backward(i, trainer)`` sees the
gradients before the optimiser uses them (``trainer.recipe.model``, and
``trainer.optimizer`` with the step's LRs), ``after_step(i, trainer, record)``
sees the updated weights. Models are in train mode (BN running statistics
update as in training).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from vireid.engine.trainer import Recipe, Trainer
from vireid.schema import TrainSettings, parse_section


class _FixedBatches:
    """The given batches as one epoch (the Trainer's ``Batches`` protocol)."""

    def __init__(self, batches: Sequence):
        self.items = list(batches)

    def __len__(self) -> int:
        return len(self.items)

    def epoch(self, epoch: int, start: int = 0):
        return iter(self.items[start:])


def replay(recipe: Recipe, batches: Sequence[Any], cfg: TrainSettings | dict, *, epoch: float = 0,
           steps_per_epoch: int | None = None, state_dict: dict | None = None,
           seeds: Sequence[int] | None = None, dropout_masks: Sequence[Sequence[torch.Tensor]] | None = None,
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
        dropout_masks: per step, one keep-mask (1 = kept) per ``nn.Dropout`` call of the model, in call order;
            each call's output becomes ``input * mask / (1 - p)``.

    Returns one record per step: ``step``, ``lr`` (one per parameter group of the first optimiser) and
    every term the recipe logged.
    """
    tc = cfg if isinstance(cfg, TrainSettings) else parse_section(TrainSettings, cfg, "train")
    for name, given in (("seeds", seeds), ("dropout_masks", dropout_masks)):
        if given is not None and len(given) != len(batches):
            raise ValueError(f"replay got {len(given)} {name} for {len(batches)} batches; give one per batch")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if state_dict is not None:
        recipe.model.load_state_dict(state_dict)
    injector = _MaskInjector(recipe.model, dropout_masks) if dropout_masks is not None else nullcontext()
    with tempfile.TemporaryDirectory(prefix="vireid-replay-") as run_dir, injector:  # no checkpoint is written
        trainer = Trainer(recipe, _FixedBatches(batches), tc, run_dir, device=device, progress=False)
        if after_backward is not None:
            trainer.after_backward = lambda t: after_backward(t.global_step, t)
        recipe.model.train()
        records = []
        for i, batch in enumerate(batches):
            trainer.apply_schedule(epoch + (i / steps_per_epoch if steps_per_epoch else 0.0))
            if seeds is not None:
                torch.manual_seed(int(seeds[i]))
            lrs = [group["lr"] for group in trainer.optimizer.param_groups]
            if dropout_masks is not None:
                injector.start(i)
            terms = trainer.train_step(trainer.to_device(batch, trainer.device))
            if dropout_masks is not None:
                injector.finish()
            record = {"step": i, "lr": lrs, **terms}
            trainer.global_step += 1
            if after_step is not None:
                after_step(i, trainer, record)
            records.append(record)
    return records


class _MaskInjector:
    """Forward hooks on every ``nn.Dropout`` of a model that replace its random mask by the step's given one
    (a context manager: the hooks are removed on leaving, also after an error)."""

    def __init__(self, model: torch.nn.Module, masks: Sequence[Sequence[torch.Tensor]]):
        self.model, self.all_masks = model, masks
        self.handles: list = []
        self.step, self.used = 0, 0

    def __enter__(self) -> _MaskInjector:
        self.handles = [m.register_forward_hook(self._hook) for m in self.model.modules()
                        if isinstance(m, torch.nn.Dropout)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def start(self, step: int) -> None:
        self.step, self.used = step, 0

    def _hook(self, module, inputs, output):
        masks = self.all_masks[self.step]
        if self.used >= len(masks):
            raise ValueError(f"replay step {self.step}: dropout call {self.used + 1} has no mask ({len(masks)} given)")
        x, mask = inputs[0], masks[self.used]
        self.used += 1
        if mask.shape != x.shape:
            raise ValueError(f"replay step {self.step}: dropout mask {self.used} has shape {tuple(mask.shape)}, "
                             f"the layer's input {tuple(x.shape)}")
        return x * mask.to(x.device, x.dtype) / (1.0 - module.p) if module.training else output

    def finish(self) -> None:
        given = len(self.all_masks[self.step])
        if self.used != given:
            raise ValueError(f"replay step {self.step}: {given} dropout masks given, the model drew {self.used}")
