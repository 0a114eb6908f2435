"""benchmarks/bench_idkl.py: its worker builds what `vireid train idkl_sysu` builds from this tree, and the roofline
adds up (a tiny IDKL, so it runs in seconds)."""


import pytest
import torch

from benchmark_modules import load

TINY = ["--depth", "18", "--height", "64", "--width", "32", "--classes", "7", "--warmup", "0", "--repeats", "1",
        "--threads", "1"]


@pytest.fixture(scope="module")
def bench():
    return load("bench_idkl")


def args_of(bench, extra=()):
    return bench.parse_args(TINY + list(extra))


def test_training_setup_builds_the_preset_and_steps(bench):
    """The worker's build follows the current schema (it once imported a class issue 22 had renamed)."""
    args = args_of(bench, ["--override", "train.lr=1e-3"])
    cfg, recipe, trainer, batch = bench.training_setup(args)
    assert cfg["train"]["lr"] == 1e-3 and trainer.cfg.lr == 1e-3
    assert cfg["data"]["height"] == 64 and cfg["model"]["depth"] == 18
    before = [p.detach().clone() for p in recipe.model.parameters()]
    recipe.model.train()
    trainer.train_step(batch)
    assert any(not torch.equal(a, p) for a, p in zip(before, recipe.model.parameters()))


def test_roofline_adds_up(bench):
    torch.set_num_threads(1)
    res = bench.roofline(args_of(bench))
    flops = res["gflop_per_step"]
    assert flops["aten.convolution"] > 0
    # backward convolutions do about twice the forward work (input and weight gradients, none for the images)
    assert 1.5 < flops["aten.convolution_backward"] / flops["aten.convolution"] < 2.1
    assert 0 < res["conv_share_of_profiled_step"] < 1
    assert res["bound_if_only_convolutions_remain"] == pytest.approx(1 / res["conv_share_of_profiled_step"], rel=1e-2)
    assert res["bound_if_convolutions_ran_at_gemm_rate_and_nothing_else"] > 0
    assert "aten::convolution_backward" in res["top_ops_s"]
