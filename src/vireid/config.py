"""Plain YAML configs: one optional ``_base_`` file, dotted ``key=value`` overrides.

A config is a nested dict. ``_base_: other.yaml`` (relative to the file)
starts from that file and merges this one over it, so shared settings are
written down once; a section marked ``_replace_: true`` replaces the
inherited section instead of merging into it. Overrides may only set keys that exist, so a typo is an
error that lists the keys that do exist, never a silently ignored value.

Two value rules hold for every key, whether or not a schema describes it:
a key that holds true/false (a YAML boolean) only takes true/false (so
``two_stream=flase`` is an error, not a truthy string), and every number is
finite (``.nan``/``.inf`` are refused by name: NaN passes every ``<``/``>``
bound check).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml


def load_config(path: str | Path, overrides: Iterable[str] = (),
                defaults: dict | Callable[[dict], dict] | None = None) -> dict:
    """The file (with its ``_base_``) merged over ``defaults``, then the overrides applied.

    ``defaults`` may be a function of the file's config (the defaults depend on the method it names)."""
    cfg = _load_with_base(Path(path), seen=())
    if callable(defaults):
        defaults = defaults(cfg)
    if defaults:
        merged = merge(defaults, cfg)
        cfg = {key: merged[key] for key in [*cfg, *merged]}  # the file's keys first, in its order (method: ...)
    for item in overrides:
        apply_override(cfg, item)
    check_finite(cfg)
    return cfg


def check_finite(node: Any, where: str = "") -> None:
    """Every number in the config is finite; a ValueError names the first key that is not."""
    if isinstance(node, dict):
        for key, value in node.items():
            check_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_finite(value, f"{where}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"{where} must be a finite number, got {node}")


# Keys whose true/false are legacy spellings of named values (``train.amp: true`` means fp16; the
# schema maps them), so text may replace a boolean there.
NAMED_AFTER_BOOLEAN = ("train.amp",)


def check_same_kind(key: str, old: Any, new: Any) -> None:
    """A key holding true/false takes only true/false (or null): ``flase`` or ``"no"`` as text is an error."""
    if key in NAMED_AFTER_BOOLEAN:
        return
    if isinstance(old, bool) and new is not None and not isinstance(new, bool):
        raise ValueError(f"{key} must be true or false, got {new!r}")


def _load_with_base(path: Path, seen: tuple) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ValueError(f"config {path} includes itself through _base_")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    data = _numbers_in(data)
    base = data.pop("_base_", None)
    if base is None:
        return _strip_markers(data)
    merged = _load_with_base(path.parent / base, seen + (path.resolve(),))
    return merge(merged, data)


def _numbers_in(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _numbers_in(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers_in(v) for v in node]
    return _number_or_self(node)


REPLACE = "_replace_"


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Recursive merge; ``update`` wins. Returns a new dict.

    A section of ``update`` holding ``_replace_: true`` replaces the base's
    section whole instead of merging into it, so a preset can drop keys it
    inherited (e.g. a method whose ``loss`` section has other terms).
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        check_same_kind(f"{where}{key}", out.get(key), value)
        if isinstance(value, dict) and value.get(REPLACE) is not None:
            flag = value[REPLACE]
            if not isinstance(flag, bool):
                raise ValueError(f"{REPLACE} in section {key!r} must be true or false, got {flag!r}")
            value = {k: v for k, v in value.items() if k != REPLACE}
            if flag:
                out[key] = _strip_markers(value)
                continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = _strip_markers(value)
    return out


def _strip_markers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_markers(v) for k, v in node.items() if k != REPLACE}
    return copy.deepcopy(node)


def apply_override(cfg: dict, item: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) on an existing key."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"bad override {item!r}; expected key=value, e.g. optim.lr=3e-4")
    parts = key.strip().split(".")
    node = cfg
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the top level"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise ValueError(f"unknown config key {key.strip()!r} in override {item!r}; "
                             f"keys under {where}: {known}")
        if depth == len(parts) - 1:
            try:
                value = _number_or_self(yaml.safe_load(raw)) if raw.strip() else None
            except yaml.YAMLError as exc:
                raise ValueError(f"bad value in override {item!r}: {exc}") from None
            check_same_kind(key.strip(), node[part], value)
            node[part] = value
        else:
            node = node[part]


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _number_or_self(value: Any) -> Any:
    """YAML 1.1 reads '1e-3' (no dot) as a string; read it as the number it means."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    return value


def get(cfg: dict, key: str, source: str = "the config") -> Any:
    """``cfg['a']['b']`` for key 'a.b', or a clear error naming the missing key."""
    node: Any = cfg
    for _depth, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"config key {key!r} is missing in {source}")
        node = node[part]
    return node


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
