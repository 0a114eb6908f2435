"""The one training loop every method uses.

A method is a *recipe* (``vireid.methods``): it owns the model and its loss
mix, and ``training_step(model, batch)`` returns ``{"loss": total, ...}``
(the other entries are logged terms). ``model`` is the recipe's model, or its
DistributedDataParallel wrapper under torchrun, so gradients are synchronised.
The loop owns everything else: optimiser and LR schedule, autocast, gradient
scaling, checkpoints, logs, stopping on NaN and on signals.

Resuming is exact in deterministic CPU mode: a checkpoint records the epoch,
the number of batches done in it, every RNG state, and the optimiser, so a
run killed mid-epoch and resumed ends with the same weights as one that was
never stopped (batches are a pure function of (seed, epoch), see the sampler).

Several optimisers: a recipe with ``optimizers() -> {name: param_groups}``
(e.g. ``gen``, ``dis``, ``id`` of a GAN) gets one optimiser per name, and its
``training_step`` *yields* updates ``(name or names, {"loss": ..., ...})`` in
order; each is back-propagated and its optimiser(s) stepped before the next
is computed, so a generator update sees the discriminator as it is after its
own step (and never back-propagates through weights an optimiser already
changed in place). Every optimiser's state is checkpointed by name; the LR
schedule is a pure function of (epoch, step), so nothing else needs saving.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from vireid.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vireid.engine.distributed import DistInfo, wrap_ddp
from vireid.engine.metrics_log import trim_after
from vireid.engine.optim import build_optimizer, lr_factor, set_lr
from vireid.methods.base import Method
from vireid.schema import OptimizerSettings, TrainSettings

log = logging.getLogger(__name__)


Recipe = Method  # what the loop needs from a method: its hooks are declared, with defaults, there


class Batches(Protocol):
    """A re-iterable source of batches for one epoch at a time.

    Optional: ``epoch_length(epoch)`` when epochs differ in length (IDKL's
    sampler), and ``fixed_epoch_length`` (bool); otherwise ``len()`` is used.
    """

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterable[Any]: ...


class TrainingDiverged(RuntimeError):
    pass


class TrainingInterrupted(RuntimeError):
    pass


class Trainer:
    def __init__(self, recipe: Recipe, batches: Batches, cfg: TrainSettings, run_dir: str | Path,
                 device: torch.device | str = "cpu", to_device: Callable[[Any, torch.device], Any] | None = None,
                 extra_state: dict | None = None, dist_info: DistInfo | None = None, progress: bool = True):
        self.recipe, self.batches, self.cfg = recipe, batches, cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.to_device = to_device or _move
        self.extra_state = extra_state or {}
        self.dist = dist_info or DistInfo(0, 1, 0, self.device)
        if cfg.time_budget_s > 0 and self.dist.world_size > 1:
            raise ValueError("train.time_budget_s works on one process only (under torchrun each rank would stop "
                             "at its own step and the gradient all-reduce would hang); set train.epochs instead")
        self.is_main, self.progress = self.dist.is_main, progress
        recipe.model.to(self.device)
        groups = recipe.optimizers()  # None: one optimiser over param_groups()
        self.optimizers = self._build_optimizers(recipe, groups, cfg) if groups is not None else None
        if self.optimizers is None:
            if cfg.optimizers:
                raise ValueError(f"train.optimizers names {', '.join(sorted(cfg.optimizers))}, but method "
                                 f"{recipe.name!r} has one optimiser: set train.optimizer/lr/... instead")
            self.optimizer = build_optimizer(recipe.param_groups(), cfg.optimizer, cfg.lr, cfg.weight_decay,
                                             momentum=cfg.momentum)
        else:
            self.optimizer = next(iter(self.optimizers.values()))  # the first one's LR is the logged "lr"
            if self.dist.world_size > 1:
                raise ValueError(f"method {recipe.name!r} alternates several optimisers, which vireid runs on one "
                                 "process only (not under torchrun)")
        use_scaler = cfg.amp == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.trained_s = 0.0  # seconds spent in training epochs (data loading included), kept across resumes
        self._stop_signal: int | None = None
        # Optional ``after_backward(trainer)``: called once gradients exist, before the optimiser steps
        # (the replay's gradient callback; None in normal training).
        self.after_backward: Callable[[Trainer], None] | None = None
        if cfg.channels_last:
            recipe.model.to(memory_format=torch.channels_last)
        self.train_model = wrap_ddp(recipe.model, self.dist)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)

    @staticmethod
    def _build_optimizers(recipe, groups: dict, cfg: TrainSettings) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per name of ``recipe.optimizers()``, each with ``train.optimizers.<name>`` over ``train``."""
        groups = dict(groups)
        unknown = sorted(set(cfg.optimizers) - set(groups))
        if unknown:
            raise ValueError(f"train.optimizers names {', '.join(unknown)}, which method {recipe.name!r} does not "
                             f"have; its optimisers are {', '.join(groups)}")
        built = {}
        for name, param_groups in groups.items():
            own = OptimizerSettings.parse(name, cfg.optimizers.get(name))
            pick = lambda value, default: default if value is None else value  # noqa: E731
            built[name] = build_optimizer(param_groups, pick(own.optimizer, cfg.optimizer), pick(own.lr, cfg.lr),
                                          pick(own.weight_decay, cfg.weight_decay),
                                          momentum=pick(own.momentum, cfg.momentum), betas=own.betas)
        return built

    # ------------------------------------------------------------------ state

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict:
        if self.optimizers is not None:
            optimizer = {"optimizers": {name: o.state_dict() for name, o in self.optimizers.items()}}
        else:
            optimizer = {"optimizer": self.optimizer.state_dict()}
        return {
            "method": self.recipe.name,
            "model": self.recipe.model.state_dict(),
            **optimizer,
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "trained_s": self.trained_s,
            **self.extra_state,
        }

    def save(self) -> None:
        if self.is_main:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (or this run's checkpoint if present). Returns whether it resumed."""
        path = Path(path) if path else self.checkpoint_path
        if not path.is_file():
            if path != self.checkpoint_path:
                raise FileNotFoundError(f"checkpoint not found: {path}")
            return False
        state = load_checkpoint(path)
        if state.get("method") != self.recipe.name:
            raise ValueError(f"{path} was written by method {state.get('method')!r}, "
                             f"not {self.recipe.name!r}; use a matching config")
        self.recipe.model.load_state_dict(state["model"])
        if self.optimizers is not None:
            saved = state.get("optimizers", {})
            if set(saved) != set(self.optimizers):
                raise ValueError(f"{path} holds optimisers {sorted(saved)}, but method {self.recipe.name!r} has "
                                 f"{sorted(self.optimizers)}")
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(saved[name])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.trained_s = float(state.get("trained_s", 0.0))
        if self.is_main:
            trim_after(self.run_dir / "metrics.jsonl", self.global_step)  # steps redone now are not logged twice
        return True

    # ------------------------------------------------------------------ loop

    def fit(self, on_step: Callable[[Trainer, dict], None] | None = None,
            on_epoch_end: Callable[[Trainer], None] | None = None) -> None:
        """Train to ``cfg.epochs``; ``on_epoch_end(trainer)`` runs after each epoch's checkpoint.

        With ``cfg.time_budget_s`` > 0 training instead stops at the first step boundary after that many
        seconds of training (so methods can be compared at equal wall time), and the LR schedule is
        stretched over the budget: at a fraction f of the budget it is at epoch ``f * cfg.epochs`` of the
        schedule (warm-up, milestones, cosine). The last epoch may end early; it still counts as an epoch.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            self.log_schedule()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._finished():
                self._run_epoch(on_step)
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.save()
                if on_epoch_end:
                    on_epoch_end(self)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def epoch_length(self, epoch: int) -> int:
        """Optimiser steps in ``epoch`` (what the LR schedule's fraction of an epoch is measured in)."""
        batches = self.batches_for(epoch)
        length = getattr(batches, "epoch_length", None)
        return int(length(epoch)) if length is not None else len(batches)

    def batches_for(self, epoch: int) -> Batches:
        """The data's batches, or the recipe's own for ``epoch`` (optional hook ``epoch_batches``)."""
        batches = self.recipe.epoch_batches(epoch, self.batches)
        return self.batches if batches is None else batches

    def log_schedule(self) -> dict:
        """Log (and return) the epoch length in steps and the total steps of the run, before the first step.

        The steps per epoch are what the reference codes differ on most (IDKL's
        sampler gives ~195 on SYSU-MM01 where a balanced one gives 371+), and
        they set when each LR milestone falls.
        """
        steps = self.epoch_length(self.epoch)
        own_batches = self.recipe.offers("epoch_batches")  # the recipe's batches may vary by epoch
        fixed = getattr(self.batches, "fixed_epoch_length", True) and not own_batches
        total = steps * self.cfg.epochs
        info = {"steps_per_epoch": steps, "epochs": self.cfg.epochs, "total_steps": total, "exact": fixed}
        log.info("%s: %d steps per epoch (%s), %d epochs, %s%d steps in total (batch of %s images)",
                 self.recipe.name, steps, "every epoch" if fixed else f"epoch {self.epoch + 1}; varies by epoch",
                 self.cfg.epochs, "" if fixed else "about ", total, _sampler_batch(self.batches))
        return info

    def _finished(self) -> bool:
        if self.cfg.time_budget_s > 0:
            return self.trained_s >= self.cfg.time_budget_s
        return self.epoch >= self.cfg.epochs

    def _schedule_epoch(self, steps: int) -> float:
        """Where the LR schedule stands: the epoch (fractional), or the budget's used fraction x epochs."""
        if self.cfg.time_budget_s > 0:
            return self.cfg.epochs * min(self.trained_s / self.cfg.time_budget_s, 1.0)
        return self.epoch + self.step_in_epoch / steps

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum  # acted on at the next step boundary, with a checkpoint

    def _run_epoch(self, on_step) -> None:
        # e.g. a pseudo-label refresh (DAN); ``self.step_in_epoch`` > 0 when resuming.
        self.recipe.on_epoch_start(self.epoch, self)
        model = self.recipe.model
        model.train()
        steps = self.epoch_length(self.epoch)
        # disable=None: a live bar on a terminal only; logs get one summary line per epoch.
        label = (f"epoch {self.epoch + 1} ({self.cfg.time_budget_s:.0f} s budget)" if self.cfg.time_budget_s > 0
                 else f"epoch {self.epoch + 1}/{self.cfg.epochs}")
        bar = tqdm(total=steps, initial=self.step_in_epoch, desc=label,
                   disable=None if (self.progress and self.is_main) else True, dynamic_ncols=True, leave=False)
        seen, start, trained_before = 0, time.perf_counter(), self.trained_s
        for batch in self.batches_for(self.epoch).epoch(self.epoch, start=self.step_in_epoch):
            if self._stop_signal is not None:
                break
            self.apply_schedule(self._schedule_epoch(steps))
            batch = self.to_device(batch, self.device)
            terms = self.train_step(batch)
            self.step_in_epoch += 1
            self.global_step += 1
            seen += _batch_size(batch)
            rate = seen / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()} | {"img/s": f"{rate:.0f}"})
            bar.update()
            record = {"epoch": self.epoch, "step": self.step_in_epoch, "global_step": self.global_step,
                      "lr": self.optimizer.param_groups[0]["lr"], "img_per_s": rate, **terms}
            if self.optimizers is not None:
                record.update({f"lr_{name}": o.param_groups[0]["lr"] for name, o in self.optimizers.items()})
            logged = self.global_step % self.cfg.log_every == 0 or self.step_in_epoch == steps
            if logged:
                self.log(record)
            self.trained_s = trained_before + time.perf_counter() - start
            if on_step:  # a hook's own time (e.g. measuring a learning curve) is not training time
                hook_start = time.perf_counter()
                on_step(self, record)
                start += time.perf_counter() - hook_start
            if self.cfg.time_budget_s > 0 and self.trained_s >= self.cfg.time_budget_s:
                if not logged:
                    self.log(record)
                break
        bar.close()
        if self.progress and self.is_main and bar.disable and seen:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in terms.items())
            log.info("%s: %d steps, %.0f img/s, %s", label, self.step_in_epoch, rate, shown)  # no bar: a line
        if self._stop_signal is not None:
            self.save()
            name = signal.Signals(self._stop_signal).name
            raise TrainingInterrupted(
                f"stopped by {name} at epoch {self.epoch + 1}, step {self.step_in_epoch}; "
                f"checkpoint saved to {self.checkpoint_path} (run the same command to resume)")

    def apply_schedule(self, position: float) -> None:
        """Every optimiser's LR for schedule position ``position`` (epochs, fractional), and the recipe's
        progress (``set_progress``, the fraction of ``cfg.epochs`` done)."""
        for optimizer in self.optimizers.values() if self.optimizers is not None else (self.optimizer,):
            set_lr(optimizer, self._lr_factor(position))
        self.recipe.set_progress(min(position / max(self.cfg.epochs, 1e-9), 1.0))

    def train_step(self, batch) -> dict[str, float]:
        """One optimiser step (or one round of a several-optimiser recipe's updates) on a batch already on
        the device; returns the logged terms."""
        if self.cfg.channels_last:
            batch = _channels_last(batch)
        return self._step(batch) if self.optimizers is None else self._updates(batch)

    def _step(self, batch) -> dict[str, float]:
        amp = self.cfg.amp != "off" and self.device.type == "cuda"
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype, enabled=amp):
            terms = self.recipe.training_step(self.train_model, batch)
        values = self._checked(terms)
        total = terms["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.recipe.model.parameters(), self.cfg.grad_clip)
        if self.after_backward is not None:
            self.after_backward(self)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return values

    def _checked(self, terms: dict) -> dict[str, float]:
        """The terms as floats; an error when 'loss' is missing or any term is not finite."""
        if "loss" not in terms:
            raise ValueError(f"{self.recipe.name}.training_step must return a dict with 'loss'; "
                             f"got keys {sorted(terms)}")
        values = {name: float(value.detach()) for name, value in terms.items()}
        # Name a specific term when one is the culprit, not just the total.
        bad = sorted((name for name, v in values.items() if not math.isfinite(v)), key=lambda n: n == "loss")
        if bad:
            kept = (f"the last good checkpoint is kept at {self.checkpoint_path}" if self.checkpoint_path.is_file()
                    else "no checkpoint was written yet (it diverged before the first epoch ended)")
            raise TrainingDiverged(
                f"loss term {bad[0]!r} is {values[bad[0]]} at epoch {self.epoch + 1}, step "
                f"{self.step_in_epoch + 1}; training stopped, {kept}")
        return values

    def _updates(self, batch) -> dict[str, float]:
        """One iteration of a several-optimiser recipe: each yielded update is computed, back-propagated and
        stepped in turn. Logged: every update's terms, its loss as ``loss_<names>``, and their sum as ``loss``."""
        amp = self.cfg.amp != "off" and self.device.type == "cuda"
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        updates = iter(self.recipe.training_step(self.train_model, batch))
        values: dict[str, float] = {}
        total = 0.0
        while True:
            with torch.autocast(self.device.type, dtype=dtype, enabled=amp):  # the forward passes only
                update = next(updates, None)
            if update is None:
                break
            names, terms = update
            names = (names,) if isinstance(names, str) else tuple(names)
            unknown = [n for n in names if n not in self.optimizers]
            if unknown or not names:
                raise ValueError(f"{self.recipe.name}.training_step yielded an update for {list(names)}; its "
                                 f"optimisers are {', '.join(self.optimizers)}")
            checked = self._checked(terms)
            optimizers = [self.optimizers[n] for n in names]
            for optimizer in optimizers:  # only these: another update's gradients are its own business
                optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(terms["loss"]).backward()
            if self.cfg.grad_clip > 0:
                for optimizer in optimizers:
                    self.scaler.unscale_(optimizer)
                params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            if self.after_backward is not None:
                self.after_backward(self)
            for optimizer in optimizers:
                self.scaler.step(optimizer)
            loss = checked.pop("loss")
            total += loss
            values[f"loss_{'_'.join(names)}"] = loss
            values.update(checked)
        self.scaler.update()  # once per iteration, after every optimiser's step (torch's multi-optimiser recipe)
        return {"loss": total, **values}

    def _lr_factor(self, epoch: float) -> float:
        c = self.cfg
        return lr_factor(epoch, schedule=c.schedule, epochs=c.epochs, warmup_epochs=c.warmup_epochs,
                         warmup_start=c.warmup_start, milestones=c.milestones, gamma=c.gamma,
                         factors=c.lr_factors, step=self.global_step, step_iters=c.step_iters)

    def log(self, record: dict) -> None:
        """Append to metrics.jsonl; also to TensorBoard when it is installed."""
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            step = record.get("global_step", self.global_step)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step", "global_step"):
                    writer.add_scalar(key, value, step)
            writer.flush()

    def _tensorboard(self):
        if not hasattr(self, "_tb"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra (vireid[tb])
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._tb


def _sampler_batch(batches) -> str:
    size = getattr(getattr(batches, "sampler", None), "batch_size", None)
    return str(size) if size is not None else "?"


def _move(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def _channels_last(batch):
    """Images (4-D float tensors) in the memory format the model was converted to."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_channels_last(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _channels_last(v) for k, v in batch.items()}
    return batch


def _batch_size(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, (list, tuple)):  # a (source, target) pair: count the source batch
        return _batch_size(first)
    return len(first) if hasattr(first, "__len__") else 1
