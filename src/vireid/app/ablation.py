"""Ablations: train several variants under one budget on a synthetic dataset and tabulate the results.

A plan is a YAML file::

    synthetic: {layout: sysu, ids: 100, seed: 0, size: [64, 32], images: 3}   # vireid synth arguments
    # top-level keys starting with "_" are ignored (a place for YAML anchors shared by rows)
    protocol: sysu/all/single/seeded      # every row is evaluated with it (mean +- std over its trials)
    budget:                                # merged into every row's config (same data, seed, epochs)
      data: {height: 64, width: 32, p: 4, k: 4, workers: 0, cache: false}
      model: {depth: 18}
      train: {epochs: 4, milestones: [3], seed: 0}
    rows:
      - name: AGW
        config: agw_sysu                   # a shipped config name or a path
        set: {model: {non_local: [0, 2, 2, 0]}}   # merged over budget (row-specific changes)
        also_rerank: false                 # true: a second, labelled line evaluated with re-ranking

Each row's resolved config is written to ``OUT/<row>/config.yaml`` and trained
there with :func:`vireid.app.runs.train` (one torch thread per row, ``jobs``
rows at a time; on ``device``, the CPU by default), evaluated with
:func:`vireid.app.runs.evaluate_run` on the same device, and the
table written to ``OUT/ablation.md`` (and ``OUT/ablation.json``). A finished
row is not trained again (its checkpoint is resumed, i.e. kept; its training
time is then the time between its run.json and checkpoint files). A row that
fails (e.g. diverges) is reported as failed; the other rows still run.
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

PLAN_KEYS = ("synthetic", "protocol", "budget", "rows", "trials")
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


def row_config(row: dict, budget: dict) -> dict:
    """The row's config file contents: its base config, then the budget, then the row's own changes."""
    from vireid.app.runs import resolve_config_path

    base = resolve_config_path(str(row["config"])).resolve()
    return {"_base_": str(base), **merge(budget or {}, row.get("set") or {})}


def _run_row(task: dict) -> list[dict]:
    """Train and evaluate one row (in a worker process, on one torch thread); with ``also_rerank``
    a second, labelled result with k-reciprocal re-ranking."""
    import torch

    from vireid.app.runs import evaluate_run, train

    torch.set_num_threads(1)
    try:
        return _train_and_evaluate(task, train, evaluate_run)
    except Exception as exc:  # one failed row (e.g. a diverged run) must not lose the others' results
        return [{"name": task["name"], "config": task["base"], "error": f"{type(exc).__name__}: {exc}"}]


def _train_and_evaluate(task: dict, train, evaluate) -> list[dict]:
    out = Path(task["out"])
    out.mkdir(parents=True, exist_ok=True)
    config = out / "ablation_config.yaml"
    write_text_atomic(config, yaml.safe_dump(task["config"], sort_keys=False))
    ckpt, started = out / "checkpoint.pt", out / "run.json"
    # a finished row is resumed (no training); its training time is then read off the run's files
    earlier = ckpt.stat().st_mtime - started.stat().st_mtime if ckpt.exists() and started.exists() else None
    start = time.perf_counter()
    device = task.get("device", "cpu")
    train(config, task["data_root"], out, device=device, progress=False)
    trained = time.perf_counter()
    train_s = trained - start if earlier is None else earlier
    rows = []
    for rerank in (False, True) if task.get("also_rerank") else (False,):
        begin = time.perf_counter()
        result = evaluate(out, task["data_root"], task["protocol"], device=device, trials=task["trials"],
                          rerank=rerank)
        rows.append({"name": task["name"] + (" [re-ranked]" if rerank else ""), "config": task["base"],
                     "mean": result.mean, "std": result.std, "trials": len(result.trials),
                     "train_s": train_s, "eval_s": time.perf_counter() - begin})
    return rows


def run_ablation(plan_path: str | Path, out: str | Path, data_root: str | Path | None = None,
                 rows: list[str] | None = None, jobs: int = 2, command: str = "", device: str = "cpu") -> list[dict]:
    """Train and evaluate the plan's rows on ``device`` (cpu, cuda or auto); returns one result dict per row
    and writes the table."""
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
    tasks = [{"name": row["name"], "base": str(row["config"]), "config": row_config(row, plan.get("budget")),
              "out": str(out / slug(row["name"])), "data_root": str(data_root), "protocol": plan["protocol"],
              "trials": plan.get("trials"), "also_rerank": bool(row.get("also_rerank", False)), "device": device}
             for row in selected]
    start = time.perf_counter()
    if jobs == 1:
        per_row = [_run_row(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            per_row = list(pool.map(_run_row, tasks))
    results = [r for rows_ in per_row for r in rows_]
    wall = time.perf_counter() - start
    table = format_table(results, plan, command, wall, jobs)
    write_text_atomic(out / "ablation.md", table)
    write_text_atomic(out / "ablation.json", json.dumps({"plan": plan, "results": results, "wall_s": wall,
                                                         "device": device}, indent=2) + "\n")
    print(table)
    return results


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
    trials = next((r["trials"] for r in results if "error" not in r), 0)
    lines = [f"Protocol `{plan['protocol']}`, mean ± std over {trials} gallery trials (%), one training run per row.",
             "",
             "| row | config | R1 | mAP | mINP | train s | eval s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['config']} | failed: {r['error'][:200]} | | | | |")
            continue
        m, s = r["mean"], r["std"]
        lines.append(f"| {r['name']} | {r['config']} | {_pm(m['rank1'], s['rank1'])} | {_pm(m['mAP'], s['mAP'])} "
                     f"| {_pm(m['mINP'], s['mINP'])} | {r['train_s']:.0f} | {r['eval_s']:.0f} |")
    if wall is not None:
        lines += ["", f"Total wall time {wall / 60:.1f} min with {jobs} rows at a time, one torch thread each "
                      f"(cpu count {os.cpu_count()})."]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
