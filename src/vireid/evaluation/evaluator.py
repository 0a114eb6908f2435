"""Run a protocol over all its trials: features once, distances, metrics, report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from vireid.data.records import Sample
from vireid.evaluation.metrics import evaluate
from vireid.evaluation.protocols import Protocol, get_protocol
from vireid.evaluation.report import ProtocolResult
from vireid.evaluation.reranking import rerank as rerank_distances
from vireid.evaluation.transductive import Transductive, check_output

# extract(samples) -> (len(samples), dim) float tensor, one row per sample, in order.
Extractor = Callable[[Sequence[Sample]], torch.Tensor]


def cosine_distance(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Negated cosine similarity, what the reference test scripts rank by."""
    q = torch.nn.functional.normalize(q.float(), dim=1)
    g = torch.nn.functional.normalize(g.float(), dim=1)
    return -(q @ g.T)


def euclidean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of L2-normalised features, the input re-ranking expects."""
    a = torch.nn.functional.normalize(a.float(), dim=1)
    b = torch.nn.functional.normalize(b.float(), dim=1)
    return torch.cdist(a, b).clamp_min_(0)


class FeatureCache:
    """Features by image path, so queries and re-drawn galleries are extracted once."""

    def __init__(self, extract: Extractor):
        self.extract = extract
        self._rows: dict[str, torch.Tensor] = {}

    def __call__(self, samples: Sequence[Sample]) -> torch.Tensor:
        missing = list({s.path: s for s in samples if s.path not in self._rows}.values())
        if missing:
            features = self.extract(missing)
            if features.ndim != 2 or len(features) != len(missing):
                raise ValueError(
                    f"the extractor returned shape {tuple(features.shape)} for {len(missing)} "
                    f"images; expected ({len(missing)}, dim)"
                )
            for sample, row in zip(missing, features):
                self._rows[sample.path] = row
        return torch.stack([self._rows[s.path] for s in samples])


def evaluate_protocol(
    protocol: Protocol | str,
    root: str | Path,
    extract: Extractor,
    *,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_rank: int = 20,
    trials: Sequence[int] | None = None,
    transductive: Transductive | None = None,
) -> ProtocolResult:
    """Evaluate ``extract`` under every trial of ``protocol`` on the dataset at ``root``.

    Distances are the negated cosine similarity (as the reference scripts), or
    with ``rerank`` the k-reciprocal re-ranking of Euclidean distances between
    L2-normalised features. Short identity-level CMC rows (small galleries)
    are padded rather than refused: see ``evaluate(pad_short_cmc=...)``.

    ``transductive(features) -> features``, when given, post-processes each
    trial's query + gallery features together before any distance (see
    :mod:`vireid.evaluation.transductive`); the result is labelled ``[transductive]``.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    features = FeatureCache(extract)
    result = ProtocolResult(protocol.name, rerank, transductive=transductive is not None)
    for trial in trials if trials is not None else protocol.trials:
        split = protocol.build(root, trial)
        if not split.query or not split.gallery:
            raise ValueError(
                f"protocol {protocol.name} trial {trial} on {root}: {len(split.query)} queries and "
                f"{len(split.gallery)} gallery images; both must be non-empty"
            )
        both = features(split.query + split.gallery)  # one extraction call per trial
        if transductive is not None:  # the whole trial at once: queries first, then the gallery
            both = check_output(transductive(both), len(both))
        q, g = both[: len(split.query)], both[len(split.query) :]
        if rerank:
            dist = rerank_distances(euclidean_distance(q, g), euclidean_distance(q, q),
                                    euclidean_distance(g, g), k1=k1, k2=k2, lambda_value=lambda_value)
        else:
            dist = cosine_distance(q, g)
        result.add(evaluate(
            dist,
            [s.pid for s in split.query], [s.pid for s in split.gallery],
            [s.camid for s in split.query], [s.camid for s in split.gallery],
            rule=split.rule or protocol.rule, max_rank=max_rank, pad_short_cmc=True,
        ))
    return result
