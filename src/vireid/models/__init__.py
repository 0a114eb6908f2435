"""Backbones, shared layers and method models.

Importing this package registers the models in :data:`MODELS`.
"""

from .registry import MODELS
from . import baseline, idkl, mbfvrd  # noqa: F401  (registers "baseline", "idkl", "mbfvrd")

__all__ = ["MODELS", "baseline", "idkl", "mbfvrd"]
