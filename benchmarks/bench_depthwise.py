"""EfficientNet on the CPU: the tiled 5x5 depthwise weight gradient against the stock one, op by op and per step.

    PYTHONPATH=src python3 benchmarks/bench_depthwise.py --threads 1 --rounds 6 \
        --out benchmarks/results/bench_depthwise.json

Ops: the weight gradient of each 5x5 depthwise shape EfficientNet-Lite0 trains at the demo's 128x64 (batch 32),
stock (``aten.convolution_backward``) and tiled (``depthwise_weight_grad``), channels_last. Steps: a training step
(``Trainer.train_step``) of the demo preset (``demo_imagenet``: blocks 0-10 frozen, 128x64, batch 32) and of the
AGW preset fully fine-tuned from ImageNet at 64x32 (batch 64, the ImageNet ablation's rows), each built twice in
this process (tiles on, tiles off) and timed alternately, round after round; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vireid.models.backbones import depthwise

# (batch, channels, height, width, stride) of the 5x5 depthwise convolutions of EfficientNet-Lite0 at 128x64 with
# the re-ID last stride 1, batch 32
OPS = [(32, 144, 32, 16, 2), (32, 240, 16, 8, 1), (32, 480, 8, 4, 1), (32, 672, 8, 4, 1), (32, 1152, 8, 4, 1)]
STEPS = {
    "demo_imagenet (blocks 0-10 frozen, 128x64, batch 32)": ("demo_imagenet", []),
    "agw_sysu on ImageNet EfficientNet, all trained, 64x32, batch 64": (
        "agw_sysu", ["model.backbone=efficientnet_lite0", "model.pretrained=imagenet", "data.height=64",
                     "data.width=32", "train.channels_last=true"]),
}


def timed(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def weight_grad_pair(b: int, c: int, h: int, w: int, stride: int):
    """(stock, tiled) closures computing the 5x5 depthwise weight gradient of one shape, channels_last."""
    x = torch.randn(b, c, h, w).contiguous(memory_format=torch.channels_last)
    weight = torch.empty(c, 1, 5, 5)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    grad = torch.randn(b, c, ho, wo).contiguous(memory_format=torch.channels_last)

    def stock():
        torch.ops.aten.convolution_backward(grad, x, weight, None, (stride, stride), (2, 2), (1, 1), False, (0, 0),
                                            c, (False, True, False))

    def tiles():
        depthwise.depthwise_weight_grad(grad, x, weight.shape, stride, 2)

    return stock, tiles


def bench_ops(repeats: int) -> list[dict]:
    rows = []
    for b, c, h, w, stride in OPS:
        stock, tiles = weight_grad_pair(b, c, h, w, stride)
        s, t = timed(stock, repeats), timed(tiles, repeats)
        rows.append({"shape": [b, c, h, w], "stride": stride, "stock_ms": round(s * 1e3, 2),
                     "tiles_ms": round(t * 1e3, 2), "x": round(s / t, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def build_step(preset: str, overrides: list[str], tiles: bool):
    from vireid.app.runs import resolve_config
    from vireid.engine.trainer import Trainer
    from vireid.methods import build_recipe
    from vireid.schema import TrainSettings, parse_section

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_idkl import loader_batch

    torch.manual_seed(0)
    cfg = resolve_config(preset, overrides)
    recipe = build_recipe(cfg, 168)
    trainer = Trainer(recipe, [], parse_section(TrainSettings, cfg["train"], "train"),
                      tempfile.mkdtemp(prefix="bench-dw-"), progress=False)
    data = cfg["data"]
    batch = loader_batch(2 * data["p"] * data["k"], data["k"], data["height"], data["width"])
    recipe.model.train()

    def step():
        depthwise._tiles_help = (lambda: True) if tiles else (lambda: False)
        trainer.train_step(batch)
    return step


def bench_steps(rounds: int, steps: int) -> dict:
    out = {}
    for label, (preset, overrides) in STEPS.items():
        on, off = build_step(preset, overrides, True), build_step(preset, overrides, False)
        for fn in (on, off):
            fn()
        ratios, t_on, t_off = [], [], []
        for r in range(rounds):  # the order alternates, so neither side always runs first
            if r % 2:
                b, a = timed(on, steps), timed(off, steps)
            else:
                a, b = timed(off, steps), timed(on, steps)
            t_on.append(b)
            t_off.append(a)
            ratios.append(a / b)
        out[label] = {"stock_step_s": round(statistics.median(t_off), 3),
                      "tiles_step_s": round(statistics.median(t_on), 3),
                      "x_median": round(statistics.median(ratios), 3), "x_per_round": [round(v, 3) for v in ratios]}
        print(label, json.dumps(out[label]), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10, help="repeats per op timing")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per step timing")
    ap.add_argument("--steps", type=int, default=2, help="training steps per timing")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"threads": args.threads, "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
           "ops": bench_ops(args.repeats), "steps": bench_steps(args.rounds, args.steps)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
