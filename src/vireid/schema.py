"""The config schema: a typed dataclass per section, each default written once, one validation helper.

Every section of a config (``data``, ``train``, ``eval``, and each method's
``model``/``loss``/``recipe``) is a frozen dataclass whose fields are the keys,
whose defaults are *the* defaults (nowhere else), and whose annotations and
``setting(...)`` metadata say what a value may be. :func:`parse_section` turns
a config's dict into that dataclass, and every mistake reads the same way::

    data.height must be an integer >= 8, got 'tall'
    train.amp must be one of off, bf16, fp16, got 'half'
    unknown loss setting(s) wrtt; known: adp, triplet, wrt

``section_defaults(cls)`` gives the defaults as a plain dict (what ``vireid
config show`` fills in and what overrides may set).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from typing import Any, Union

NO_DEFAULT = dataclasses.MISSING


def setting(default: Any = NO_DEFAULT, *, choices=None, low=None, high=None, aliases=None, doc: str = ""):
    """A dataclass field with what validation needs.

    ``choices``: the accepted values, or a function giving them when a value is checked (the names a
    registry holds, e.g. the samplers': its module is imported then, not with this one); ``low``/``high``:
    inclusive bounds for numbers; ``aliases``: legacy spellings mapped to a canonical value (e.g.
    ``{True: "fp16"}`` for ``amp``); ``doc``: one line for error messages.
    """
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    meta = {"choices": choices, "low": low, "high": high, "aliases": dict(aliases or {}), "doc": doc}
    if isinstance(default, (list, dict, set)):
        frozen = tuple(default) if isinstance(default, (list, set)) else default
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_section(cls, values: dict | None, where: str):
    """``cls(**values)`` after checking every key and value; errors name ``where.key``, the value and what fits.

    The one way a config section becomes settings. A section class may define ``checked(self, where)``, which
    checks rules that involve several keys and returns the (possibly completed) settings."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"config section {where!r} must be a mapping of keys to values, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where} setting(s) {', '.join(map(str, unknown))}; "
                         f"known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, field in fields.items():
        if name in values:
            checked[name] = check_value(f"{where}.{name}", values[name], hints[name], field.metadata)
        elif field.default is NO_DEFAULT and field.default_factory is NO_DEFAULT:
            raise ValueError(f"config key '{where}.{name}' is missing")
    section = cls(**checked)
    if hasattr(cls, "checked"):  # rules between keys (e.g. one LR factor per milestone)
        section = section.checked(where)
    return section


def section_defaults(cls) -> dict:
    """Field name -> default (lists for tuples, so the dict dumps as plain YAML); required fields left out."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not NO_DEFAULT:
            value = f.default
        elif f.default_factory is not NO_DEFAULT:
            value = f.default_factory()
        else:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def to_dict(section) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}


def check_value(key: str, value: Any, annotation, meta: typing.Mapping | None = None) -> Any:
    """The value, converted to the annotated type where that is lossless, or a ValueError naming ``key``."""
    meta = meta or {}
    aliases = meta.get("aliases") or {}
    for alias, canonical in aliases.items():
        if value is alias or (type(value) is type(alias) and value == alias):
            value = canonical
            break
    value = _check_type(key, value, annotation, meta)
    choices = meta.get("choices")
    if callable(choices):
        choices = tuple(choices())
    if choices is not None and value not in choices and value is not None:
        shown = ", ".join(str(c) for c in choices)
        raise ValueError(f"{key} must be one of {shown}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, float) and not math.isfinite(value):  # NaN passes every < / > bound
        raise ValueError(f"{key} must be a finite number ({_describe(annotation, meta)}), got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{key} must be {_describe(annotation, meta)}, got {value!r}")
    return value


def _check_type(key: str, value: Any, annotation, meta) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(key, value, option, meta)
            except ValueError as exc:
                errors.append(exc)
        raise ValueError(f"{key} must be {_describe(annotation, meta)}, got {value!r}")
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list) or annotation in (tuple, list):
        if isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
            if not args:
                return tuple(value)
            try:
                return tuple(_check_type(key, v, args[0], {}) for v in value)
            except ValueError:
                pass  # reported below for the whole list
    elif origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
    else:
        raise TypeError(f"schema for {key}: unsupported annotation {annotation!r}")
    raise ValueError(f"{key} must be {_describe(annotation, meta)}, got {value!r}")


def _describe(annotation, meta) -> str:
    """'an integer >= 8', 'a number in [0, 1]', 'true or false', 'a list of integers', 'null or ...'."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        parts = [_describe(a, meta) for a in typing.get_args(annotation) if a is not type(None)]
        prefix = "null or " if type(None) in typing.get_args(annotation) else ""
        return prefix + " or ".join(parts)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    if origin in (tuple, list) or annotation in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = {int: "integers", float: "numbers", str: "strings"}.get(args[0], "values") if args else "values"
        return f"a list of {inner}"
    text = names.get(annotation, str(annotation))
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        text += f" in [{low}, {high}]"
    elif low is not None:
        text += f" >= {low}"
    elif high is not None:
        text += f" <= {high}"
    return text


def _registered(module: str, names: str) -> tuple[str, ...]:
    """The names registered in ``vireid.data.<module>`` (imported here, not when this module is)."""
    return getattr(importlib.import_module(f"vireid.data.{module}"), names)()


