"""Results over the trials of a protocol: mean ± std, per-trial values, JSON and a table.

The JSON layout is read by outside tools, so it is fixed:
``{"protocol", "rerank", "mean": {rank1, rank5, rank10, rank20, mAP, mINP},
"std": {same}, "trials": [{same}, ...]}`` with fractions in [0, 1]; a result computed
with a transductive step (:mod:`vireid.evaluation.transductive`) also has
``"transductive": true`` (the key is absent otherwise, so the layout above is unchanged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vireid.utils.io import write_text_atomic

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def trial_summary(result: dict) -> dict:
    """Rank-1/5/10/20, mAP and mINP of one ``evaluate`` result.

    When the CMC is shorter than k (fewer gallery identities than k under
    the SYSU/LLCM identity-level CMC), every identity has been listed by
    then, so rank-k is the curve's last value.
    """
    cmc = np.asarray(result["cmc"], dtype=np.float64)
    out = {f"rank{k}": float(cmc[min(k, len(cmc)) - 1]) for k in (1, 5, 10, 20)}
    out["mAP"] = float(result["mAP"])
    out["mINP"] = float(result["mINP"])
    return out


def result_tags(rerank: bool, transductive: bool = False) -> str:
    """What every label of a result carries after its protocol name: `` [transductive]`` and/or `` [re-ranked]``.

    The transductive step comes first because it is applied first (to the features, before distances).
    """
    return (" [transductive]" if transductive else "") + (" [re-ranked]" if rerank else "")


@dataclass
class ProtocolResult:
    protocol: str
    rerank: bool
    trials: list[dict] = field(default_factory=list)
    tags: tuple[str, ...] = ()  # what the reader must know, on every line (e.g. "spot_nopose: no keypoints")
    transductive: bool = False

    def add(self, evaluate_result: dict) -> None:
        self.trials.append(trial_summary(evaluate_result))

    @property
    def mean(self) -> dict:
        return {k: float(np.mean([t[k] for t in self.trials])) for k in METRICS}

    @property
    def std(self) -> dict:
        """Population standard deviation over trials (0 for a single trial)."""
        return {k: float(np.std([t[k] for t in self.trials])) for k in METRICS}

    def to_dict(self) -> dict:
        out = {"protocol": self.protocol, "rerank": self.rerank, "mean": self.mean,
               "std": self.std, "trials": list(self.trials)}
        if self.tags:
            out["tags"] = list(self.tags)
        if self.transductive:
            out["transductive"] = True
        return out

    def write_json(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @property
    def suffix(self) -> str:
        """Everything a label carries after the protocol name: `` [transductive] [re-ranked] [<tag>]...``."""
        return result_tags(self.rerank, self.transductive) + "".join(f" [{t}]" for t in self.tags)

    @property
    def label(self) -> str:
        return self.protocol + self.suffix

    def format_table(self) -> str:
        """A plain-text table: the protocol name on every line, in percent."""
        lines = [f"{'protocol':<36s} " + " ".join(f"{k:>14s}" for k in METRICS)]
        mean, std = self.mean, self.std
        cells = [f"{100 * mean[k]:6.2f} ± {100 * std[k]:5.2f}" for k in METRICS]
        lines.append(f"{self.label + ' mean':<36s} " + " ".join(f"{c:>14s}" for c in cells))
        for i, trial in enumerate(self.trials):
            cells = [f"{100 * trial[k]:6.2f}" for k in METRICS]
            lines.append(f"{self.label + f' trial {i}':<36s} " + " ".join(f"{c:>14s}" for c in cells))
        return "\n".join(lines)

    def format_markdown(self) -> str:
        head = "| protocol | " + " | ".join(METRICS) + " |"
        rule = "|" + " --- |" * (len(METRICS) + 1)
        mean, std = self.mean, self.std
        row = f"| {self.label} (mean ± std, {len(self.trials)} trials) | " + " | ".join(
            f"{100 * mean[k]:.2f} ± {100 * std[k]:.2f}" for k in METRICS) + " |"
        return "\n".join([head, rule, row])
