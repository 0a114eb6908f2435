import random

import numpy as np
import pytest
import torch

from vireid.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vireid.engine.optim import build_optimizer, lr_factor, set_lr


def test_checkpoint_round_trip_with_rng_state(tmp_path):
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "epoch": 4, "rng": rng_state(), "config": {"a": [1, 2]}}
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = load_checkpoint(path)  # weights_only=True inside
    set_rng_state(loaded["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and loaded["epoch"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": np.float64(1.0)}, path)  # numpy scalars need unpickling of arbitrary classes
    with pytest.raises(ValueError, match="only tensors and plain Python types"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_save_leaves_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"bad": lambda: 0})  # lambdas cannot be saved
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_schedules():
    assert lr_factor(0, schedule="multistep", epochs=10, warmup_epochs=2, warmup_start=0.1) == pytest.approx(0.1)
    assert lr_factor(1, schedule="multistep", epochs=10, warmup_epochs=2, warmup_start=0.1) == pytest.approx(0.55)
    assert lr_factor(5, schedule="multistep", epochs=10, milestones=[4, 8]) == pytest.approx(0.1)
    assert lr_factor(9, schedule="multistep", epochs=10, milestones=[4, 8]) == pytest.approx(0.01)
    assert lr_factor(10, schedule="cosine", epochs=10) == pytest.approx(0.0)
    assert lr_factor(5, schedule="cosine", epochs=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(1, schedule="step", epochs=3)


def test_optimizer_param_group_multipliers():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = build_optimizer([{"params": a.parameters(), "lr_mult": 0.1}, {"params": b.parameters()}],
                          "sgd", lr=0.1, weight_decay=5e-4)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.05])
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer([{"params": a.parameters()}], "rmsprop", lr=0.1, weight_decay=0)


def test_truncated_and_foreign_checkpoints_are_named_plainly(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.ones(4)}, "epoch": 2})
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_checkpoint(truncated)
    foreign = tmp_path / "notes.pt"
    foreign.write_text("these are not weights")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_checkpoint(foreign)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="holds a list, not a checkpoint"):
        load_checkpoint(listed)
