"""RegDB's ten splits: one model per split, each evaluated on its own test lists, one table of mean ± std.

RegDB results are the mean over ten random 206/206 identity splits
(``idx/train_visible_{t}.txt`` ...), each with its own trained model. For a
config and trials (default 1-10), :func:`train_splits` does, per trial t:

* trains ``OUT/trial<t>`` from the config with ``data.trial=t`` (and
  ``eval.protocol=regdb/trial<t>/v2i``) through :func:`vireid.app.runs.train`,
  so an interrupted trial resumes where it stopped;
* evaluates it under ``regdb/trial<t>/v2i`` and ``regdb/trial<t>/i2v`` and
  writes ``OUT/trial<t>/splits_result.json`` (with the resolved config).

A trial whose result file exists is *finished* and is not trained or evaluated
again, provided it was made with the same resolved config (a different config
is an error, not a silent mix). Then ``OUT/splits.md`` and ``OUT/splits.json``
hold, per direction, the mean ± std over the requested trials (population
std, as ``vireid eval`` reports trials) and every trial's values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vireid.evaluation.protocols import REGDB_TRIALS
from vireid.evaluation.report import METRICS, result_tags
from vireid.utils.io import write_text_atomic

log = logging.getLogger(__name__)

DIRECTIONS = ("v2i", "i2v")
RESULT_NAME = "splits_result.json"


def parse_trials(text: str | None) -> list[int]:
    """"1,2,5" -> [1, 2, 5]; None or "" -> all ten. Each must be one of RegDB's trials, listed once."""
    if text is None or str(text).strip() == "":
        return list(REGDB_TRIALS)
    trials = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in REGDB_TRIALS:
            raise ValueError(f"--trials must be a comma-separated list of RegDB trials "
                             f"{REGDB_TRIALS[0]}-{REGDB_TRIALS[-1]} (e.g. 1,2), got {text!r}")
        if int(part) in trials:
            raise ValueError(f"--trials lists trial {part} twice: {text!r}")
        trials.append(int(part))
    return trials


def trial_overrides(overrides, trial: int) -> list[str]:
    """The user's overrides plus this split's data.trial and default protocol (these win)."""
    return [*overrides, f"data.trial={trial}", f"eval.protocol=regdb/trial{trial}/v2i"]


def trial_config(config, overrides, trial: int) -> dict:
    """The resolved config of one split's run; the config must read RegDB."""
    from vireid.app.runs import resolve_config

    cfg = resolve_config(config, trial_overrides(overrides, trial))
    dataset = cfg["data"]["dataset"]
    if dataset != "regdb":
        raise ValueError(f"train-splits trains RegDB's ten splits, but config {config} reads "
                         f"data.dataset={dataset!r}; use a RegDB config (e.g. agw_regdb, msclnet_regdb)")
    return cfg


def _load_finished(path: Path, cfg: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it to evaluate that trial again") from None
    if done.get("config") != cfg:
        raise ValueError(f"{path.parent} was trained with a different config than this command resolves to; "
                         f"use another --out, or delete {path.parent} to train that split again")
    return done


def run_trial(config, data_root, out: Path, trial: int, overrides=(), *, device: str = "auto",
              progress: bool = True) -> dict:
    """Train (or resume) and evaluate one split; returns {"trial", "config", "results": {direction: result}}."""
    from vireid.app.runs import evaluate_run_protocols, train

    cfg = trial_config(config, overrides, trial)
    run = out / f"trial{trial}"
    done = _load_finished(run / RESULT_NAME, cfg)
    if done is not None:
        log.info("trial %d: finished earlier (%s); not trained again", trial, run / RESULT_NAME)
        return done
    log.info("trial %d: training %s", trial, run)
    train(config, data_root, run, trial_overrides(overrides, trial), device=device, progress=progress)
    both = evaluate_run_protocols(run, data_root, [f"regdb/trial{trial}/{d}" for d in DIRECTIONS], device=device)
    results = {d: result.to_dict() for d, result in zip(DIRECTIONS, both)}
    done = {"trial": trial, "config": cfg, "results": results}
    write_text_atomic(run / RESULT_NAME, json.dumps(done, indent=2) + "\n")
    return done


def summarize(finished: list[dict]) -> dict:
    """Per direction: mean and population std over the trials, and each trial's values (fractions in [0, 1])."""
    out = {"trials": [f["trial"] for f in finished], "directions": {}}
    first = finished[0]["results"][DIRECTIONS[0]] if finished else {}
    out["tags"] = result_tags(bool(first.get("rerank")), bool(first.get("transductive")))  # [transductive] ...
    for d in DIRECTIONS:
        per_trial = {f["trial"]: f["results"][d]["mean"] for f in finished}  # one test split per trial
        values = {k: [per_trial[t][k] for t in out["trials"]] for k in METRICS}
        out["directions"][d] = {
            "mean": {k: float(np.mean(v)) for k, v in values.items()},
            "std": {k: float(np.std(v)) for k, v in values.items()},
            "trials": {str(t): per_trial[t] for t in out["trials"]},
        }
    return out


def format_markdown(summary: dict, title: str) -> str:
    trials = summary["trials"]
    lines = [f"# {title}", "",
             f"RegDB, {len(trials)} split(s) ({', '.join(map(str, trials))}): one model per split, each evaluated "
             "on its own test lists; mean ± population std over the splits, in percent.", "",
             "| protocol | " + " | ".join(METRICS) + " |", "|" + " --- |" * (len(METRICS) + 1)]
    for d in DIRECTIONS:
        block = summary["directions"][d]
        lines.append(f"| regdb/{d}{summary.get('tags', '')} (mean ± std) | " + " | ".join(
            f"{100 * block['mean'][k]:.2f} ± {100 * block['std'][k]:.2f}" for k in METRICS) + " |")
        for t in trials:
            lines.append(f"| regdb/trial{t}/{d}{summary.get('tags', '')} | " + " | ".join(
                f"{100 * block['trials'][str(t)][k]:.2f}" for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def train_splits(config, data_root, out, overrides=(), *, trials=None, device: str = "auto",
                 progress: bool = True) -> dict:
    """Train and evaluate the requested RegDB trials (default 1-10) into ``out``; write and return the table.

    Returns the summary (also ``OUT/splits.json``; ``OUT/splits.md`` is the table).
    """
    out = Path(out)
    trials = list(REGDB_TRIALS) if trials is None else trials
    if isinstance(trials, str):
        trials = parse_trials(trials)
    if not trials:
        raise ValueError("no trials to run; give e.g. --trials 1,2 or leave it out for all ten")
    for t in trials:
        trial_config(config, overrides, t)  # every split's config checks out before hours of training
    finished = [run_trial(config, data_root, out, t, overrides, device=device, progress=progress) for t in trials]
    summary = {"config": str(config), **summarize(finished)}
    write_text_atomic(out / "splits.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "splits.md", format_markdown(summary, f"{Path(str(config)).stem}: RegDB splits"))
    return summary
