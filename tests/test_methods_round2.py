"""MAUM and CM-LSP-GE train on a tiny synthetic SYSU tree from their shipped presets (shrunk) and are evaluated;
a MAUM run stopped after one epoch and resumed ends with the same memory banks as an uninterrupted run."""

import json

import pytest
import torch
import yaml

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import merge
from vireid.synth.generator import generate

TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 4, "workers": 0, "cache": False},
        "model": {"depth": 18}, "train": {"epochs": 1, "milestones": [], "amp": "off", "log_every": 1,
                                          "warmup_epochs": 0, "lr": 0.01}}
PROTOCOL = "sysu/all/single/seeded"

CASES = {  # preset, settings merged over it, terms that must be logged
    "maum": ("maum_sysu", {"model": {"memory_visible": 3, "memory_infrared": 2},
                           "recipe": {"memory_warmup_epochs": 0}},
             {"id", "ce_rgb", "ce_ir", "uni_r2i", "uni_i2r"}),
    "cmlsp": ("cmlsp_sysu", {"model": {"non_local": [0, 1, 1, 0], "stripes": 2, "local_dim": 16}},
              {"id", "id_enhanced", "hetero_center", "id_local", "local_triplet"}),
}


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    return root


def _tiny_config(tmp_path, case, **train):
    preset, extra, _ = CASES[case]
    path = tmp_path / f"{case}.yaml"  # the shipped preset shrunk
    path.write_text(yaml.safe_dump({"_base_": str(resolve_config_path(preset)),
                                    **merge(merge(TINY, extra), {"train": train})}))
    return path


def _check_logged_and_evaluate(case, out, sysu_root):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = CASES[case][2]
    assert len(records) >= 2  # at least two optimisation steps
    assert logged <= set(records[-1]) and all(records[-1][k] == records[-1][k] for k in logged)  # finite
    result = evaluate_run(out, sysu_root, PROTOCOL, device="cpu", trials=[0, 1])
    assert len(result.trials) == 2 and 0.0 <= result.mean["mAP"] <= 1.0 and 0.0 <= result.mean["rank1"] <= 1.0


def test_cmlsp_preset_trains_and_evaluates(sysu_root, tmp_path):
    out = tmp_path / "cmlsp"
    train(_tiny_config(tmp_path, "cmlsp"), sysu_root, out, device="cpu", progress=False)
    _check_logged_and_evaluate("cmlsp", out, sysu_root)


def test_maum_preset_trains_evaluates_and_resumes_with_the_same_memories(sysu_root, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(_tiny_config(tmp_path, "maum", epochs=2), sysu_root, straight, device="cpu", progress=False)
    _check_logged_and_evaluate("maum", straight, sysu_root)
    train(_tiny_config(tmp_path, "maum", epochs=1), sysu_root, stopped, device="cpu", progress=False)
    first = torch.load(stopped / "checkpoint.pt", weights_only=True)["model"]
    steps = int(first["memory_visible.pushed"])
    assert steps >= 2  # one push per step of the first epoch, all in the checkpoint
    train(_tiny_config(tmp_path, "maum", epochs=2), sysu_root, stopped, device="cpu", progress=False,
          allow_changes=["train.epochs"])  # resumes, extended to the second epoch
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)["model"]
    assert int(b["memory_visible.pushed"]) == int(a["memory_visible.pushed"]) == 2 * steps
    for key in ("memory_visible.bank", "memory_infrared.bank"):
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize("preset", ["maum_sysu", "maum_regdb", "maum_llcm", "cmlsp_sysu", "cmlsp_regdb", "cmlsp_llcm"])
def test_every_preset_resolves_and_builds(preset):
    from vireid.config import load_config
    from vireid.methods import build_recipe

    small = ["model.depth=18"] + (["model.non_local=[0,0,0,0]"] if preset.startswith("cmlsp") else [])
    cfg = load_config(resolve_config_path(preset), small)
    dataset = preset.rsplit("_", 1)[1]
    assert cfg["data"]["dataset"] == dataset and cfg["eval"]["protocol"].startswith(dataset)
    recipe = build_recipe(cfg, num_classes=3)
    assert recipe.name == cfg["method"] and len(recipe.param_groups()) == 2
