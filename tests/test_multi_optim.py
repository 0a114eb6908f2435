"""Several named optimisers in the one loop: alternating updates, exact resume, iteration LR schedule."""

import json

import pytest
import torch

from resume_check import kill_and_resume
from vireid.engine.optim import iteration_factor, lr_factor
from vireid.engine.trainer import Trainer
from vireid.methods.base import Method
from vireid.schema import OptimizerSettings, TrainSettings, parse_section


class ToyBatches:
    def __init__(self, n=40, batch=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.batch, self.seed = batch, seed

    def __len__(self):
        return len(self.x) // self.batch

    def epoch(self, epoch, start=0):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        for b in range(start, len(self)):
            yield self.x[order[b * self.batch:(b + 1) * self.batch]]


class ToyGAN(Method):
    """A linear generator and a discriminator with dropout (so the RNG state matters), LSGAN losses."""

    name = "toy_gan"

    def __init__(self, seed):
        torch.manual_seed(seed)
        self.model = torch.nn.ModuleDict({
            "gen": torch.nn.Linear(4, 4),
            "dis": torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(8, 1)),
        })
        self.record = None  # set by a test: snapshots around each update

    def optimizers(self):
        return {"dis": [{"params": self.model["dis"].parameters()}],
                "gen": [{"params": self.model["gen"].parameters()}]}

    def _snapshot(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def training_step(self, model, real):
        noise = torch.randn_like(real)
        fake = model["gen"](noise)
        before = self._snapshot()
        d_loss = (model["dis"](fake.detach()) ** 2).mean() + ((model["dis"](real) - 1) ** 2).mean()
        yield "dis", {"loss": d_loss, "d": d_loss}
        between = self._snapshot()
        g_loss = ((model["dis"](fake) - 1) ** 2).mean()  # the discriminator as it is after its own step
        yield "gen", {"loss": g_loss, "g": g_loss}
        if self.record is not None:
            self.record.append((before, between, self._snapshot()))


CFG = TrainSettings(epochs=3, optimizer="adam", lr=1e-2, schedule="iter_step", step_iters=4, gamma=0.5,
                  log_every=1, optimizers={"dis": {"betas": [0.5, 0.999]}, "gen": {"optimizer": "sgd", "lr": 0.1}})


def _states(trainer):
    return {name: o.state_dict() for name, o in trainer.optimizers.items()}


def _assert_equal_nested(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_equal_nested(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal_nested(x, y)
    else:
        assert a == b


def test_killed_run_resumes_to_identical_weights_and_optimiser_states(tmp_path):
    def make(seed, out):
        return Trainer(ToyGAN(seed=seed), ToyBatches(), CFG, out, progress=False)

    plain, state, second = kill_and_resume(make, tmp_path, kill_step=7, seed=5, stopped_at=r"epoch 2, step 2")
    assert state["global_step"] == 7 and set(state["optimizers"]) == {"dis", "gen"} and "optimizer" not in state
    assert "scaler" in state
    assert second.global_step == plain.global_step == 15
    _assert_equal_nested(plain.recipe.model.state_dict(), second.recipe.model.state_dict())
    _assert_equal_nested(_states(plain), _states(second))
    assert _states(plain)["dis"]["state"][0]["step"] == 15  # Adam stepped once per iteration


def test_each_update_steps_only_its_optimisers_parameters(tmp_path):
    recipe = ToyGAN(seed=0)
    recipe.record = []
    Trainer(recipe, ToyBatches(), TrainSettings(epochs=1, lr=1e-2), tmp_path, progress=False).fit()
    assert len(recipe.record) == 5
    for before, between, after in recipe.record:
        for key in before:
            moved_by_dis = not torch.equal(before[key], between[key])
            moved_by_gen = not torch.equal(between[key], after[key])
            assert moved_by_dis == key.startswith("dis."), key  # the dis update moves dis only ...
            assert moved_by_gen == key.startswith("gen."), key  # ... and the gen update (whose loss reaches dis) gen


def test_per_optimiser_settings_and_logged_rates(tmp_path):
    trainer = Trainer(ToyGAN(seed=0), ToyBatches(), CFG, tmp_path, progress=False)
    dis, gen = trainer.optimizers["dis"], trainer.optimizers["gen"]
    assert isinstance(dis, torch.optim.Adam) and dis.defaults["betas"] == (0.5, 0.999) and dis.defaults["lr"] == 1e-2
    assert isinstance(gen, torch.optim.SGD) and gen.defaults["lr"] == 0.1 and gen.defaults["nesterov"]
    trainer.fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in lines] == list(range(1, 16))
    for r in lines:  # halved every 4 iterations, counted from the run's first iteration (0-based)
        factor = 0.5 ** ((r["global_step"] - 1) // 4)
        assert r["lr_dis"] == pytest.approx(1e-2 * factor) and r["lr_gen"] == pytest.approx(0.1 * factor)
        assert r["lr"] == r["lr_dis"]  # "lr" is the first optimiser's
        assert r["loss"] == pytest.approx(r["loss_dis"] + r["loss_gen"]) and {"d", "g"} <= set(r)


def test_iteration_schedule_factor():
    assert [iteration_factor(t, 3, 0.5) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert lr_factor(0.0, schedule="iter_step", epochs=1, gamma=0.5, step=50000, step_iters=25000) == 0.25
    with pytest.raises(ValueError, match="train.step_iters must be an integer >= 1"):
        iteration_factor(3, 0, 0.5)
    with pytest.raises(ValueError, match="iter_step needs train.step_iters >= 1"):
        parse_section(TrainSettings, {"epochs": 1, "schedule": "iter_step"}, "train")


def test_an_update_may_step_two_optimisers_at_once(tmp_path):
    class Joint(ToyGAN):
        def optimizers(self):
            return {"a": [{"params": self.model["gen"].parameters()}], "b": [{"params": self.model["dis"].parameters()}]}

        def training_step(self, model, real):
            loss = ((model["dis"](model["gen"](real)) - 1) ** 2).mean()
            yield ("a", "b"), {"loss": loss}

    trainer = Trainer(Joint(seed=0), ToyBatches(), TrainSettings(epochs=1, lr=1e-2, log_every=1), tmp_path,
                      progress=False)
    trainer.fit()
    assert all(o.state_dict()["state"][0]["step"] == 5 for o in trainer.optimizers.values())
    assert "loss_a_b" in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])


def test_errors_name_the_optimiser(tmp_path):
    with pytest.raises(ValueError, match=r"train.optimizers names gan, which method 'toy_gan' does not have; "
                                         r"its optimisers are dis, gen"):
        Trainer(ToyGAN(seed=0), ToyBatches(), TrainSettings(epochs=1, optimizers={"gan": {}}), tmp_path)
    with pytest.raises(ValueError, match=r"train.optimizers.gen.betas must be two numbers in \[0, 1\)"):
        parse_section(TrainSettings, {"epochs": 1, "optimizers": {"gen": {"betas": [0.5]}}}, "train")
    with pytest.raises(ValueError, match=r"unknown train.optimizers.gen setting\(s\) beta"):
        OptimizerSettings.parse("gen", {"beta": 0.5})

    class Wrong(ToyGAN):
        def training_step(self, model, real):
            yield "generator", {"loss": model["gen"](real).sum()}

    with pytest.raises(ValueError, match=r"yielded an update for \['generator'\]; its optimisers are dis, gen"):
        Trainer(Wrong(seed=0), ToyBatches(), TrainSettings(epochs=1), tmp_path / "w", progress=False).fit()


def test_a_single_optimiser_recipe_refuses_named_optimiser_settings(tmp_path):
    class Single(Method):
        name = "single"
        model = torch.nn.Linear(2, 2)

        def param_groups(self):
            return [{"params": self.model.parameters()}]

    with pytest.raises(ValueError, match=r"train.optimizers names gen, but method 'single' has one optimiser"):
        Trainer(Single({"method": "single"}, 2), ToyBatches(), TrainSettings(epochs=1, optimizers={"gen": {}}), tmp_path)
