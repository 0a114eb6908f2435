"""vireid: visible-infrared person re-identification.

The public API: ``train``, ``adapt``, ``evaluate_run`` and ``load_run`` work on
run directories; ``Extractor`` embeds your own images with a trained run and
``export_run`` writes it as ONNX/TorchScript with a parity check; ``evaluate``
computes the metrics (CMC, mAP, mINP) of a distance matrix; ``rerank`` is
k-reciprocal re-ranking. Heavy modules load on
first use, so ``import vireid`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "train": "vireid.app.runs",
    "adapt": "vireid.app.runs",
    "evaluate_run": "vireid.app.runs",
    "load_run": "vireid.app.runs",
    "evaluate": "vireid.evaluation.metrics",
    "rerank": "vireid.evaluation.reranking",
    "Extractor": "vireid.deploy.extractor",
    "export_run": "vireid.deploy.export",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vireid' has no attribute {name!r}")
