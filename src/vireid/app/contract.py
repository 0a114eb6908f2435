"""A run's settings are its contract: a resume with other settings is refused, naming every changed key.

Why: re-running ``vireid train`` resumes from the run's checkpoint. With a
changed config the run would silently mix two experiments (a new LR in
``config.yaml`` while the resumed optimiser keeps the old one), or crash
half-way with a size mismatch after ``config.yaml`` was already
overwritten. So before anything is written the new config is compared with
the one the run was started with, and every difference is listed as
``key: old -> new``. The user then either names the keys a resume may change
(``--allow-change train.epochs`` to train longer), or asks for a new run
(``--restart``: the old run's files are moved into ``replaced-<time>/``,
nothing is deleted).
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from vireid.config import dump
from vireid.engine.checkpoint import CHECKPOINT_NAME

# Keys a resume can never change: the checkpoint's weights or optimiser state fix them.
FIXED_KEYS = ("method", "train.lr", "train.optimizer", "train.weight_decay", "train.momentum")
FIXED_SECTIONS = ("model.", "recipe.", "train.optimizers.")
RUN_FILES = (CHECKPOINT_NAME, "best_val.pt", "metrics.jsonl", "config.yaml", "run.json")
ABSENT = "(absent)"


class SettingsChanged(ValueError):
    """A resume whose config differs from the run's own in keys the user did not allow."""


def flatten(cfg: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def changed_settings(old: dict, new: dict, defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every leaf that differs, keys in sorted order.

    A key the old config lacks whose new value is its default (from ``defaults``) is no change: it is a
    setting added to vireid after the run started, and the run used what is now its default.
    """
    a, b = flatten(old), flatten(yaml.safe_load(dump(new)))  # the round trip turns tuples into lists
    known = flatten(yaml.safe_load(dump(defaults or {})))
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, ABSENT) != b.get(k, ABSENT) and not (k not in a and k in known and b.get(k) == known[k])]


def _fixed(key: str) -> bool:
    return key in FIXED_KEYS or key.startswith(FIXED_SECTIONS)


def check_run_settings(out: str | Path, cfg: dict, allow=(), restart: bool = False,
                       defaults: dict | None = None) -> None:
    """Refuse to resume ``out`` with settings other than its own (see the module docstring).

    A directory without a checkpoint has nothing to resume and is not checked.
    ``allow``: keys that may change (``train.epochs``); ``restart``: move the
    old run aside and start afresh instead; ``defaults``: the values of settings
    an older run's config lacks (see :func:`changed_settings`).
    """
    out = Path(out)
    if not (out / CHECKPOINT_NAME).is_file():
        return
    if restart:
        _move_aside(out)
        return
    old_path = out / "config.yaml"
    old = _read_config(old_path)
    allowed = {a.strip() for item in allow for a in str(item).split(",") if a.strip()}
    changes = changed_settings(old, cfg, defaults)
    fixed = sorted(k for k in allowed if _fixed(k) and any(c[0] == k for c in changes))
    if fixed:
        raise SettingsChanged(f"{', '.join(fixed)} cannot change when resuming {out}: the checkpoint's weights or "
                              "optimiser state fix it; pass --restart to start a new run there, or choose another "
                              "--out")
    refused = [c for c in changes if c[0] not in allowed]
    if refused:
        lines = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in refused)
        raise SettingsChanged(f"{out} is a run with other settings ({old_path}); changed: {lines}. Re-run with the "
                              "run's own settings to resume it, --allow-change KEY for keys a resume may change "
                              f"(e.g. --allow-change train.epochs), --restart to start a new run in {out}, or "
                              "another --out")


def _read_config(path: Path) -> dict:
    """The run's config.yaml, or (when it was lost) the config its checkpoint carries."""
    if not path.is_file():
        from vireid.engine.checkpoint import load_checkpoint

        saved = load_checkpoint(path.parent / CHECKPOINT_NAME).get("config")
        if not isinstance(saved, dict):
            raise SettingsChanged(f"{path.parent} holds a checkpoint but no config.yaml and the checkpoint carries "
                                  "no config, so its settings are unknown; pass --restart to start a new run "
                                  "there, or choose another --out")
        return yaml.safe_load(dump(saved))
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsChanged(f"cannot read the run's settings {path}: {exc}") from None
    if not isinstance(old, dict):
        raise SettingsChanged(f"{path} does not hold a config mapping; pass --restart or choose another --out")
    return old


def _show(value) -> str:
    return value if value == ABSENT else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...") \
        .strip()


def _move_aside(out: Path) -> Path:
    """Move the old run's files into ``out/replaced-<UTC time>/`` (kept, never deleted)."""
    target = out / time.strftime("replaced-%Y%m%d-%H%M%S", time.gmtime())
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    target.mkdir()
    for name in RUN_FILES:
        if (out / name).exists():
            (out / name).rename(target / name)
    return target
