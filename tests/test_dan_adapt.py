"""DAN end to end: target batches, the trainer's epoch-start hook, a two-step adaptation run, errors."""

import json

import numpy as np
import pytest
import torch
import yaml

from vireid.app.runs import adapt, evaluate_run, load_run, resolve_config_path
from vireid.cli.main import main
from vireid.data.datasets import open_dataset
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.target_batches import TargetBatches
from vireid.engine.trainer import Trainer
from vireid.methods import build_recipe
from vireid.methods.base import Method
from vireid.schema import TrainSettings
from vireid.synth.domains import synth_domain
from vireid.synth.generator import generate

TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 2, "workers": 0, "cache": False},
        "model": {"depth": 18},
        "recipe": {"start_epoch": 0, "m": 2, "disc_hidden": 16},
        "train": {"epochs": 1, "milestones": [], "warmup_epochs": 0, "lr": 0.01, "log_every": 1}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("dan")
    generate(base / "src", "sysu", 6, seed=1, size=(32, 16), images=2, workers=1)
    generate(base / "raw", "sysu", 6, seed=2, size=(32, 16), images=2, workers=1)
    synth_domain(base / "raw", base / "tgt", "lighting", seed=0)
    tiny = base / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("dan_sysu")), **TINY}))
    return base


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_target_batches_follow_pseudo_labels_and_hide_identities(roots):
    samples = open_dataset("sysu", roots / "tgt").train
    tb = TargetBatches(samples, (32, 16), None, num_ids=2, num_per_modality=2, seed=0)
    random_plan = tb.plan(0, 3)
    assert random_plan == tb.plan(0, 3) and random_plan != tb.plan(1, 3)
    mod = np.array([s.modality for s in samples])
    for batch in random_plan:
        assert list(mod[batch]) == [VISIBLE] * 4 + [INFRARED] * 4
    labels = np.arange(len(samples)) % 3
    tb.set_labels(labels)
    for batch in tb.plan(0, 5):
        vis, ir = batch[:4], batch[4:]
        assert list(mod[vis]) == [VISIBLE] * 4 and list(mod[ir]) == [INFRARED] * 4
        assert list(labels[vis]) == list(labels[ir])  # class c: k visible, then the same classes' infrared
        assert len(set(labels[batch])) == 2
    images, index, _, modality = next(iter(tb.epoch(0, steps=1)))
    assert images.shape == (8, 3, 32, 16) and images.dtype == torch.uint8
    assert index.tolist() == tb.plan(0, 1)[0]  # the pid slot carries the sample index, not the identity
    with pytest.raises(ValueError, match=r"pseudo labels must have shape \(\d+,\)"):
        tb.set_labels(labels[:-1])


class _Hooked(Method):
    name = "hooked"

    def __init__(self):
        self.model = torch.nn.Linear(2, 1)
        self.seen = []

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def on_epoch_start(self, epoch, trainer):
        self.seen.append((epoch, trainer.step_in_epoch, self.model.training))

    def training_step(self, model, batch):
        return {"loss": model(batch).pow(2).mean()}


class _Batches:
    def __len__(self):
        return 2

    def epoch(self, epoch, start=0):
        for _ in range(start, 2):
            yield torch.ones(3, 2)


def test_trainer_calls_the_epoch_start_hook(tmp_path):
    recipe = _Hooked()
    Trainer(recipe, _Batches(), TrainSettings(epochs=3, lr=0.01), tmp_path, progress=False).fit()
    assert [(e, s) for e, s, _ in recipe.seen] == [(0, 0), (1, 0), (2, 0)]


def test_two_step_adaptation_run_and_evaluation(roots, tmp_path):
    out = tmp_path / "dan"
    adapt(roots / "tiny.yaml", roots / "src", roots / "tgt", out, device="cpu", progress=False)
    records = _records(out)
    refresh = [r for r in records if r.get("refresh")]
    steps = [r for r in records if "step" in r]
    assert len(refresh) == 1 and refresh[0]["pseudo_classes"] >= 1 and 0 <= refresh[0]["neighbour_precision"] <= 1
    assert len(steps) >= 2
    for r in steps:
        assert {"cls", "tri", "daa", "soft", "cma"} <= set(r) and all(np.isfinite(r[k]) for k in r if k != "lr")
    recipe, cfg = load_run(out)
    n = len(open_dataset("sysu", roots / "tgt").train)
    assert cfg["recipe"]["num_target"] == n
    assert (recipe.model.pseudo_labels >= 0).all() and recipe.model.neighbours.shape == (n, 2)
    result = evaluate_run(out, roots / "tgt", "sysu/all/single/seeded", device="cpu", trials=[0])
    assert 0.0 <= result.mean["mAP"] <= 1.0