# --- the sections every run has ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """``data:`` what is read and how batches are made."""

    dataset: str = setting("sysu", doc="dataset layout: sysu, regdb, llcm, folder, or the visible-only "
                                       "market1501, dukemtmc, msmt17")
    height: int = setting(288, low=8)
    width: int = setting(144, low=8)
    p: int = setting(8, low=1, doc="identities per batch")
    k: int = setting(4, low=1, doc="images per identity per modality")
    augment: str = setting("caj", choices=lambda: _registered("augmentations", "augmentation_names"))
    pad: int = setting(10, low=0)
    random_erasing: float = setting(0.5, low=0, high=1)
    workers: int = setting(2, low=0)
    cache: bool = setting(True)
    trial: int | None = setting(None, low=1, doc="RegDB split 1-10")
    val_ids: int = setting(0, low=0, doc="training identities held out for validation")
    sampler: str = setting("balanced", choices=lambda: _registered("samplers", "sampler_names"),
                           doc="whose epoch definition and draws: vireid's balanced P x (K+K), or a reference's "
                               "(pk: the single-modality P x K of reid-strong-baseline)")
    resize: str = setting("lanczos", choices=("lanczos", "bilinear"), doc="IDKL's code resizes bilinearly")
    caj_view: str = setting("exchange", choices=("exchange", "raw"),
                            doc="CAJ's second visible view: the first view channel-exchanged, or drawn from the "
                                "raw image")
    idkl_epoch: str = setting("pass", choices=("pass", "ignite04"), doc="IDKL's epoch under its pinned ignite version")
    keypoints: str | None = setting(None, doc="keypoint file (docs/keypoints.md), relative to the data root; "
                                              "batches then carry 17 heat-maps per image (SPOT)")
    heatmap_stride: int = setting(4, low=1, doc="image pixels per heat-map cell")
    heatmap_sigma: float = setting(1.0, low=0.01, doc="heat-map Gaussian width, in cells")
    depth_rule: str = setting("minmax", choices=("minmax", "fixed"),
                              doc="how 16/32-bit greyscale (thermal cameras) becomes 8-bit: per-image min-max, "
                                  "or fixed by depth_bits (vireid.data.image_file)")
    depth_bits: int = setting(16, low=1, high=32, doc="with depth_rule fixed: the sensor's bit depth")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """``eval:`` how a run is evaluated by default."""

    protocol: str | None = setting(None)
    rerank: bool = setting(False)
    transductive: bool = setting(False, doc="the method's transductive step on each trial's query+gallery "
                                             "features together (e.g. NFormer); labelled [transductive]")
    flip: bool = setting(False)
    val_every: int = setting(1, low=1)


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("multistep", "cosine", "constant", "agw_step_warmup", "vsd_warmup_multistep", "iter_step")


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """``train.optimizers.<name>``: one named optimiser's settings; a value left out (null) is ``train``'s."""

    optimizer: str | None = setting(None, choices=OPTIMIZERS)
    lr: float | None = setting(None, low=0)
    weight_decay: float | None = setting(None, low=0)
    momentum: float | None = setting(None, low=0)
    betas: tuple[float, ...] | None = setting(None, doc="Adam's (beta1, beta2); null: torch's (0.9, 0.999)")

    def checked(self, where: str) -> OptimizerSettings:
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"{where}.betas must be two numbers in [0, 1), got {list(self.betas)}")
        return self

    @classmethod
    def parse(cls, name: str, values) -> OptimizerSettings:
        """``train.optimizers.<name>`` as settings (already parsed settings are returned as they are)."""
        return values if isinstance(values, cls) else parse_section(cls, values, f"train.optimizers.{name}")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """``train:`` the loop's settings."""

    epochs: int = setting(low=1)
    optimizer: str = setting("adam", choices=OPTIMIZERS)
    lr: float = setting(3.5e-4, low=0)
    weight_decay: float = setting(5e-4, low=0)
    momentum: float = setting(0.9, low=0)
    schedule: str = setting("multistep", choices=SCHEDULES)
    milestones: tuple[int, ...] = setting(())
    gamma: float = setting(0.1, low=0)
    lr_factors: tuple[float, ...] = setting((), doc="LR factor from each milestone on (replaces gamma)")
    warmup_epochs: float = setting(0.0, low=0)
    warmup_start: float = setting(0.1, low=0)
    amp: str = setting("off", choices=("off", "bf16", "fp16"), aliases={False: "off", None: "off", True: "fp16"},
                       doc="fp16 is CUDA only")
    channels_last: bool = setting(False)
    compile: bool = setting(False)
    grad_clip: float = setting(0.0, low=0)
    log_every: int = setting(10, low=1)
    seed: int = setting(0)
    deterministic: bool = setting(False)
    time_budget_s: float = setting(0.0, low=0, doc="> 0: train this many seconds; the schedule spans the budget")
    step_iters: int = setting(0, low=0, doc="schedule iter_step: x gamma every step_iters iterations")
    optimizers: dict = setting({}, doc="name -> {optimizer, lr, weight_decay, momentum, betas} of a recipe's "
                                       "named optimisers (what is left out is train's)")

    def checked(self, where: str) -> TrainSettings:
        if self.lr_factors and len(self.lr_factors) != len(self.milestones):
            raise ValueError(f"{where}.lr_factors must give one factor per milestone ({len(self.milestones)} "
                             f"milestones: {list(self.milestones)}), got {list(self.lr_factors)}")
        if self.schedule == "iter_step" and self.step_iters < 1:
            raise ValueError(f"{where}.schedule iter_step needs {where}.step_iters >= 1 (iterations between LR "
                             "steps)")
        return dataclasses.replace(self, optimizers={name: OptimizerSettings.parse(name, v)
                                                     for name, v in self.optimizers.items()})
