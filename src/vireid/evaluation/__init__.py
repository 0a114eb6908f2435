"""Evaluation: metrics, named protocols, re-ranking and reports."""

from vireid.evaluation.metrics import RULES, evaluate

__all__ = ["evaluate", "RULES"]
from vireid.evaluation.rerank import rerank  # noqa: E402

__all__ += ["rerank"]
