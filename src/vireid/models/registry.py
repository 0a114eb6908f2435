"""Name -> model factory, so configs can say ``method: idkl``."""

from ..registry import Registry

MODELS = Registry("model")
