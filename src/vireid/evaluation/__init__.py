"""Evaluation: metrics, named protocols, re-ranking and reports.

``evaluate`` and ``rerank`` are the stable public API; protocols are listed
by ``protocol_names()`` and built with ``get_protocol(name)``.
"""

from vireid.evaluation.evaluator import evaluate_protocol
from vireid.evaluation.metrics import RULES, evaluate
from vireid.evaluation.protocols import Protocol, TestSplit, get_protocol, protocol_names
from vireid.evaluation.report import ProtocolResult, trial_summary
from vireid.evaluation.reranking import rerank

__all__ = [
    "RULES",
    "Protocol",
    "ProtocolResult",
    "TestSplit",
    "evaluate",
    "evaluate_protocol",
    "get_protocol",
    "protocol_names",
    "rerank",
    "trial_summary",
]
