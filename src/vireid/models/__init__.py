"""Backbones, shared layers and the methods' networks (``nn.Module``s only).

Every model module registers its network in :data:`MODELS` on import;
``build_model(name, **kwargs)`` imports them all first, so a new
``models/foo.py`` is found without being listed anywhere.
"""

from vireid.models.registry import MODELS
from vireid.registry import import_submodules


def build_model(name: str, **kwargs):
    """The network registered as ``name``, built with ``kwargs``."""
    import_submodules(__name__)
    return MODELS.get(name)(**kwargs)


def model_names() -> list[str]:
    import_submodules(__name__)
    return MODELS.names()


__all__ = ["MODELS", "build_model", "model_names"]
