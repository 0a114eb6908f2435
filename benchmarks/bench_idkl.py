"""Time IDKL: one training step (forward, all losses, backward, Adam) and test-path throughput.

CPU defaults reproduce the reference measurement in ../shared/reference/idkl-reference.md
section 9 (8 images in sampler order, 3x384x128, fp32, SYSU loss settings, Adam
lr 3.5e-4 wd 5e-3; inference at batch 32, median of 5 after warm-up):

    PYTHONPATH=src python3 benchmarks/bench_idkl.py --threads 2

It runs fp32 in the default and the channels_last memory format. On CUDA it runs
fp32 and bf16 autocast + channels_last, and reports peak memory:

    PYTHONPATH=src python3 benchmarks/bench_idkl.py --device cuda --train-batch 120 --height 384 --width 144

Random init (no checkpoint download); timings do not depend on the weights.

Side by side with an earlier commit (CPU), interleaved in one run:

    PYTHONPATH=src python3 benchmarks/bench_idkl.py --compare-ref 300259c --threads 2 --rounds 7

measures the working tree and each ``--compare-ref`` commit (extracted with ``git archive``) in
turn, round after round, each in its own worker process importing that tree's ``vireid``. A step is
what ``vireid train idkl_sysu`` runs (the preset, the trainer's step and optimiser, its memory
format); inference is the recipe's ``embed`` at batch 32 as the evaluation calls it. The first
commit's worker also times an emulation of the released code's test path (both branches and the
purifier, the feature from the shared one; idkl-reference.md sections 6 and 9), since the released
code is not available here. See ``compare`` for what is printed and written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# ----------------------------------------------------------------------------- side by side (--compare-ref)

WORKTREE = "worktree"


def preset_overrides(args) -> list[str]:
    """The preset's data section resized to the benchmark's batch and image size; random init."""
    return [f"data.height={args.height}", f"data.width={args.width}", f"data.p={args.train_batch // (2 * args.k)}",
            f"data.k={args.k}", "model.pretrained=null", f"model.depth={args.depth}"]


def loader_batch(n: int, k: int, h: int, w: int):
    """n images in the training loader's layout: n/2 visible then n/2 infrared, same identities in the same
    order, k per identity and modality (the recipe interleaves them into the sampler's I,V,I,V runs)."""
    from vireid.data.records import INFRARED, VISIBLE

    pids = torch.arange(n // (2 * k)).repeat_interleave(k).repeat(2)
    modality = torch.cat([torch.full((n // 2,), VISIBLE), torch.full((n // 2,), INFRARED)])
    return torch.randn(n, 3, h, w), pids, torch.zeros(n, dtype=torch.long), modality


def reference_test_path(model, images: torch.Tensor) -> torch.Tensor:
    """The released code's eval forward, emulated with vireid's modules: it runs the trunk, both branches
    and the purifier and returns the shared BN-neck feature (idkl-reference.md section 6: the specific
    branch is computed and thrown away)."""
    x = model.trunk(images)
    x_sh, x_sp = model.branch_sh(x), model.branch_sp(x)
    model.pool(model.purifier(x_sp)["out"])  # f_sp: computed, unused by the test feature
    return model.bn_neck(model.pool(x_sh))


def training_setup(args):
    """What `vireid train idkl_sysu` builds, from the importable vireid: (config, recipe, trainer, one batch).

    Works on trees from before and after the train section became ``schema.TrainSettings`` (it was
    ``engine.trainer.TrainConfig``), so ``--compare-ref`` can time older commits."""
    from vireid.app.runs import resolve_config
    from vireid.engine import trainer as trainer_module
    from vireid.methods import build_recipe

    torch.manual_seed(0)
    cfg = resolve_config("idkl_sysu", preset_overrides(args) + list(args.override or ()))
    recipe = build_recipe(cfg, args.classes)
    if hasattr(trainer_module, "TrainConfig"):
        train_cfg = trainer_module.TrainConfig.from_dict(cfg["train"])
    else:
        from vireid.schema import TrainSettings, parse_section

        train_cfg = parse_section(TrainSettings, cfg["train"], "train")
    trainer = trainer_module.Trainer(recipe, [], train_cfg, tempfile.mkdtemp(prefix="bench-idkl-"), progress=False)
    return cfg, recipe, trainer, loader_batch(args.train_batch, args.k, args.height, args.width)


def roofline(args) -> dict:
    """How far the training step is from this machine's arithmetic limit (working tree, in process).

    Counts the step's floating-point operations (torch.utils.flop_counter), times one profiled step by
    operator, and measures the fp32 GEMM rate at the same thread count. Two bounds follow: if every
    operator but the convolutions cost nothing (step / convolution time), and if the convolutions also
    ran at the GEMM rate (step / (convolution FLOPs / GEMM rate)). A target above both cannot be met in
    fp32 on this machine by scheduling, fusion or memory layout."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    if args.threads:
        torch.set_num_threads(args.threads)
    _, recipe, trainer, batch = training_setup(args)
    recipe.model.train()
    times = timed(lambda: trainer.train_step(batch), torch.device("cpu"), args.warmup, args.repeats)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    flops = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    conv_flops = sum(v for k, v in flops.items() if "convolution" in k)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step(batch)
    by_op = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    profiled = sum(by_op.values())
    conv_s = sum(v for k, v in by_op.items() if k in ("aten::convolution_backward", "aten::mkldnn_convolution",
                                                        "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward",
                                                        "aten::thnn_conv2d"))
    gemm = max(gemm_gflops(torch.device("cpu")) for _ in range(3))
    step = statistics.median(times)
    conv_share = conv_s / profiled
    return {
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "step_s_median": round(step, 3), "step_times_s": [round(t, 3) for t in times],
        "gflop_per_step": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "conv_share_of_profiled_step": round(conv_share, 3),
        "conv_s_in_step": round(conv_share * step, 3),
        "conv_gflop_per_s": round(conv_flops / 1e9 / (conv_share * step), 1),
        "gemm_gflop_per_s": gemm,
        "conv_rate_vs_gemm": round(conv_flops / 1e9 / (conv_share * step) / gemm, 3),
        "bound_if_only_convolutions_remain": round(1 / conv_share, 3),
        "bound_if_convolutions_ran_at_gemm_rate_and_nothing_else": round(step / (conv_flops / 1e9 / gemm), 3),
        "top_ops_s": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]},
    }


def worker(args) -> None:
    """Serve timing requests on stdin ("train N", "infer N", "infer_ref N", "quit"); answer one JSON line each.

    Everything is built from the importable vireid (PYTHONPATH picks the tree), the way a training run
    builds it: the preset, the recipe, the trainer (optimiser, memory format) and its step."""
    import copy

    import vireid
    from vireid.methods import build_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, recipe, trainer, batch = training_setup(args)
    train_cfg = trainer.cfg
    torch.manual_seed(0)
    # inference on its own copy, never trained: an evaluation sees fixed weights (IDKL's CPU test path is
    # rebuilt after every weight change, which the training steps here would otherwise cause)
    infer_recipe = build_recipe(cfg, args.classes)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.infer_batch, 3, args.height, args.width, generator=gen)
    modality = torch.zeros(args.infer_batch, dtype=torch.long)
    reference = None
    if args.reference_path:  # its own contiguous copy: the released code has no channels_last
        reference = copy.deepcopy(infer_recipe.model).to(memory_format=torch.contiguous_format).eval()

    def train():
        recipe.model.train()
        trainer.train_step(batch)

    def infer():
        infer_recipe.model.eval()
        infer_recipe.embed(images, modality)

    def infer_ref():
        with torch.no_grad():
            reference_test_path(reference, images)

    jobs = {"train": train, "infer": infer, "infer_ref": infer_ref}
    hello = {"vireid": str(Path(vireid.__file__).resolve().parent), "channels_last": bool(train_cfg.channels_last),
             "optimizer": type(trainer.optimizer).__name__,
             "optimizer_defaults": {k: v for k, v in trainer.optimizer.defaults.items()
                                    if k in ("foreach", "fused", "lr", "weight_decay")},
             "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        name, _, count = line.strip().partition(" ")
        if name == "quit":
            break
        times = []
        for _ in range(int(count or 1)):
            t0 = time.perf_counter()
            jobs[name]()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


class Worker:
    """A worker process on one tree's src/ (the harness is this file for every tree)."""

    def __init__(self, label: str, src: Path, args, reference_path: bool, overrides=()):
        cmd = [sys.executable, __file__, "--worker", "--threads", str(args.threads), "--height", str(args.height),
               "--width", str(args.width), "--train-batch", str(args.train_batch), "--k", str(args.k),
               "--infer-batch", str(args.infer_batch), "--classes", str(args.classes), "--depth", str(args.depth)]
        if reference_path:
            cmd.append("--reference-path")
        for item in overrides:
            cmd += ["--override", item]
        env = dict(os.environ, PYTHONPATH=str(src))
        self.label = label
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()
        if Path(self.info["vireid"]) != (src / "vireid").resolve():
            raise RuntimeError(f"worker {label} imported vireid from {self.info['vireid']}, not {src / 'vireid'}")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} exited (status {self.proc.wait()}); see its error above")
        return json.loads(line)

    def run(self, job: str, count: int) -> list[float]:
        self.proc.stdin.write(f"{job} {count}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def extract_commit(commit: str, into: Path) -> tuple[str, Path]:
    """(full hash, src/ of the commit's tree extracted under ``into``)."""
    root = Path(__file__).resolve().parents[1]
    full = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", f"{commit}^{{commit}}"],
                          capture_output=True, text=True)
    if full.returncode:
        raise SystemExit(f"--compare-ref {commit}: not a commit of {root} ({full.stderr.strip()})")
    full_hash = full.stdout.strip()
    dest = into / full_hash[:12]
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", full_hash, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return full_hash, dest / "src"


def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": round(statistics.median(values), 4), "q1": round(q[0], 4), "q3": round(q[2], 4),
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def compare(args) -> dict:
    """Rounds of (each tree: ``--steps`` training steps, one inference batch; the first commit's tree: one
    batch of the reference test path), the tree order rotating every round. Reports per tree the median
    step time and inference rate with quartiles, and the speed-ups as medians of per-round ratios (each
    round's trees ran back to back, so a ratio sees one load level)."""
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="bench-idkl-trees-"))
    trees = [(commit, *extract_commit(commit, tmp)) for commit in args.compare_ref]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                                capture_output=True, text=True).stdout.strip())
    trees.append((WORKTREE, f"{head}{'+uncommitted' if dirty else ''}", root / "src"))
    variants = [(f"{WORKTREE}[{item}]", trees[-1][1], root / "src", item) for item in args.worktree_variant or ()]
    load_before = os.getloadavg()
    workers = []
    try:
        for i, (label, _, src) in enumerate(trees):
            workers.append(Worker(label, src, args, reference_path=i == 0))
        for label, _, src, item in variants:
            workers.append(Worker(label, src, args, reference_path=False, overrides=[item]))
        for w in workers:  # warm-up: allocator, oneDNN primitive caches
            w.run("train", args.warmup)
            w.run("infer", 1)
        workers[0].run("infer_ref", 1)
        train = {w.label: [] for w in workers}
        infer = {w.label: [] for w in workers}
        ref, gemm, rounds = [], [], []
        for r in range(args.rounds):
            gemm.append(gemm_gflops(torch.device("cpu")))
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            row = {}
            for w in order:
                times = w.run("train", args.steps)
                train[w.label] += times
                row[w.label] = {"train_s": statistics.median(times)}
            for w in order:
                t = w.run("infer", 1)[0]
                infer[w.label].append(t)
                row[w.label]["infer_s"] = t
            ref.append(workers[0].run("infer_ref", 1)[0])
            row["reference_test_path_s"] = ref[-1]
            rounds.append(row)
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                f"{k} step {v['train_s']:.2f} s, infer {args.infer_batch / v['infer_s']:.1f} img/s"
                for k, v in row.items() if isinstance(v, dict))
                + f"  reference path {args.infer_batch / ref[-1]:.1f} img/s", flush=True)
    finally:
        for w in workers:
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)
    base = workers[0].label
    result = {
        "command": "PYTHONPATH=src python3 benchmarks/bench_idkl.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()], "gemm_gflops_per_round": gemm},
        "setup": {"train_batch": args.train_batch, "k": args.k, "size": [args.height, args.width],
                  "infer_batch": args.infer_batch, "classes": args.classes, "depth": args.depth,
                  "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup,
                  "preset": "idkl_sysu", "overrides": preset_overrides(args)},
        "trees": {w.label: {"commit": tree[1], **({"override": tree[3]} if len(tree) > 3 else {}), **w.info}
                  for w, tree in zip(workers, trees + variants)},
        "train_step_s": {k: spread(v) for k, v in train.items()},
        "infer_img_per_s": {k: spread([args.infer_batch / t for t in v]) for k, v in infer.items()},
        "reference_test_path_img_per_s": spread([args.infer_batch / t for t in ref]),
        "rounds": rounds,
    }
    result["train_speedup_vs_" + base] = {
        k: spread([row[base]["train_s"] / row[k]["train_s"] for row in rounds]) for k in train}
    result["infer_speedup_vs_" + base] = {
        k: spread([row[base]["infer_s"] / row[k]["infer_s"] for row in rounds]) for k in infer}
    result["infer_speedup_vs_reference_test_path"] = {
        k: spread([row["reference_test_path_s"] / row[k]["infer_s"] for row in rounds]) for k in infer}
    return result


