"""The backbone registry: each family's module registers its names, its factory and its weight defaults.

Why: ``build_trunk`` and the weight policy used to list every family by hand
(an if-ladder and a table of ImageNet defaults). Now a family says, next to
its network::

    @register_backbone("osnet_x1_0", "osnet_x0_75", imagenet={"osnet_x1_0": "osnet_x1_0.imagenet"})
    def build_osnet(name, depth, **kwargs): ...

and a new file in this package is found on import (the package imports all
its modules, as ``vireid.methods`` does), with no list to edit. Parametric
families (``plain_w<width>``, ``vit_d<dim>_l<depth>_h<heads>``) give a
``pattern`` that matches every name they build; the listed names are what
error messages and ``BACKBONES`` show.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackboneEntry:
    """One registered family.

    ``names``: the names it is listed under (a parametric one written as
    ``plain_w<width>``); ``build(name, depth, **kwargs)``: its trunk (or a
    slice); ``pattern``: a regular expression for the parametric names it also
    builds; ``imagenet``: what ``model.pretrained: imagenet`` means, per weights
    key (the backbone name, or ``<name><depth>`` for a family ``sized_by_depth``,
    i.e. ``resnet50``); ``require_weights(model_cfg)``: the family's rule for an
    empty ``model.pretrained`` (None: a random start is fine), returning the
    weights path like :func:`vireid.models.backbones.weights.require_pretrained`.
    """

    names: tuple[str, ...]
    build: Callable
    pattern: re.Pattern | None = None
    imagenet: Mapping[str, str] = field(default_factory=dict)
    sized_by_depth: bool = False
    require_weights: Callable[[dict], str | None] | None = None

    def matches(self, name: str) -> bool:
        return name in self.names or (self.pattern is not None and self.pattern.fullmatch(name) is not None)

    def weights_key(self, name: str, depth: int | None) -> str:
        """The key of :attr:`imagenet` for this backbone name (``resnet50`` for resnet at depth 50)."""
        return f"{name}{50 if depth is None else depth}" if self.sized_by_depth else name


_ENTRIES: list[BackboneEntry] = []


def register_backbone(*names: str, pattern: str | None = None, imagenet: Mapping[str, str] | None = None,
                      sized_by_depth: bool = False, require_weights: Callable[[dict], str | None] | None = None):
    """Decorator: register ``build(name, depth, **kwargs)`` under ``names`` (see :class:`BackboneEntry`)."""
    if not names:
        raise ValueError("register_backbone needs at least one name")

    def add(build: Callable) -> Callable:
        taken = [n for n in names if any(n in e.names for e in _ENTRIES)]
        if taken:
            raise ValueError(f"backbone {', '.join(taken)} is already registered")
        _ENTRIES.append(BackboneEntry(tuple(names), build, re.compile(pattern) if pattern else None,
                                      dict(imagenet or {}), sized_by_depth, require_weights))
        return build

    return add


def unregister_backbone(name: str) -> None:
    """Remove the family listed under ``name`` (for plugins and tests that register something temporary)."""
    _ENTRIES[:] = [e for e in _ENTRIES if name not in e.names]


def _discover() -> None:
    """Import every module of the backbones package (a new file registers itself; nothing lists it)."""
    from vireid.registry import import_submodules

    import_submodules(__package__)


def backbone_names() -> tuple[str, ...]:
    """Every listed name, in registration order."""
    _discover()
    return tuple(n for entry in _ENTRIES for n in entry.names)


def imagenet_defaults() -> dict[str, str]:
    """Weights key -> the weights ``model.pretrained: imagenet`` means, over every family."""
    _discover()
    return {key: weights for entry in _ENTRIES for key, weights in entry.imagenet.items()}


def find_backbone(name) -> BackboneEntry:
    """The family that builds ``name``, or a ValueError listing the registered names."""
    _discover()
    for entry in _ENTRIES:
        if isinstance(name, str) and entry.matches(name):
            return entry
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(backbone_names())}")
