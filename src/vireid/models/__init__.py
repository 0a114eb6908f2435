"""Backbones, shared layers and method models.

Importing this package registers the models in :data:`MODELS`.
"""

from .registry import MODELS
from . import baseline, idkl, mbfvrd, plain_cnn  # noqa: F401  (registers "baseline", "idkl", "mbfvrd", "plain_cnn")

__all__ = ["MODELS", "baseline", "idkl", "mbfvrd", "plain_cnn"]
