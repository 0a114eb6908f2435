"""Time IDKL: one training step (forward, all losses, backward, Adam) and test-path throughput.

CPU defaults reproduce the reference measurement in ../shared/reference/idkl-reference.md
section 9 (8 images in sampler order, 3x384x128, fp32, SYSU loss settings, Adam
lr 3.5e-4 wd 5e-3; inference at batch 32, median of 5 after warm-up):

    PYTHONPATH=src python3 benchmarks/bench_idkl.py --threads 2

It runs fp32 in the default and the channels_last memory format. On CUDA it runs
fp32 and bf16 autocast + channels_last, and reports peak memory:

    PYTHONPATH=src python3 benchmarks/bench_idkl.py --device cuda --train-batch 120 --height 384 --width 144

Random init (no checkpoint download); timings do not depend on the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from vireid.losses import IDKLLossSettings, idkl_total_loss
from vireid.losses.idkl import PAPER
from vireid.models.idkl import IDKL

PAPER_MODEL = dict(gates="se", in_affine=False, confuser="grl", head_input="pooled", entropy_classifier="specific",
                   raw_sp_reid=True)


def sampler_batch(n: int, h: int, w: int, k: int, device):
    """n images as the cross-modality sampler yields them: identity runs of 2k, I, V, I, V, ..."""
    if n % (2 * k):
        raise ValueError(f"train batch {n} is not a multiple of 2*k = {2 * k}")
    labels = torch.arange(n // (2 * k)).repeat_interleave(2 * k)
    modality = torch.tensor([1, 0]).repeat(n // 2)
    return torch.randn(n, 3, h, w), labels, modality


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def gemm_gflops(device) -> float:
    """GEMM rate of a 2048^3 matmul: this VM's speed drifts, so print it next to every timing."""
    a = torch.randn(2048, 2048, device=device)
    a @ a
    sync(device)
    t0 = time.perf_counter()
    a @ a
    sync(device)
    return round(2 * 2048**3 / (time.perf_counter() - t0) / 1e9, 1)


def bench(args, device, bf16: bool, channels_last: bool) -> dict:
    gemm_before = gemm_gflops(device)
    torch.manual_seed(0)
    paper = args.variant == "idkl_paper"
    model = IDKL(num_classes=args.classes, depth=args.depth, **(PAPER_MODEL if paper else {})).to(device)
    settings = IDKLLossSettings(**PAPER) if paper else IDKLLossSettings()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-3)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext)
    x, y, m = sampler_batch(args.train_batch, args.height, args.width, args.k, device)
    x, y, m = x.to(device, memory_format=fmt), y.to(device), m.to(device)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with amp() if bf16 else amp():
            out = model(x, m)
        out = {k: (v.float() if torch.is_tensor(v) else [t.float() for t in v]) for k, v in out.items()}
        loss, _ = idkl_total_loss(out, y, m, settings)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_times = timed(step, device, args.warmup, args.repeats)
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

    xi = torch.randn(args.infer_batch, 3, args.height, args.width).to(device, memory_format=fmt)
    model.eval()

    def infer():
        with torch.inference_mode(), (amp() if bf16 else amp()):
            model(xi)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    infer_times = timed(infer, device, 1, args.repeats)
    infer_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    med_train, med_infer = statistics.median(train_times), statistics.median(infer_times)
    return {
        "device": str(device), "bf16": bf16, "channels_last": channels_last, "variant": args.variant,
        "train_batch": args.train_batch, "infer_batch": args.infer_batch, "size": [args.height, args.width],
        "train_step_s": round(med_train, 4), "train_img_per_s": round(args.train_batch / med_train, 2),
        "train_times_s": [round(t, 3) for t in train_times],
        "infer_img_per_s": round(args.infer_batch / med_infer, 2), "infer_times_s": [round(t, 3) for t in infer_times],
        "gemm_gflops_before_after": [gemm_before, gemm_gflops(device)],
        "train_peak_gib": train_peak and round(train_peak, 2), "infer_peak_gib": infer_peak and round(infer_peak, 2),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--variant", choices=("idkl", "idkl_paper"), default="idkl")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--classes", type=int, default=395)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--k", type=int, default=2, help="images per identity per modality in the train batch")
    ap.add_argument("--infer-batch", type=int, default=32)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # (bf16 autocast, channels_last): fp32 in both memory formats on CPU; fp32 and bf16 +
    # channels_last on CUDA
    runs = [(False, False), (True, True)] if device.type == "cuda" else [(False, False), (False, True)]
    results = []
    for bf16, cl in runs:
        r = bench(args, device, bf16, cl)
        results.append(r)
        print(json.dumps(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
