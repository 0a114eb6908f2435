"""The plain-CNN baseline (method ``plain``, config ``baseline_sysu``) and the trainer's time budget."""

import pytest
import torch

from vireid.app.runs import resolve_config_path, run_defaults
from vireid.config import load_config
from vireid.engine.trainer import Trainer
from vireid.methods import build_recipe
from vireid.methods.base import Method
from vireid.models.plain_cnn import PlainCNN
from vireid.schema import TrainSettings, parse_section


def test_plain_cnn_routes_each_modality_to_its_stem():
    net = PlainCNN(num_classes=3, width=4)
    x = torch.randn(4, 3, 32, 16)
    mod = torch.tensor([1, 0, 1, 0])
    out = net(x, mod)
    assert out["pooled"].shape == (4, 32) and out["logits"].shape == (4, 3)
    net.eval()
    mixed = net(x, mod)
    alone = torch.cat([net(x[i:i + 1], mod[i:i + 1]) for i in range(4)])
    assert torch.allclose(mixed, alone, atol=1e-5)
    assert torch.allclose(mixed.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="per-sample modality tensor of shape \\(4,\\)"):
        net(x)
    with pytest.raises(ValueError, match="width must be a positive int"):
        PlainCNN(3, width=0)


def test_baseline_config_builds_the_plain_recipe_and_a_step_learns():
    cfg = load_config(resolve_config_path("baseline_sysu"), ["model.width=4"], defaults=run_defaults)
    recipe = build_recipe(cfg, num_classes=2)
    assert recipe.name == "plain" and recipe.settings.loss.triplet == 1.0 and recipe.settings.loss.wrt == 0.0
    torch.manual_seed(0)
    images, pids = torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    batch = (images, pids, torch.zeros(8, dtype=torch.long), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    opt = torch.optim.Adam(recipe.model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        terms = recipe.training_step(recipe.model, batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = first if first is not None else float(terms["loss"].detach())
    assert set(terms) == {"loss", "id", "triplet"} and float(terms["loss"].detach()) < first


class Toy(Method):
    name = "toy"

    def __init__(self):
        self.model = torch.nn.Linear(2, 1)

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def training_step(self, model, batch):
        return {"loss": model(batch).pow(2).mean()}


class Slow:
    """Batches that take 20 ms each, 5 per epoch."""

    def __len__(self):
        return 5

    def epoch(self, epoch, start=0):
        import time

        for _ in range(start, 5):
            time.sleep(0.02)
            yield torch.randn(4, 2)


def test_time_budget_stops_training_and_stretches_the_schedule(tmp_path):
    cfg = TrainSettings(epochs=4, optimizer="sgd", lr=1.0, milestones=(2,), time_budget_s=0.3, log_every=1)
    lrs = []
    trainer = Trainer(Toy(), Slow(), cfg, tmp_path, progress=False)
    trainer.fit(on_step=lambda t, rec: lrs.append(rec["lr"]))
    assert 0.3 <= trainer.trained_s < 1.0 and trainer.global_step < 16  # not 4 epochs x 5 steps
    assert trainer.epoch >= 2 and lrs[0] == 1.0 and lrs[-1] == pytest.approx(0.1)  # milestone at half the budget
    again = Trainer(Toy(), Slow(), cfg, tmp_path, progress=False)
    assert again.resume() and again.trained_s == trainer.trained_s
    steps = again.global_step
    again.fit()
    assert again.global_step == steps  # a finished budget is not trained again
    with pytest.raises(ValueError, match="train.time_budget_s must be a number >= 0, got -1.0"):
        parse_section(TrainSettings, {"epochs": 1, "time_budget_s": -1}, "train")


def test_idkl_aux_warmup_ramps_the_terms_beyond_l_b():
    from vireid.methods.idkl import aux_scale

    assert aux_scale(0.0, 0.5) == 0.0 and aux_scale(0.25, 0.5) == 0.5 and aux_scale(0.9, 0.5) == 1.0
    assert aux_scale(0.0, 0.0) == 1.0  # off: the published loss from the first step
    cfg = load_config(resolve_config_path("demo_idkl"), ["model.backbone=plain_w4", "recipe.aux_warmup=0.5"],
                      defaults=run_defaults)
    recipe = build_recipe(cfg, num_classes=2)
    torch.manual_seed(0)
    batch = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8, dtype=torch.long),
             torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    recipe.model.train()
    recipe.set_progress(0.0)
    torch.manual_seed(1)  # the same dropout masks in both calls
    start = recipe.training_step(recipe.model, batch)
    s = recipe.loss_settings
    l_b = s.id_sh * start["ce"] + s.id_sp * start["id_pl"] + start["tri"]
    # demo_idkl's added hetero-center term is not one of IDKL's: the ramp leaves it at full weight
    assert float(start["hetero_center_sh"]) > 0
    assert float(start["aux_scale"]) == 0.0 and torch.allclose(start["loss"], l_b + start["hetero_center_sh"])
    recipe.set_progress(1.0)
    torch.manual_seed(1)
    full = recipe.training_step(recipe.model, batch)
    assert "aux_scale" not in full and float(full["loss"]) > float(l_b)
    with pytest.raises(ValueError, match="recipe.aux_warmup must be a number in \\[0, 1\\], got 2"):
        build_recipe({**cfg, "recipe": {"aux_warmup": 2}}, num_classes=2)


@pytest.mark.parametrize("config", ["msclnet_sysu", "maum_sysu", "cmlsp_sysu", "agw_sysu", "mbfvrd_sysu"])
def test_survey_methods_take_the_plain_trunk(config):
    """Every CNN method runs on the light plain trunk (the CPU ablation's backbone) and its loss has gradients."""
    cfg = load_config(resolve_config_path(config), ["model.backbone=plain_w4", "model.pretrained=none"],
                      defaults=run_defaults)
    recipe = build_recipe(cfg, num_classes=2)
    assert any(name.endswith("layer4.0.weight") for name, _ in recipe.model.named_parameters())
    torch.manual_seed(0)
    images, pids = torch.randn(8, 3, 96, 32), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    batch = (images, pids, torch.zeros(8, dtype=torch.long), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    terms = recipe.training_step(recipe.model, batch)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    assert all(p.grad is not None for n, p in recipe.model.named_parameters() if "layer4" in n and p.requires_grad)