def test_adaptation_changes_the_weights_only_through_target_terms(roots, tmp_path):
    """With every target weight 0 the target batch is ignored: two different targets give the same model."""
    off = ["recipe.lambda1=0", "recipe.lambda2=0", "recipe.lambda3=0", "train.deterministic=true"]
    a, b = tmp_path / "a", tmp_path / "b"
    adapt(roots / "tiny.yaml", roots / "src", roots / "tgt", a, off, device="cpu", progress=False)
    adapt(roots / "tiny.yaml", roots / "src", roots / "raw", b, off, device="cpu", progress=False)
    sa, sb = load_run(a)[0].model.net.state_dict(), load_run(b)[0].model.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert {"cls", "tri"} == {k for k in _records(a)[-1] if k in ("cls", "tri", "daa", "soft", "cma")}


def test_init_from_a_trained_run(roots, tmp_path):
    first = tmp_path / "first"
    adapt(roots / "tiny.yaml", roots / "src", roots / "tgt", first, ["recipe.lambda1=0", "recipe.lambda2=0",
          "recipe.lambda3=0"], device="cpu", progress=False)
    trained = load_run(first)[0].model.net.state_dict()
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    cfg["recipe"]["init"] = str(first)
    recipe = build_recipe(cfg, len({s.pid for s in open_dataset("sysu", roots / "src").train}))
    recipe.load_init(first)
    assert all(torch.equal(v, trained[k]) for k, v in recipe.model.net.state_dict().items())


def test_adapt_errors_name_the_problem(roots, tmp_path):
    with pytest.raises(ValueError, match="does not adapt to a target domain"):
        adapt("agw_sysu", roots / "src", roots / "tgt", tmp_path / "x", ["model.pretrained=none"], device="cpu",
              progress=False)
    stale = tmp_path / "stale.yaml"  # a config saved from a run on another target
    stale.write_text(yaml.safe_dump({"_base_": str(roots / "tiny.yaml"), "recipe": {"num_target": 3}}))
    with pytest.raises(ValueError, match="recipe.num_target is 3 but the target training set"):
        adapt(stale, roots / "src", roots / "tgt", tmp_path / "y", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"recipe.soft_lambda must be a number in \[0, 1\], got 2"):
        build_recipe({"method": "dan", "model": {"depth": 18}, "recipe": {"num_target": 10, "soft_lambda": 2}}, 3)
    with pytest.raises(ValueError, match=r"recipe.m \(10\) must be smaller than the number of target images"):
        build_recipe({"method": "dan", "model": {"depth": 18}, "recipe": {"num_target": 10, "m": 10}}, 3)
    with pytest.raises(ValueError, match="recipe.num_target .* is missing"):
        build_recipe({"method": "dan", "model": {"depth": 18}}, 3)


def test_cli_adapt_runs(roots, tmp_path):
    out = tmp_path / "cli"
    code = main(["adapt", str(roots / "tiny.yaml"), "recipe.lambda2=0", "--source", str(roots / "src"),
                 "--target", str(roots / "tgt"), "--out", str(out), "--device", "cpu"])
    assert code == 0 and (out / "checkpoint.pt").is_file()
    assert "soft" not in _records(out)[-1] and "daa" in _records(out)[-1]


def test_img_per_s_counts_the_source_batch_of_a_pair():
    from vireid.engine.trainer import _batch_size

    pair = ((torch.zeros(5, 3), torch.zeros(5)), (torch.zeros(7, 3), torch.zeros(7)))
    assert _batch_size(pair) == 5 and _batch_size((torch.zeros(4, 3), torch.zeros(4))) == 4
