"""Catch non-finite test features where they arise, and name the layer that produced them.

A NaN in a test feature otherwise surfaces much later, as "distmat has NaN
values", with nothing pointing at the cause. The usual cause in eval mode is a
network whose BN running statistics do not match its weights (a few steps of
training at a high learning rate): un-normalised activations grow layer by layer
until a power (GeM's ``x ** p``) or an attention product overflows float32.
:func:`check_finite` re-runs the offending batch with a forward hook on every
module and reports the first module, in execution order, whose output is not
finite, with the largest finite magnitude seen before it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class NonFiniteFeatures(ValueError):
    """Test features with NaN or infinite values (raised instead of a distance error later)."""


def _tensors(output) -> list[torch.Tensor]:
    """The floating-point tensors in a module's output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def first_nonfinite_layer(model: nn.Module, run: Callable[[], object]) -> tuple[str | None, float]:
    """Run ``run()`` with a forward hook on every submodule of ``model``.

    Returns the qualified name (with the class) of the first module whose output holds a NaN or an infinity,
    in the order outputs were produced (an inner module's output comes before its parent's), or None when every
    output was finite; and the largest finite absolute value any module produced before that point.
    """
    found: list[str] = []
    largest = [0.0]

    def hook(name: str, module: nn.Module):
        def record(_module, _inputs, output):
            if found:
                return
            for t in _tensors(output):
                finite = torch.isfinite(t)
                if not bool(finite.all()):
                    found.append(f"{name or '<model>'} ({type(module).__name__})")
                    return
                if t.numel():
                    largest[0] = max(largest[0], float(t.detach().abs().max()))
        return record

    handles = [m.register_forward_hook(hook(name, m)) for name, m in model.named_modules()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return (found[0] if found else None), largest[0]


def check_finite(features: torch.Tensor, model: nn.Module | None, rerun: Callable[[], object] | None,
                 where: str) -> torch.Tensor:
    """``features`` unchanged when every value is finite; otherwise a :class:`NonFiniteFeatures` naming
    ``where`` (the batch or file), how many rows are affected, and, when ``model``/``rerun`` are given, the
    layer where the first non-finite activation appears."""
    bad_rows = ~torch.isfinite(features).reshape(len(features), -1).all(dim=1)
    if not bool(bad_rows.any()):
        return features
    mode = "eval" if model is None or not model.training else "train"
    message = (f"non-finite test features in {mode} mode: {int(bad_rows.sum())} of {len(features)} feature "
               f"row(s) of {where} hold NaN or inf")
    if model is not None and rerun is not None:
        layer, largest = first_nonfinite_layer(model, rerun)
        if layer is not None:
            message += (f"; the first non-finite activation is the output of {layer} (largest finite activation "
                        f"before it: {largest:.3g})")
        else:
            message += "; every layer's output was finite when the batch was run again (not reproducible)"
    message += (". A network whose BN running statistics do not match its weights (very few training steps, a "
                "high learning rate) does this; so does a diverged run.")
    raise NonFiniteFeatures(message)
