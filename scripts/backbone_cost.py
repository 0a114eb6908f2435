"""Parameters, MACs and CPU images/s of the backbones (docs/learning.md).

MACs are counted with ``torch.utils.flop_counter`` (FLOPs / 2) for one image, forward only. Images/s
are measured on the threads given (default 1), inference (eval mode, no grad) and training (forward +
backward of the sum of the output, train mode), after a warm-up.

    taskset -c 0 python scripts/backbone_cost.py --sizes 256x128,128x64,64x32 --json runs/backbone_cost.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def models():
    from vireid.models.backbones import build_trunk

    out = {f"resnet{d}": (lambda d=d: build_trunk("resnet", d, last_stride=1)) for d in (18, 34, 50)}
    for w in ("x1_0", "x0_75", "x0_5", "x0_25"):
        out[f"osnet_{w}"] = lambda w=w: build_trunk(f"osnet_{w}")
    out["efficientnet_lite0"] = lambda: build_trunk("efficientnet_lite0", last_stride=1)
    out["plain_w32"] = lambda: build_trunk("plain_w32")
    return out


def macs(model, size) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, *size))
    return counter.get_total_flops() // 2


def rate(model, size, batch: int, train: bool, seconds: float) -> float:
    x = torch.randn(batch, 3, *size)
    model.train(train)
    done, start = 0, None
    for i in range(1000):
        if train:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
        if i == 1:  # two warm-up iterations
            start = time.perf_counter()
        elif i > 1:
            done += batch
            if time.perf_counter() - start > seconds:
                break
    return done / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256x128,128x64,64x32")
    parser.add_argument("--speed-size", default="64x32", help="input size of the img/s measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    speed = tuple(int(v) for v in args.speed_size.split("x"))
    rows = []
    for name, build in models().items():
        model = build()
        row = {"model": name, "params": sum(p.numel() for p in model.parameters()),
               "gmacs": {f"{h}x{w}": macs(model, (h, w)) / 1e9 for h, w in sizes},
               "speed_size": args.speed_size, "threads": args.threads, "batch": args.batch,
               "infer_img_s": rate(model, speed, args.batch, False, args.seconds),
               "train_img_s": rate(model, speed, args.batch, True, args.seconds)}
        rows.append(row)
        print(f"{name:18s} {row['params'] / 1e6:6.2f} M  " + "  ".join(f"{k} {v:.3f} GMAC" for k, v in
              row["gmacs"].items()) + f"  infer {row['infer_img_s']:.0f} img/s  train {row['train_img_s']:.0f} img/s",
              flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
