"""`vireid ablate`: plan checks, row configs, and a two-row run on a tiny synthetic tree."""

import json

import pytest
import yaml

from vireid.app.ablation import format_table, load_plan, row_config, select_rows
from vireid.cli.main import main

PLAN = {
    "synthetic": {"layout": "sysu", "ids": 8, "seed": 1, "size": [32, 16], "images": 2},
    "protocol": "sysu/all/single/seeded",
    "trials": [0, 1],
    "budget": {"data": {"height": 32, "width": 16, "p": 2, "k": 4, "workers": 0, "cache": False},
               "model": {"depth": 18}, "train": {"epochs": 1, "milestones": [], "seed": 0}},
    "_shared": {"anchor": 1},
    "rows": [
        {"name": "AGW", "config": "agw_sysu", "set": {"model": {"non_local": [0, 1, 1, 0]}}},
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
    assert "| AGW | agw_sysu |" in table and "| AGW + HcTri | agw_sysu |" in table and "over 2 gallery trials" in table
    results = json.loads((out / "ablation.json").read_text())["results"]
    assert [r["name"] for r in results] == ["AGW", "AGW + HcTri", "AGW + HcTri [re-ranked]"]
    assert all(0 <= r["mean"]["mAP"] <= 1 and r["trials"] == 2 for r in results)
    resolved = yaml.safe_load((out / "agw_hctri" / "config.yaml").read_text())
    assert resolved["loss"]["hetero_center"] == 1.0 and resolved["data"]["height"] == 32  # row over budget


def test_plan_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown plan key\\(s\\) budgets"):
        load_plan(write(tmp_path, {**PLAN, "budgets": {}}))
    with pytest.raises(ValueError, match="duplicate row names \\['AGW'\\]"):
        load_plan(write(tmp_path, {**PLAN, "rows": PLAN["rows"][:1] * 2}))
    with pytest.raises(ValueError, match="unknown row\\(s\\) CAJ; the plan has: AGW, AGW \\+ HcTri"):
        select_rows(PLAN, ["CAJ"])
    with pytest.raises(FileNotFoundError, match="config not found: nope"):
        row_config({"name": "x", "config": "nope"}, {})


def test_table_format():
    stats = {"rank1": 0.5, "mAP": 0.25, "mINP": 0.125}
    zero = {k: 0.0 for k in stats}
    table = format_table([{"name": "A", "config": "c", "mean": stats, "std": zero, "trials": 10, "train_s": 61.2,
                           "eval_s": 2.0}], PLAN, command="vireid ablate p.yaml", wall=120, jobs=2)
    assert "| A | c | 50.0 ± 0.0 | 25.0 ± 0.0 | 12.5 ± 0.0 | 61 | 2 |" in table
    failed = format_table([{"name": "B", "config": "c", "error": "TrainingDiverged: loss is nan"}], PLAN)
    assert "| B | c | failed: TrainingDiverged: loss is nan |" in failed
    assert "Command: `vireid ablate p.yaml`" in table and "2.0 min with 2 rows at a time" in table
