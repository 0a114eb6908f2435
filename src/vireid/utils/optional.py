"""Lazy imports of optional dependencies with an actionable message."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or explain which vireid extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the '{module}' package: install it with "
            f"pip install 'vireid[{extra}]'"
        ) from exc
