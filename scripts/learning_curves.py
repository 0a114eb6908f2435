"""Rank-1 against training wall time for a grid of configs (docs/learning.md).

Each variant is trained for ``--budget`` seconds of training time (``train.time_budget_s``, so the LR
schedule spans the budget) on one torch thread, one variant at a time; every ``--every`` seconds of
training time the model is evaluated on the test split (the hook's time is not counted as training). The
curve is for analysis only: nothing is selected by it. Results go to one JSON file per grid.

    taskset -c 0 python scripts/learning_curves.py --grid benchmarks/learning_grid.yaml \\
        --data /tmp/tune_s11_i200 --out runs/learning/tune --budget 120 --every 30

A grid YAML: ``variants: [{name, config, set: [key=value, ...]}]`` (config: a shipped name or a path).
``--only NAME,NAME`` runs some variants; finished variants found in the output JSON are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import yaml


def evaluate_now(recipe, data_root, size, trials, protocol):
    from vireid.evaluation.evaluator import evaluate_protocol
    from vireid.evaluation.features import image_extractor

    was_training = recipe.model.training
    recipe.model.eval()
    try:
        extract = image_extractor(recipe.embed, size, "cpu", workers=0)
        result = evaluate_protocol(protocol, data_root, extract, trials=trials)
    finally:
        recipe.model.train(was_training)
    return result.mean


def run_variant(variant: dict, data_root: str, out: Path, budget: float, every: float, trials, protocol: str):
    import torch

    from vireid.app.runs import data_settings, resolve_config_path, run_defaults, train
    from vireid.config import load_config

    overrides = [*variant.get("set", []), f"train.time_budget_s={budget}", "data.workers=0",
                 "train.log_every=1000000"]
    cfg = load_config(resolve_config_path(variant["config"]), overrides, defaults=run_defaults())
    data = data_settings(cfg)
    size = (data.height, data.width)
    points, next_at = [], [every]
    run_dir = out / variant["name"]
    if run_dir.exists():
        shutil.rmtree(run_dir)

    def hook(trainer, record):
        if trainer.trained_s >= next_at[0] or trainer.trained_s >= budget:
            while next_at[0] <= trainer.trained_s:
                next_at[0] += every
            m = evaluate_now(trainer.recipe, data_root, size, trials, protocol)
            points.append({"train_s": trainer.trained_s, "steps": trainer.global_step, "rank1": m["rank1"],
                           "mAP": m["mAP"], "loss": record.get("loss")})
            print(f"  {variant['name']}: {trainer.trained_s:6.1f} s, step {trainer.global_step}, "
                  f"rank-1 {100 * m['rank1']:.1f}%, mAP {100 * m['mAP']:.1f}%", flush=True)

    torch.manual_seed(0)
    start = time.perf_counter()
    train(variant["config"], data_root, run_dir, overrides, device="cpu", progress=False, on_step=hook)
    wall = time.perf_counter() - start
    params = None
    from vireid.app.runs import load_run

    recipe, _ = load_run(run_dir)
    params = sum(p.numel() for p in recipe.model.parameters())
    return {"name": variant["name"], "config": variant["config"], "set": variant.get("set", []),
            "budget_s": budget, "wall_s": wall, "params": params, "size": list(size),
            "batch": 2 * data.p * data.k, "points": points}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--data", required=True, help="SYSU-layout dataset root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per variant")
    parser.add_argument("--every", type=float, default=30.0, help="evaluate every this many training seconds")
    parser.add_argument("--trials", default="0,1,2", help="gallery trials of the protocol (default 0,1,2)")
    parser.add_argument("--protocol", default="sysu/all/single/seeded")
    parser.add_argument("--only", default=None)
    parser.add_argument("--seed", type=int, default=None, help="train.seed override for every variant")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    grid = yaml.safe_load(Path(args.grid).read_text())
    variants = grid["variants"]
    if args.only:
        wanted = args.only.split(",")
        variants = [v for v in variants if v["name"] in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "curves.json"
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    trials = [int(t) for t in args.trials.split(",")]
    for variant in variants:
        if variant["name"] in results:
            continue
        if args.seed is not None:
            variant = {**variant, "set": [*variant.get("set", []), f"train.seed={args.seed}"]}
        print(f"{variant['name']} ({variant['config']} {' '.join(variant.get('set', []))})", flush=True)
        results[variant["name"]] = {**run_variant(variant, args.data, out, args.budget, args.every, trials,
                                                  args.protocol), "data": args.data, "seed": args.seed,
                                    "threads": torch.get_num_threads(), "cpus": os.sched_getaffinity(0).__len__()}
        result_path.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
