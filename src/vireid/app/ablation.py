"""Ablations: train several variants under one budget on a synthetic dataset and tabulate the results.

A plan is a YAML file::

    synthetic: {layout: sysu, ids: 100, seed: 0, size: [64, 32], images: 3}   # vireid synth arguments
    # top-level keys starting with "_" are ignored (a place for YAML anchors shared by rows)
    protocol: sysu/all/single/seeded      # every row is evaluated with it (mean +- std over its trials)
    seeds: [0, 1, 2]                       # training seeds: each row is trained once per seed
    device: cpu                            # or cuda / auto (default cpu)
    budget:                                # merged into every row's config (same data, budget)
      data: {height: 64, width: 32, p: 4, k: 4, workers: 0, cache: false}
      model: {depth: 18}
      train: {epochs: 4, milestones: [3]}  # or time_budget_s: 60 (same training seconds for every row)
    rows:
      - name: AGW
        config: agw_sysu                   # a shipped config name or a path
        set: {model: {non_local: [0, 2, 2, 0]}}   # merged over budget (row-specific changes)
        also_rerank: false                 # true: a second, labelled line evaluated with re-ranking

Each (row, seed) run's resolved config is written to ``OUT/<row>/seed<S>/config.yaml``
and trained there with :func:`vireid.app.runs.train` (one torch thread per
run, ``jobs`` runs at a time), evaluated with
:func:`vireid.app.runs.evaluate`, and the table written to
``OUT/ablation.md`` (and ``OUT/ablation.json``). A finished run is not
trained again (its checkpoint is resumed, i.e. kept; its training time is
then read from the checkpoint). A run that fails (e.g. diverges) is reported
as failed; the other runs still go on.

Why seeds: with one training run per row, the gallery-trial std is the only
error bar, and it hides the training-seed spread, which on small data is as
large as the differences between methods. Each row is therefore reported as
the mean ± std *over seeds* of the per-run metric (each run's metric being
its mean over gallery trials), with the mean within-run gallery-trial std
beside it, and the table ends with the pairs of rows whose difference
exceeds two standard errors (SE of a difference of means: sqrt(s1²/n1 +
s2²/n2) with the seed stds).
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

from vireid.config import merge
from vireid.utils.io import write_text_atomic

PLAN_KEYS = ("synthetic", "protocol", "budget", "rows", "trials", "seeds", "device")
METRICS = ("rank1", "mAP", "mINP")
ROW_KEYS = ("name", "config", "set", "also_rerank")


def load_plan(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ablation plan not found: {path}")
    plan = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(k for k in set(plan) - set(PLAN_KEYS) if not str(k).startswith("_"))  # _x: YAML anchors
    if unknown:
        raise ValueError(f"{path}: unknown plan key(s) {', '.join(unknown)}; known: {', '.join(PLAN_KEYS)}")
    if not isinstance(plan.get("rows"), list) or not plan["rows"]:
        raise ValueError(f"{path}: 'rows' must be a non-empty list of {{name, config, set}} entries")
    if "protocol" not in plan:
        raise ValueError(f"{path}: 'protocol' is missing (e.g. sysu/all/single/seeded)")
    names = []
    for i, row in enumerate(plan["rows"]):
        if not isinstance(row, dict) or "name" not in row or "config" not in row:
            raise ValueError(f"{path}: row {i} needs 'name' and 'config', got {row!r}")
        extra = sorted(set(row) - set(ROW_KEYS))
        if extra:
            raise ValueError(f"{path}: row {row['name']!r} has unknown key(s) {', '.join(extra)}; "
                             f"known: {', '.join(ROW_KEYS)}")
        names.append(row["name"])
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: duplicate row names {dupes}")
    seeds = plan.setdefault("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of distinct ints, got {seeds!r}")
    return plan


def select_rows(plan: dict, wanted: list[str] | None) -> list[dict]:
    if not wanted:
        return list(plan["rows"])
    by_name = {row["name"]: row for row in plan["rows"]}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise ValueError(f"unknown row(s) {', '.join(missing)}; the plan has: {', '.join(by_name)}")
    return [by_name[w] for w in wanted]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "row"


def row_config(row: dict, budget: dict, seed: int | None = None) -> dict:
    """The row's config file contents: its base config, then the budget, then the row's own changes
    (then ``train.seed`` when given)."""
    from vireid.app.runs import resolve_config_path

    base = resolve_config_path(str(row["config"])).resolve()
    cfg = merge(budget or {}, row.get("set") or {})
    if seed is not None:
        cfg = merge(cfg, {"train": {"seed": seed}})
    return {"_base_": str(base), **cfg}


def _run_row(task: dict) -> list[dict]:
    """Train and evaluate one row (in a worker process, on one torch thread); with ``also_rerank``
    a second, labelled result with k-reciprocal re-ranking."""
    import torch

    from vireid.app.runs import evaluate_run, train

    torch.set_num_threads(1)
    try:
        return _train_and_evaluate(task, train, evaluate_run)
    except Exception as exc:  # one failed row (e.g. a diverged run) must not lose the others' results
        return [{"name": task["name"], "config": task["base"], "seed": task.get("seed"),
                 "error": f"{type(exc).__name__}: {exc}"}]


def _train_and_evaluate(task: dict, train, evaluate) -> list[dict]:
    out = Path(task["out"])
    out.mkdir(parents=True, exist_ok=True)
    config = out / "ablation_config.yaml"
    write_text_atomic(config, yaml.safe_dump(task["config"], sort_keys=False))
    device = task.get("device", "cpu")
    train(config, task["data_root"], out, device=device, progress=False)
    from vireid.engine.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint.pt")  # a finished run is resumed (kept): its time is in here
    train_s, steps = float(state.get("trained_s") or 0.0), state.get("global_step")
    rows = []
    for rerank in (False, True) if task.get("also_rerank") else (False,):
        begin = time.perf_counter()
        result = evaluate(out, task["data_root"], task["protocol"], device=device, trials=task["trials"],
                          rerank=rerank)
        rows.append({"name": task["name"] + result.suffix, "config": task["base"],
                     "seed": task.get("seed"), "mean": result.mean, "std": result.std,
                     "trials": len(result.trials), "train_s": train_s, "steps": steps,
                     "eval_s": time.perf_counter() - begin})
    return rows


def run_ablation(plan_path: str | Path, out: str | Path, data_root: str | Path | None = None,
                 rows: list[str] | None = None, jobs: int = 2, command: str = "",
                 device: str | None = None) -> list[dict]:
    """Train and evaluate the plan's rows on ``device`` (cpu, cuda or auto; default: the plan's ``device``, else
    the CPU); returns one result dict per row and writes the table."""
    plan = load_plan(plan_path)
    selected = select_rows(plan, rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data_root is None:
        data_root = out / "data"
        if not (data_root / ".vireid_synthetic_done").exists():
            make_data(plan, data_root)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    tasks = [{"name": row["name"], "base": str(row["config"]), "seed": seed,
              "config": row_config(row, plan.get("budget"), seed),
              "out": str(out / slug(row["name"]) / f"seed{seed}"), "data_root": str(data_root),
              "protocol": plan["protocol"], "trials": plan.get("trials"), "device": device or plan.get("device", "cpu"),
              "also_rerank": bool(row.get("also_rerank", False))}
             for row in selected for seed in plan["seeds"]]
    start = time.perf_counter()
    if jobs == 1:
        per_run = [_run_row(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            per_run = list(pool.map(_run_row, tasks))
    runs = [r for rows_ in per_run for r in rows_]
    wall = time.perf_counter() - start
    results = aggregate(runs)
    table = format_table(results, plan, command, wall, jobs)
    write_text_atomic(out / "ablation.md", table)
    write_text_atomic(out / "ablation.json", json.dumps({"plan": plan, "results": results, "runs": runs,
                                                         "wall_s": wall}, indent=2) + "\n")
    print(table)
    return results


def aggregate(runs: list[dict]) -> list[dict]:
    """One entry per row name (first-seen order): mean and sample std over its seeds' run means, the mean
    gallery-trial std, mean training time; failed seeds are listed and left out of the statistics."""
    import numpy as np

    names = list(dict.fromkeys(r["name"] for r in runs))
    out = []
    for name in names:
        mine = [r for r in runs if r["name"] == name]
        ok = [r for r in mine if "error" not in r]
        entry = {"name": name, "config": mine[0]["config"], "seeds": [r.get("seed") for r in ok],
                 "failed": [{"seed": r.get("seed"), "error": r["error"]} for r in mine if "error" in r]}
        if ok:
            values = {k: np.array([r["mean"][k] for r in ok]) for k in METRICS}
            entry.update({
                "n": len(ok),
                "mean": {k: float(v.mean()) for k, v in values.items()},
                "seed_std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
                "trial_std": {k: float(np.mean([r["std"][k] for r in ok])) for k in METRICS},
                "per_seed": {k: [float(x) for x in v] for k, v in values.items()},
                "trials": ok[0]["trials"], "train_s": float(np.mean([r["train_s"] for r in ok])),
                "eval_s": float(np.mean([r["eval_s"] for r in ok]))})
        out.append(entry)
    return out


def separated_pairs(results: list[dict], metric: str = "rank1", z: float = 2.0) -> list[tuple[str, str, float, float]]:
    """(better, worse, difference, its standard error) for every pair of rows whose means differ by more
    than ``z`` standard errors, SE = sqrt(s1²/n1 + s2²/n2) from the seed stds (rows with >= 2 seeds)."""
    rows = [r for r in results if r.get("n", 0) >= 2]
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            diff = a["mean"][metric] - b["mean"][metric]
            se = (a["seed_std"][metric] ** 2 / a["n"] + b["seed_std"][metric] ** 2 / b["n"]) ** 0.5
            if abs(diff) > z * se:
                better, worse = (a, b) if diff > 0 else (b, a)
                pairs.append((better["name"], worse["name"], abs(diff), se))
    return sorted(pairs, key=lambda p: -p[2] / max(p[3], 1e-12))


def make_data(plan: dict, root: Path) -> None:
    from vireid.synth.generator import generate

    spec = dict(plan.get("synthetic") or {})
    if "layout" not in spec or "ids" not in spec:
        raise ValueError("the plan's 'synthetic' section needs at least layout and ids (or pass a data root)")
    size = tuple(spec.pop("size", (128, 64)))
    generate(root, spec.pop("layout"), spec.pop("ids"), size=size, overwrite=True, workers=1, **spec)
    (root / ".vireid_synthetic_done").write_text("ok\n")


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def format_table(results: list[dict], plan: dict, command: str = "", wall: float | None = None,
                 jobs: int = 1) -> str:
    """The markdown table of :func:`aggregate`'s rows, then the pairs separated by > 2 standard errors."""
    trials = next((r["trials"] for r in results if "mean" in r), 0)
    seeds = plan.get("seeds", [0])
    lines = [f"Protocol `{plan['protocol']}`. Each row trained with seeds {seeds}; a cell is the mean ± std over "
             f"seeds of the run's metric (each run's metric = its mean over {trials} gallery trials), in %; "
             f"`trial std` is the mean within-run gallery-trial std of R1.",
             "",
             "| row | config | seeds | R1 | mAP | mINP | R1 trial std | train s | eval s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        failed = "; ".join(f"seed {f['seed']} failed: {f['error'][:120]}" for f in r.get("failed", []))
        if "mean" not in r:
            lines.append(f"| {r['name']} | {r['config']} | 0 | {failed} | | | | | |")
            continue
        m, s = r["mean"], r["seed_std"]
        note = f" ({failed})" if failed else ""
        lines.append(f"| {r['name']} | {r['config']} | {r['n']}{note} | {_pm(m['rank1'], s['rank1'])} "
                     f"| {_pm(m['mAP'], s['mAP'])} | {_pm(m['mINP'], s['mINP'])} | {100 * r['trial_std']['rank1']:.1f} "
                     f"| {r['train_s']:.0f} | {r['eval_s']:.0f} |")
    pairs = separated_pairs(results)
    lines += ["", "Rows whose R1 differs by more than two standard errors (SE from the seed stds):"]
    if pairs:
        lines += [f"- {a} > {b}: {100 * d:.1f} points (SE {100 * se:.1f})" for a, b, d, se in pairs]
    else:
        lines.append("- none: at this budget the rows do not separate.")
    if wall is not None:
        lines += ["", f"Total wall time {wall / 60:.1f} min with {jobs} runs at a time, one torch thread each "
                      f"(cpu count {os.cpu_count()})."]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
