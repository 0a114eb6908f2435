"""`vireid ablate`: plan checks, row configs, seeds, and a two-row, two-seed run on a tiny synthetic tree."""

import json

import pytest
import yaml

from vireid.app.ablation import aggregate, format_table, load_plan, row_config, select_rows, separated_pairs
from vireid.cli.main import main

PLAN = {
    "synthetic": {"layout": "sysu", "ids": 8, "seed": 1, "size": [32, 16], "images": 2},
    "protocol": "sysu/all/single/seeded",
    "trials": [0, 1],
    "seeds": [0, 1],
    "budget": {"data": {"height": 32, "width": 16, "p": 2, "k": 4, "workers": 0, "cache": False},
               "model": {"backbone": "plain_w4"}, "train": {"epochs": 1, "milestones": [], "seed": 0}},
    "_shared": {"anchor": 1},
    "rows": [
        {"name": "AGW", "config": "agw_sysu", "set": {"model": {"non_local": [0, 0, 1, 1]}}},
        {"name": "AGW + HcTri", "config": "agw_sysu",
         "set": {"model": {"non_local": [0, 0, 0, 0]}, "loss": {"hetero_center": 1.0}}, "also_rerank": True},
    ],
}


def write(tmp_path, plan):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_ablate_trains_rows_and_writes_the_table(tmp_path):
    out = tmp_path / "out"
    assert main(["ablate", str(write(tmp_path, PLAN)), "--out", str(out), "--jobs", "1"]) == 0
    table = (out / "ablation.md").read_text()
    assert "| AGW | agw_sysu | 2 |" in table and "| AGW + HcTri | agw_sysu | 2 |" in table
    assert "over 2 gallery trials" in table and "seeds [0, 1]" in table and "two standard errors" in table
    saved = json.loads((out / "ablation.json").read_text())
    results, runs = saved["results"], saved["runs"]
    assert [r["name"] for r in results] == ["AGW", "AGW + HcTri", "AGW + HcTri [re-ranked]"]
    assert all(r["n"] == 2 and r["seeds"] == [0, 1] and 0 <= r["mean"]["mAP"] <= 1 for r in results)
    assert sorted((r["name"], r["seed"]) for r in runs if r["name"] == "AGW") == [("AGW", 0), ("AGW", 1)]
    assert all(r["trials"] == 2 and r["train_s"] > 0 for r in runs)
    resolved = yaml.safe_load((out / "agw_hctri" / "seed1" / "config.yaml").read_text())
    assert resolved["loss"]["hetero_center"] == 1.0 and resolved["data"]["height"] == 32  # row over budget
    assert resolved["train"]["seed"] == 1
    agw = [r for r in runs if r["name"] == "AGW"]
    assert results[0]["mean"]["rank1"] == pytest.approx(sum(r["mean"]["rank1"] for r in agw) / 2)


def test_plan_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown plan key\\(s\\) budgets"):
        load_plan(write(tmp_path, {**PLAN, "budgets": {}}))
    with pytest.raises(ValueError, match="duplicate row names \\['AGW'\\]"):
        load_plan(write(tmp_path, {**PLAN, "rows": PLAN["rows"][:1] * 2}))
    with pytest.raises(ValueError, match="unknown row\\(s\\) CAJ; the plan has: AGW, AGW \\+ HcTri"):
        select_rows(PLAN, ["CAJ"])
    with pytest.raises(FileNotFoundError, match="config not found: nope"):
        row_config({"name": "x", "config": "nope"}, {})
    with pytest.raises(ValueError, match="'seeds' must be a non-empty list of distinct ints, got \\[0, 0\\]"):
        load_plan(write(tmp_path, {**PLAN, "seeds": [0, 0]}))


def run_result(name, seed, rank1, trial_std=0.02):
    stats = {"rank1": rank1, "mAP": rank1 / 2, "mINP": rank1 / 4}
    return {"name": name, "config": "c", "seed": seed, "mean": stats, "std": {k: trial_std for k in stats},
            "trials": 10, "train_s": 60.0 + seed, "eval_s": 2.0}


def test_seed_statistics_and_separated_pairs():
    runs = [run_result("A", s, r) for s, r in zip((0, 1, 2), (0.50, 0.52, 0.48))]
    runs += [run_result("B", s, r) for s, r in zip((0, 1, 2), (0.30, 0.31, 0.29))]
    runs += [run_result("C", s, r) for s, r in zip((0, 1, 2), (0.20, 0.55, 0.40))]
    runs.append({"name": "C", "config": "c", "seed": 3, "error": "TrainingDiverged: loss is nan"})
    results = aggregate(runs)
    a, b, c = results
    assert a["mean"]["rank1"] == pytest.approx(0.50) and a["seed_std"]["rank1"] == pytest.approx(0.02)
    assert a["trial_std"]["rank1"] == pytest.approx(0.02) and a["train_s"] == pytest.approx(61.0)
    assert c["n"] == 3 and c["failed"] == [{"seed": 3, "error": "TrainingDiverged: loss is nan"}]
    pairs = separated_pairs(results)
    assert [(p[0], p[1]) for p in pairs] == [("A", "B")]  # C's seed spread (std 17.6) hides its differences
    table = format_table(results, {**PLAN, "seeds": [0, 1, 2, 3]}, command="vireid ablate p.yaml", wall=120, jobs=2)
    assert "| A | c | 3 | 50.0 ± 2.0 | 25.0 ± 1.0 | 12.5 ± 0.5 | 2.0 | 61 | 2 |" in table
    assert "| C | c | 3 (seed 3 failed: TrainingDiverged: loss is nan) |" in table
    assert "- A > B: 20.0 points (SE 1.3)" in table
    assert "Command: `vireid ablate p.yaml`" in table and "2.0 min with 2 runs at a time" in table
    none = format_table(aggregate(runs[6:]), PLAN)
    assert "- none: at this budget the rows do not separate." in none


@pytest.mark.parametrize("name", ["ablation_cpu.yaml", "ablation_gpu.yaml", "ablation_cpu_imagenet.yaml",
                                  "ablation_cpu_finetune.yaml"])
def test_shipped_plans_resolve_and_every_row_builds(name, tmp_path):
    from conftest import REPO
    from vireid.app.runs import run_defaults
    from vireid.config import load_config
    from vireid.methods import build_recipe

    plan = load_plan(REPO / "benchmarks" / name)
    assert len(plan["seeds"]) >= 3 and len(plan["rows"]) >= 12
    for i, row in enumerate(plan["rows"]):
        path = tmp_path / f"row{i}.yaml"
        path.write_text(yaml.safe_dump(row_config(row, plan["budget"], seed=plan["seeds"][-1])))
        cfg = load_config(path, defaults=run_defaults)
        assert cfg["train"]["seed"] == plan["seeds"][-1]
        budget = plan["budget"]["train"]
        if budget.get("time_budget_s"):  # equal seconds ...
            assert cfg["train"]["time_budget_s"] == budget["time_budget_s"]
        else:  # ... or equal passes over the data, for every row
            assert cfg["train"]["time_budget_s"] == 0 and cfg["train"]["epochs"] == budget["epochs"]
        recipe = build_recipe(cfg, num_classes=5)
        if cfg["model"].get("frozen_blocks"):  # the fine-tuning plan: the low blocks really are fixed in every row
            frozen = [n for n, p in recipe.model.named_parameters() if not p.requires_grad]
            assert any("_blocks.10." in n for n in frozen) and not any("_blocks.11." in n for n in frozen), row["name"]