def print_table(res: dict) -> None:
    base = next(iter(res["trees"]))
    print(f"\n{'tree':<36} {'commit':<14} {'step s (median [q1, q3])':<27} {'x vs ' + base:<10} "
          f"{'infer img/s':<22} {'x vs ' + base:<10} {'x vs ref path':<12}")
    for k, info in res["trees"].items():
        t, i = res["train_step_s"][k], res["infer_img_per_s"][k]
        print(f"{k:<36} {info['commit'][:12]:<14} {t['median']:.3f} [{t['q1']:.3f}, {t['q3']:.3f}]{'':<7} "
              f"{res['train_speedup_vs_' + base][k]['median']:<10.3f} "
              f"{i['median']:.2f} [{i['q1']:.2f}, {i['q3']:.2f}]{'':<5} "
              f"{res['infer_speedup_vs_' + base][k]['median']:<10.3f} "
              f"{res['infer_speedup_vs_reference_test_path'][k]['median']:.3f}")
    r = res["reference_test_path_img_per_s"]
    print(f"reference test path (emulated, {base}'s modules, contiguous): {r['median']:.2f} img/s "
          f"[{r['q1']:.2f}, {r['q3']:.2f}]")


def parse_args(argv=None) -> argparse.Namespace:
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
    ap.add_argument("--compare-ref", action="append", metavar="COMMIT",
                    help="time this commit's tree against the working tree, interleaved (CPU; may be repeated: "
                         "the first one is the baseline of the ratios and runs the reference test path)")
    ap.add_argument("--rounds", type=int, default=7, help="--compare-ref: interleaved rounds")
    ap.add_argument("--steps", type=int, default=2, help="--compare-ref: training steps per tree and round")
    ap.add_argument("--worktree-variant", action="append", metavar="KEY=VALUE",
                    help="--compare-ref: also time the working tree with this preset override (may be repeated)")
    ap.add_argument("--roofline", action="store_true",
                    help="count the training step's FLOPs, profile it by operator and compare with the GEMM rate "
                         "(working tree, CPU)")
    ap.add_argument("--override", action="append", metavar="KEY=VALUE",
                    help="preset override for the built run (--roofline, and the workers of --compare-ref)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reference-path", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.roofline:
        res = roofline(args)
        print(json.dumps(res, indent=1))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        return
    if args.compare_ref:
        if args.device != "cpu" or args.variant != "idkl":
            raise SystemExit("--compare-ref times the idkl_sysu preset on the CPU (no --device/--variant)")
        if args.train_batch % (2 * args.k):
            raise SystemExit(f"--train-batch {args.train_batch} is not a multiple of 2*k = {2 * args.k}")
        res = compare(args)
        print_table(res)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        return
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
