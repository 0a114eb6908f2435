"""vireid.engine.replay: fixed batches through a method's own training step, optimiser and schedule."""

from __future__ import annotations

import pytest
import torch

from vireid.app.runs import resolve_config
from vireid.data.records import INFRARED, VISIBLE
from vireid.engine.replay import _FixedBatches, replay
from vireid.engine.trainer import Trainer
from vireid.methods import build_recipe
from vireid.schema import TrainSettings, parse_section

TINY_AGW = ["model.depth=18", "model.non_local=[0,2,2,0]"]
TINY_IDKL = ["model.depth=18"]


def _batches(n: int, p: int = 2, k: int = 2, seed: int = 0) -> list:
    """``n`` batches in the loaders' layout: p*k visible, then p*k infrared in the same identity order."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randperm(4, generator=g)[:p].repeat_interleave(k)
        modality = torch.cat([torch.full((p * k,), VISIBLE), torch.full((p * k,), INFRARED)])
        out.append((torch.randn(2 * p * k, 3, 32, 16, generator=g), ids.repeat(2), torch.zeros(2 * p * k), modality))
    return out


def _recipe(name: str, overrides):
    cfg = resolve_config(name, overrides)
    torch.manual_seed(0)
    return cfg, build_recipe(cfg, 4)


def test_replay_is_the_trainers_own_epoch(tmp_path):
    """Replaying an epoch's batches ends with the weights of Trainer.fit over the same batches."""
    batches = _batches(3)
    cfg, fitted = _recipe("agw_sysu", TINY_AGW)
    start = {k: v.clone() for k, v in fitted.model.state_dict().items()}
    tc = parse_section(TrainSettings, {**cfg["train"], "epochs": 1}, "train")
    Trainer(fitted, _FixedBatches(batches), tc, tmp_path, progress=False).fit()
    _, replayed = _recipe("agw_sysu", TINY_AGW)
    records = replay(replayed, batches, tc, state_dict=start, steps_per_epoch=3)
    assert [r["step"] for r in records] == [0, 1, 2] and {"loss", "id", "wrt"} <= set(records[0])
    for (name, a), b in zip(fitted.model.state_dict().items(), replayed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_lr_comes_from_the_schedule_at_the_epoch():
    """AGW's warm-up holds the rate per epoch: epoch e gives 0.1 (e + 1) / 10 to the head, x0.1 to the backbone."""
    cfg, recipe = _recipe("agw_sysu", TINY_AGW)
    for epoch in (0, 1, 9, 20):
        lr = replay(recipe, _batches(1), cfg["train"], epoch=epoch)[0]["lr"]
        head = 0.1 * min(epoch + 1, 10) / 10 * (0.1 if epoch >= 20 else 1)
        assert lr == pytest.approx([0.1 * head, head], rel=1e-12)


def test_callbacks_see_gradients_then_weights():
    cfg, recipe = _recipe("agw_sysu", TINY_AGW)
    classifier = recipe.model.classifier.weight
    seen = []

    def after_backward(step, trainer):
        seen.append(("grad", step, classifier.grad is not None, classifier.detach().clone()))

    def after_step(step, trainer, record):
        seen.append(("step", step, "loss" in record, classifier.detach().clone()))

    replay(recipe, _batches(2), cfg["train"], after_backward=after_backward, after_step=after_step)
    assert [(kind, step, ok) for kind, step, ok, _ in seen] == [("grad", 0, True), ("step", 0, True),
                                                               ("grad", 1, True), ("step", 1, True)]
    assert not torch.equal(seen[0][3], seen[1][3])  # the optimiser moved it between the two callbacks


def test_seeds_and_masks_fix_the_dropout():
    """Same seeds, same IDKL steps; masks injected in call order replace the draw entirely."""
    cfg, recipe = _recipe("idkl_sysu", TINY_IDKL)
    start = {k: v.clone() for k, v in recipe.model.state_dict().items()}
    batches = _batches(2)
    runs = [replay(recipe, batches, cfg["train"], state_dict=start, seeds=[5, 6]) for _ in range(2)]
    assert runs[0] == runs[1]
    ones = [[torch.ones(8, 100)] * 4] * 2  # keep everything: 4 dropout calls (2 heads x 2), 8 samples x 100 units
    masked = [replay(recipe, batches, cfg["train"], state_dict=start, seeds=[s, s + 1], dropout_masks=ones)
              for s in (1, 2)]
    assert masked[0] == masked[1] and masked[0] != runs[0]
    with pytest.raises(ValueError, match="dropout call 4 has no mask"):
        replay(recipe, batches[:1], cfg["train"], state_dict=start, dropout_masks=[[torch.ones(8, 100)] * 3])
    with pytest.raises(ValueError, match="2 seeds for 1 batches"):
        replay(recipe, batches[:1], cfg["train"], seeds=[1, 2])
    assert not any(m._forward_hooks for m in recipe.model.modules())  # the injection hooks are gone
