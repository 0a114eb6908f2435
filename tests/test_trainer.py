"""The training loop with a toy recipe: resume equality after a real signal, NaN stop, logs."""

import json

import pytest
import torch

from resume_check import kill_and_resume
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.trainer import Trainer, TrainingDiverged
from vireid.methods.base import Method
from vireid.schema import TrainSettings, parse_section


class ToyBatches:
    def __init__(self, n=48, batch=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
        self.batch, self.seed = batch, seed

    def __len__(self):
        return len(self.x) // self.batch

    def epoch(self, epoch, start=0):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        for b in range(start, len(self)):
            idx = order[b * self.batch:(b + 1) * self.batch]
            yield self.x[idx], self.y[idx]


class ToyRecipe(Method):
    name = "toy"

    def __init__(self, seed, nan_at=None):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                         torch.nn.Linear(16, 3))
        self.nan_at, self.calls = nan_at, 0

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def training_step(self, model, batch):
        x, y = batch
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        l2 = 1e-3 * sum((p ** 2).sum() for p in model.parameters())
        return {"loss": loss + l2, "id": loss, "l2": l2}


CFG = TrainSettings(epochs=3, optimizer="sgd", lr=0.1, schedule="multistep", milestones=(2,), warmup_epochs=1,
                  log_every=1)


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    def make(seed, out):
        return Trainer(ToyRecipe(seed=seed), ToyBatches(), CFG, out, progress=False)

    plain, state, second = kill_and_resume(make, tmp_path, kill_step=8, seed=123,
                                           stopped_at=r"stopped by SIGTERM at epoch 2, step 2")
    assert state["global_step"] == 8
    for a, b in zip(plain.recipe.model.state_dict().values(), second.recipe.model.state_dict().values()):
        assert torch.equal(a, b)
    assert second.global_step == plain.global_step == 18


def test_nan_loss_stops_with_term_and_keeps_last_good_checkpoint(tmp_path):
    trainer = Trainer(ToyRecipe(seed=0, nan_at=9), ToyBatches(), CFG, tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match=r"loss term 'id' is nan at epoch 2, step 3") as err:
        trainer.fit()
    assert f"the last good checkpoint is kept at {tmp_path / 'checkpoint.pt'}" in str(err.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0


def test_nan_in_the_first_epoch_names_no_checkpoint_that_does_not_exist(tmp_path):
    trainer = Trainer(ToyRecipe(seed=0, nan_at=2), ToyBatches(), CFG, tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match=r"step 2; training stopped, no checkpoint was written yet") as err:
        trainer.fit()
    assert "checkpoint.pt" not in str(err.value) and not (tmp_path / "checkpoint.pt").exists()


def test_metrics_jsonl_and_checkpoint_contents(tmp_path):
    Trainer(ToyRecipe(seed=0), ToyBatches(), TrainSettings(epochs=1, log_every=2), tmp_path, progress=False).fit()
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["global_step"] for l in lines] == [2, 4, 6]
    assert {"id", "l2", "loss", "lr", "img_per_s", "epoch"} <= set(lines[0])
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["method"] == "toy" and state["epoch"] == 1


def test_checkpoint_from_another_method_is_refused(tmp_path):
    Trainer(ToyRecipe(seed=0), ToyBatches(), TrainSettings(epochs=1), tmp_path, progress=False).fit()
    other = ToyRecipe(seed=0)
    other.name = "agw"
    with pytest.raises(ValueError, match=r"written by method 'toy', not 'agw'"):
        Trainer(other, ToyBatches(), TrainSettings(epochs=1), tmp_path, progress=False).resume()


def test_train_config_errors():
    with pytest.raises(ValueError, match="unknown train setting"):
        parse_section(TrainSettings, {"epochs": 1, "lrr": 3}, "train")
    with pytest.raises(ValueError, match="'train.epochs' is missing"):
        parse_section(TrainSettings, {}, "train")
    assert parse_section(TrainSettings, {"epochs": 2, "amp": True}, "train").amp == "fp16"
    with pytest.raises(ValueError, match="train.lr must be a number >= 0, got 'fast'"):
        parse_section(TrainSettings, {"epochs": 1, "lr": "fast"}, "train")
