"""Backbones, shared layers and method models.

Importing this package registers the models in :data:`MODELS`.
"""

from .registry import MODELS
from . import idkl  # noqa: F401  (registers "idkl")

__all__ = ["MODELS", "idkl"]
