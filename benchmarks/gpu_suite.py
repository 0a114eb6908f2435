"""One unattended GPU check of vireid: training and inference speed, exact CUDA evaluation, torchrun, ablation.

    bash benchmarks/gpu_suite.sh --out runs/gpu_suite          # one GPU, under 8 minutes
    bash benchmarks/gpu_suite.sh --out /tmp/smoke --cpu-smoke  # every stage at tiny sizes on the CPU

Stages (each timed, guarded and budgeted; a failing stage is recorded with its
error and the suite goes on; the report is rewritten after every stage, so a
killed suite still leaves what it measured):

* ``environment``: device, versions, the bf16 peak used for MFU, a measured GEMM rate;
* ``data``: synthetic SYSU-layout images on disk (``vireid.synth.generator.generate``);
* ``eval/3803x301``: ``vireid.evaluation.evaluate`` on a SYSU all-search sized problem on the device,
  asserted equal to the CPU result;
* per method (IDKL at 2 x 12 x 5 = 120 images of 384x144, AGW at 8 x (4 + 4) = 64 of 288x144, as released):
  ``flops`` (``FlopCounterMode`` over one training step), ``model/eager`` and ``model/compile`` (forward,
  backward and optimiser step through the recipe's ``training_step`` and the trainer's step, on a
  synthetic batch already on the device), ``pipeline/eager`` and ``pipeline/compile`` (the same step fed by
  the real pipeline: images on disk, the image cache, augmentation, a DataLoader with ``--workers``
  processes, host-to-device copy), ``inference`` (eval-mode ``embed``, batch 256); all in bf16 autocast
  with channels_last on CUDA (fp32 on the CPU, where the trainer does not autocast);
* ``torchrun``: ``torchrun --nproc_per_node 1`` of ``vireid train`` for a few steps, checking that the
  process joined an nccl (gloo on the CPU) group;
* ``ablation``: ``vireid ablate benchmarks/ablation_gpu.yaml`` in the time that is left.

Compiled stages run after every eager stage, so a slow ``torch.compile`` only
costs the ablation its time. Output: ``OUT/gpu_suite.json`` and
``OUT/gpu_suite.md`` (also printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CHILD_FLAG = "--torchrun-child"
CHILD_TAG = "GPU_SUITE_PROCESS_GROUP "

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendor datasheets, matched in this order
# against torch.cuda.get_device_name(); anything else needs --peak-tflops.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0))

# Sizes per mode. "gpu" is the reference setting; "cpu-smoke" runs every stage in seconds on one core.
PROFILES = {
    "gpu": {
        "device": "cuda", "budget_s": 450, "gen": {"ids": 100, "images": 12, "size": (256, 128)},
        "torchrun_gen": {"ids": 20, "images": 4, "size": (128, 64)},
        "methods": {
            # ResNet-50 from a random start on purpose: speed does not depend on the starting weights
            "idkl": {"config": "idkl_sysu", "overrides": ["model.pretrained=none"]},  # 120 images, 384x144
            "agw": {"config": "agw_sysu", "overrides": ["model.pretrained=none"]},    # 64 images, 288x144
        },
        "num_classes": 395,  # SYSU-MM01's training identities: the classifier size of a real run
        "model_steps": (10, 30), "compile_steps": (3, 30), "pipeline_steps": (5, 25), "inference": (256, 3, 15),
        "eval_repeats": 5,
        "torchrun_overrides": ["train.epochs=1", "train.amp=bf16", "train.channels_last=true", "data.workers=4",
                               "model.pretrained=none"],
        "ablation_jobs": 2, "ablation_min_s": 60, "compile_backend": "inductor",
        "budgets": {"data": 60, "eval": 30, "flops": 30, "model": 25, "pipeline": 40, "inference": 20,
                    "compile": 200, "torchrun": 120},
    },
    "cpu-smoke": {
        # A guard only: on a heavily shared core no stage may be skipped for time (~45 s of CPU when quiet).
        "device": "cpu", "budget_s": 900, "gen": {"ids": 8, "images": 2, "size": (32, 16)},
        "torchrun_gen": None,  # the torchrun stage reuses the tiny data set
        "methods": {
            "idkl": {"config": "idkl_sysu", "overrides": ["data.height=32", "data.width=16", "data.p=2", "data.k=2",
                                                          "model.depth=18"]},
            "agw": {"config": "agw_sysu", "overrides": ["data.height=32", "data.width=16", "data.p=2", "data.k=2",
                                                        "model.depth=18", "model.non_local=[0,2,2,0]"]},
        },
        "num_classes": 16,
        "model_steps": (1, 1), "compile_steps": (1, 1), "pipeline_steps": (1, 1), "inference": (8, 1, 1),
        "eval_repeats": 1,
        # the reference IDKL sampler refuses identities with < 4 images in one modality only: tiny data does that
        "torchrun_overrides": ["train.epochs=1", "data.height=32", "data.width=16", "data.p=3", "data.k=4",
                               "model.depth=18", "data.workers=0", "data.cache=false", "data.sampler=balanced"],
        "ablation_jobs": 1, "ablation_min_s": 5, "compile_backend": None,  # dynamo alone costs ~25 s a model here
        # ResNet-18 at 32x16 for every row; AGW's non-local placement shrinks to ResNet-18's 2 layer3 blocks.
        "ablation_smoke": {"budget": {"data": {"height": 32, "width": 16, "p": 3, "k": 4, "workers": 0,
                                               "cache": False, "sampler": "balanced"},
                                      "train": {"epochs": 1, "milestones": [], "lr_factors": [], "amp": "off",
                                                "channels_last": False}},
                           "non_local": [0, 2, 2, 0], "trials": [0], "lr_scale": 0.1},
        "budgets": {"data": 60, "eval": 60, "flops": 60, "model": 60, "pipeline": 60, "inference": 60,
                    "compile": 60, "torchrun": 120},
    },
}


class SuiteStopped(BaseException):
    """SIGTERM/SIGINT: finish the current report and stop (not an Exception, so stages do not swallow it)."""


# ---------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer around it measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> float:
    """Start a peak-memory window; returns the bytes already allocated (weights, optimiser state)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return 0.0


def peak_memory(device: torch.device, resident: float) -> dict:
    """CUDA: max_memory_allocated since :func:`reset_peak`; CPU: the process's max RSS (the nearest measure)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mem_gib": peak / 2**30, "resident_gib": resident / 2**30,
                "peak_mem_kind": "torch.cuda.max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_mem_gib": rss / 2**30, "resident_gib": None, "peak_mem_kind": "process max RSS (cpu)"}


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    """The bf16 peak MFU is measured against, and where it comes from."""
    if given:
        return float(given), "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_BF16_TFLOPS:
            if key in name:
                return value, f"datasheet dense bf16 peak of {key}"
        return None, f"unknown device {name!r}: pass --peak-tflops"
    return None, "no datasheet peak for a CPU: MFU is against the measured GEMM rate"


def gemm_tflops(device: torch.device) -> dict:
    """The rate of one large matmul (bf16 on CUDA, fp32 on CPU): a practical ceiling next to the datasheet."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    repeats = 20 if device.type == "cuda" else 3
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    return {"gemm_n": n, "gemm_dtype": str(dtype).replace("torch.", ""), "gemm_tflops": 2 * n**3 / seconds / 1e12}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def child_env(out: Path) -> dict:
    """Environment of the suite's subprocesses: this checkout's sources first, image caches inside ``out``."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, VIREID_CACHE=str(out / "cache"))


def run_capped(cmd: list[str], timeout: float, cwd: Path, env: dict) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; past ``timeout`` (or when the suite is stopped) the whole group
    (torchrun's worker, DataLoader workers, ablation row processes) is killed, not just the direct child."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=max(timeout, 1.0))
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{' '.join(cmd[:6])} ... did not finish within {timeout:.0f} s; stopped") from None
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- the suite


class Suite:
    """Runs stages under a global deadline and keeps the report on disk up to date."""

    def __init__(self, args, profile: dict):
        self.args, self.profile = args, profile
        self.out = Path(args.out).resolve()  # children run with cwd=out: a relative path would not resolve there
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(profile["device"])
        self.start = time.perf_counter()
        self.budget_s = float(args.budget_s or profile["budget_s"])
        self.report = {"suite": "vireid benchmarks/gpu_suite.py", "mode": args.mode,
                       "command": " ".join(shlex.quote(a) for a in ["benchmarks/gpu_suite.py", *args.argv]),
                       "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "budget_s": self.budget_s, "environment": {}, "stages": []}
        self.methods: dict = {}   # per-method context shared by its stages (recipe, trainer, flops)
        self.data_root: Path | None = None
        self.torchrun_root: Path | None = None

    def remaining(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def stage(self, name: str, fn, budget: float, min_s: float = 0.0) -> dict:
        """Run ``fn(budget)`` (its budget capped by the time left), recording ok/failed/skipped."""
        record = {"name": name, "status": "running", "budget_s": round(budget, 1)}
        self.report["stages"].append(record)
        left = self.remaining()
        skip = name.split("/")[0] in self.args.skip or name in self.args.skip
        if skip or left < max(min_s, 1.0):
            record.update(status="skipped", seconds=0.0,
                          note="skipped by --skip" if skip else f"{left:.0f} s left, the stage needs {min_s:.0f} s")
            self._print(record)
            self.write()
            return record
        self.write()
        begin = time.perf_counter()
        try:
            result = fn(min(budget, left))
            if isinstance(result, tuple):  # (result, note)
                result, note = result
                record["note"] = note
            if result is None:
                record.update(status="skipped")
            else:
                record.update(status="ok", result=result)
        except SuiteStopped:
            record.update(status="failed", error="stopped by a signal")
            raise
        except Exception as exc:  # a failing stage must not end the suite
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=tail(traceback.format_exc(), 12))
        finally:
            record["seconds"] = round(time.perf_counter() - begin, 2)
            self._print(record)
            self.write()
        return record

    def _print(self, record: dict) -> None:
        detail = record.get("error") or record.get("note") or headline(record.get("result") or {})
        print(f"[{time.perf_counter() - self.start:6.1f} s] {record['name']:<24} {record['status']:<8} "
              f"{record.get('seconds', 0):6.1f} s  {detail}", flush=True)

    def write(self) -> None:
        self.report["wall_s"] = round(time.perf_counter() - self.start, 1)
        # Written to a temporary name and renamed: a suite killed mid-write keeps the previous report.
        for name, text in (("gpu_suite.json", json.dumps(self.report, indent=2, default=_plain) + "\n"),
                           ("gpu_suite.md", markdown(self.report))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.out / name)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def headline(result: dict) -> str:
    keys = ("img_per_s", "mfu", "peak_mem_gib", "gflop_per_img", "identical", "steps", "process_group", "rows")
    parts = []
    for key in keys:
        value = result.get(key)
        if value is None:
            continue
        parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


# ---------------------------------------------------------------- stages


def stage_environment(suite: Suite, budget: float) -> dict:
    device = suite.device
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": str(device),
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible to torch; use --cpu-smoke for a CPU dry run")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_benchmark=True)
    else:
        env["device_name"] = cpu_name()
    peak, source = peak_tflops(device, suite.args.peak_tflops)
    env.update(gemm_tflops(device))
    env["peak_tflops"], env["peak_source"] = peak, source
    env["mfu_reference_tflops"] = peak or env["gemm_tflops"]
    suite.report["environment"] = env
    return env


def stage_data(suite: Suite, budget: float) -> dict:
    from vireid.synth.generator import generate

    gen = suite.profile["gen"]
    workers = os.cpu_count() if suite.device.type == "cuda" else 1
    start = time.perf_counter()
    root = suite.out / "data" / "sysu"
    summary = generate(root, "sysu", gen["ids"], seed=12, size=gen["size"], images=gen["images"], workers=workers,
                       overwrite=True)
    result = {"root": str(root), "images": summary["images"], "ids": gen["ids"], "image_size": list(gen["size"]),
              "generate_s": time.perf_counter() - start}
    suite.data_root = suite.torchrun_root = root
    small = suite.profile.get("torchrun_gen")
    if small:
        start = time.perf_counter()
        suite.torchrun_root = suite.out / "data" / "sysu_small"
        generate(suite.torchrun_root, "sysu", small["ids"], seed=13, size=small["size"], images=small["images"],
                 workers=workers, overwrite=True)
        result["torchrun_data_s"] = time.perf_counter() - start
    result["img_per_s"] = summary["images"] / result["generate_s"]
    return result


def sysu_sized_problem(seed: int = 0):
    """A 3803 x 301 distance matrix with SYSU all-search's shape and camera layout: 3803 infrared queries
    (cameras 3 and 6) of 96 test identities against one visible image per identity and camera (301 of
    cameras 1, 2, 4, 5). Distances are rounded to 3 decimals so ties occur and the tie rule is compared too."""
    rng = np.random.default_rng(seed)
    ids = 96
    pairs = [(pid, cam) for pid in range(ids) for cam in (1, 2, 4, 5)]
    keep = sorted(rng.choice(len(pairs), size=301, replace=False))
    g_pids = np.array([pairs[i][0] for i in keep])
    g_cams = np.array([pairs[i][1] for i in keep])
    q_pids = np.sort(rng.integers(0, ids, size=3803))
    q_cams = rng.choice([3, 6], size=3803)
    centres = rng.normal(size=(ids, 64)).astype(np.float32)
    q = centres[q_pids] + 1.5 * rng.normal(size=(3803, 64)).astype(np.float32)
    g = centres[g_pids] + 1.5 * rng.normal(size=(301, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    dist = np.round(1.0 - q @ g.T, 3).astype(np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def _time_evaluate(evaluate, args, device, repeats: int):
    result = evaluate(*args, rule="sysu", max_rank=20)  # warm-up (CUDA context, kernels)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = evaluate(*args, rule="sysu", max_rank=20)
    sync(device)
    return result, (time.perf_counter() - start) / repeats


def stage_eval(suite: Suite, budget: float) -> dict:
    from vireid.evaluation import evaluate

    dist, q_pids, g_pids, q_cams, g_cams = sysu_sized_problem()
    cpu_args = tuple(torch.from_numpy(a) for a in (dist, q_pids, g_pids, q_cams, g_cams))
    repeats = suite.profile["eval_repeats"]
    cpu, cpu_s = _time_evaluate(evaluate, cpu_args, torch.device("cpu"), repeats)
    dev_args = tuple(a.to(suite.device) for a in cpu_args)
    dev, dev_s = _time_evaluate(evaluate, dev_args, suite.device, repeats)
    diffs = {"cmc": float(np.abs(dev["cmc"] - cpu["cmc"]).max()), "mAP": abs(dev["mAP"] - cpu["mAP"]),
             "mINP": abs(dev["mINP"] - cpu["mINP"])}
    identical = (np.array_equal(dev["cmc"], cpu["cmc"]) and dev["num_valid_q"] == cpu["num_valid_q"]
                 and dev["mAP"] == cpu["mAP"] and dev["mINP"] == cpu["mINP"])
    result = {"queries": dist.shape[0], "gallery": dist.shape[1], "device": str(suite.device),
              "rank1": float(cpu["cmc"][0]), "mAP": cpu["mAP"], "mINP": cpu["mINP"],
              "num_valid_q": cpu["num_valid_q"], "cpu_s": cpu_s, "device_s": dev_s, "identical": identical,
              "max_abs_diff": diffs}
    # Ranks and CMC are integer counts: they must match exactly. mAP/mINP are float64 means of 3803 values,
    # whose summation order may differ between devices in the last bit; more than that is a real difference.
    if not np.array_equal(dev["cmc"], cpu["cmc"]) or dev["num_valid_q"] != cpu["num_valid_q"]:
        raise AssertionError(f"CMC on {suite.device} differs from the CPU: {dev['cmc'][:5]} vs {cpu['cmc'][:5]}")
    if diffs["mAP"] > 1e-12 or diffs["mINP"] > 1e-12:
        raise AssertionError(f"mAP/mINP on {suite.device} differ from the CPU by {diffs}")
    note = None if suite.device.type == "cuda" else "device is the CPU: the comparison is CPU against CPU"
    return (result, note) if note else result


class MethodContext:
    """One method's recipe, trainer and FLOP count, shared by its stages (one model, eager or compiled)."""

    def __init__(self, suite: Suite, name: str):
        from vireid.app.runs import data_settings, resolve_config_path, run_defaults
        from vireid.config import load_config
        from vireid.engine.optim import set_lr
        from vireid.engine.trainer import Trainer
        from vireid.methods import build_recipe
        from vireid.schema import TrainSettings, parse_section

        spec = suite.profile["methods"][name]
        self.name, self.device = name, suite.device
        self.cfg = load_config(resolve_config_path(spec["config"]), spec["overrides"], defaults=run_defaults)
        self.data = data_settings(self.cfg)
        torch.manual_seed(0)
        self.recipe = build_recipe(self.cfg, suite.profile["num_classes"])
        train = dict(self.cfg["train"])
        train.pop("seed", None)
        train.pop("deterministic", None)
        # The run's own optimiser and schedule; bf16 autocast + channels_last as a GPU run would set them.
        # Compilation is applied per stage below (exactly what the trainer does for train.compile=true).
        self.train_cfg = dataclasses.replace(parse_section(TrainSettings, train, "train"), amp="bf16",
                                             channels_last=True, compile=False, log_every=10**9)
        self.trainer = Trainer(self.recipe, None, self.train_cfg, suite.out / "runs" / name, device=suite.device,
                               progress=False)
        set_lr(self.trainer.optimizer, self.trainer._lr_factor(0.0))  # the LR of a run's first step
        self.eager_model = self.trainer.train_model
        self.compiled_model = None
        self.flops_per_step: float | None = None
        p, k = self.data.p, self.data.k
        self.size = (self.data.height, self.data.width)
        self.batch = 2 * p * k

    def synthetic_batch(self):
        """What the cross-modality sampler yields (P*K visible, then P*K infrared, same identity order),
        as random images already on the device."""
        from vireid.data.records import INFRARED, VISIBLE
        from vireid.engine.trainer import _channels_last

        p, k = self.data.p, self.data.k
        g = torch.Generator().manual_seed(0)
        pids = torch.arange(p).repeat_interleave(k).repeat(2)
        modality = torch.tensor([VISIBLE] * (p * k) + [INFRARED] * (p * k))
        camids = torch.where(modality == VISIBLE, 1, 3)
        images = torch.randn(self.batch, 3, *self.size, generator=g)
        return _channels_last(tuple(t.to(self.device) for t in (images, pids, camids, modality)))

    def use(self, compiled: bool, backend: str | None) -> None:
        if compiled:
            if backend is None:
                raise RuntimeError("compile is skipped in this mode")
            if self.compiled_model is None:
                self.compiled_model = torch.compile(self.eager_model, backend=backend)
            self.trainer.train_model = self.compiled_model
        else:
            self.trainer.train_model = self.eager_model


def method(suite: Suite, name: str) -> MethodContext:
    if name not in suite.methods:
        suite.methods[name] = MethodContext(suite, name)
    return suite.methods[name]


def stage_flops(suite: Suite, name: str, budget: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    ctx = method(suite, name)
    ctx.use(False, None)
    batch = ctx.synthetic_batch()
    with FlopCounterMode(display=False) as counter:
        ctx.trainer._step(batch)
    ctx.flops_per_step = float(counter.get_total_flops())
    return {"method": name, "config": suite.profile["methods"][name]["config"], "batch": ctx.batch,
            "input": list(ctx.size), "depth": ctx.cfg["model"].get("depth"), "flops_per_step": ctx.flops_per_step,
            "gflop_per_img": ctx.flops_per_step / ctx.batch / 1e9,
            "note": "forward + backward, counted by torch.utils.flop_counter.FlopCounterMode (2 per MAC)"}


def timed_loop(step, next_batch, batch_size: int, device, warmup: int, steps: int, budget: float,
               min_steps: int = 5) -> dict:
    """``warmup`` untimed steps (compilation, cuDNN autotuning, worker start-up), then up to ``steps`` timed
    ones, stopping early (after at least ``min_steps``) once ``budget`` seconds are spent in all;
    synchronises before and after the timed part."""
    begin = time.perf_counter()
    first = None
    for i in range(warmup):
        step(next_batch())
        if i == 0:
            sync(device)
            first = time.perf_counter() - begin
    sync(device)
    warm_s = time.perf_counter() - begin
    start = time.perf_counter()
    done, waited = 0, 0.0
    while done < steps and (done < min_steps or time.perf_counter() - begin < budget):
        before = time.perf_counter()
        batch = next_batch()
        waited += time.perf_counter() - before
        step(batch)
        done += 1
    sync(device)
    seconds = time.perf_counter() - start
    return {"steps": done, "warmup_steps": warmup, "warmup_s": warm_s, "first_step_s": first,
            "step_ms": 1000 * seconds / done, "img_per_s": done * batch_size / seconds,
            "input_wait_frac": waited / seconds}


def stage_train(suite: Suite, name: str, source: str, compiled: bool, budget: float):
    ctx = method(suite, name)
    backend = suite.profile["compile_backend"]
    if compiled and backend is None:
        return None, "skipped in --cpu-smoke: tracing alone costs ~25 s a model on one core (GPU mode compiles)"
    ctx.use(compiled, backend)
    warmup, steps = suite.profile["compile_steps" if compiled else ("model_steps" if source == "model"
                                                                      else "pipeline_steps")]
    stream = None
    extra = {}
    if source == "model":
        batch = ctx.synthetic_batch()

        def next_batch():
            return batch
    else:
        stream, extra = pipeline_stream(suite, ctx)

        def next_batch():
            return ctx.trainer.to_device(next(stream), ctx.device)
    from vireid.engine.trainer import _channels_last

    resident = reset_peak(ctx.device)
    try:
        result = timed_loop(lambda b: ctx.trainer._step(_channels_last(b)), next_batch, ctx.batch, ctx.device,
                            warmup, steps, budget)
    finally:
        if stream is not None:
            stream.close()  # shuts the DataLoader workers down
    if stream is not None:  # a new epoch restarts the DataLoader workers: say so if the timing includes one
        result["crosses_epoch"] = warmup + result["steps"] > extra["steps_per_epoch"]
    result.update(peak_memory(ctx.device, resident))
    result.update(method=name, source=source, compiled=compiled, batch=ctx.batch, input=list(ctx.size),
                  amp="bf16" if ctx.device.type == "cuda" else "fp32", channels_last=True, **extra)
    if ctx.device.type != "cuda":
        result["amp_note"] = "fp32: the trainer autocasts on CUDA only"
    if compiled:
        result["compile_backend"] = backend
    add_mfu(suite, ctx.flops_per_step, result)
    return result


def add_mfu(suite: Suite, flops_per_step: float | None, result: dict) -> None:
    """Achieved TFLOP/s from the counted FLOPs, and its fraction of the reference peak."""
    env = suite.report["environment"]
    if not flops_per_step or not env.get("mfu_reference_tflops"):
        result["mfu"] = None
        return
    achieved = flops_per_step / (result["step_ms"] / 1000) / 1e12
    result["tflops"] = achieved
    result["mfu"] = achieved / env["mfu_reference_tflops"]
    result["mfu_against"] = env["peak_source"] if env.get("peak_tflops") else "measured GEMM rate"
    if env.get("gemm_tflops"):
        result["fraction_of_gemm"] = achieved / env["gemm_tflops"]  # against what one big matmul reaches here


def pipeline_stream(suite: Suite, ctx: MethodContext):
    """Endless batches from the real pipeline (epoch after epoch), and how long building it took."""
    from vireid.data.loaders import train_batches
    from vireid.schema import DataSettings

    data = ctx.data
    workers = suite.args.workers if suite.device.type == "cuda" else 1
    start = time.perf_counter()
    # the run's data settings as the benchmark reads them: its own worker count, and no keypoint or RegDB-trial
    # input, no held-out identities, the balanced sampler and the default decoding (what this stage always used)
    data = DataSettings(dataset=data.dataset, height=data.height, width=data.width, p=data.p, k=data.k,
                        augment=data.augment, pad=data.pad, random_erasing=data.random_erasing, workers=workers)
    batches = train_batches(data, suite.data_root, seed=0, cache_dir=suite.out / "cache")
    built = time.perf_counter() - start

    def stream():
        epoch = 0
        while True:
            yield from batches.epoch(epoch)
            epoch += 1

    return stream(), {"workers": workers, "augment": data.augment, "pipeline_build_s": built,
                      "steps_per_epoch": len(batches), "images_on_disk": len(batches.dataset.samples)}


def stage_inference(suite: Suite, name: str, budget: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from vireid.data.records import INFRARED, VISIBLE

    ctx = method(suite, name)
    batch_size, warmup, steps = suite.profile["inference"]
    images = torch.randn(batch_size, 3, *ctx.size, device=ctx.device).contiguous(memory_format=torch.channels_last)
    modality = torch.tensor([VISIBLE, INFRARED], device=ctx.device).repeat_interleave(batch_size // 2)
    modality = torch.cat([modality, modality.new_full((batch_size - len(modality),), INFRARED)])
    cuda = ctx.device.type == "cuda"
    model = ctx.recipe.model
    model.eval()
    try:
        def embed(b):
            with torch.no_grad(), torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cuda):
                return ctx.recipe.embed(b, modality)

        # FLOPs of the eager modules: FlopCounterMode does not see the fused oneDNN ops of IDKL's CPU test path
        fast_path = getattr(model, "cpu_eval", None)
        if fast_path is not None:
            model.cpu_eval = "eager"
        with FlopCounterMode(display=False) as counter:
            embed(images)
        if fast_path is not None:
            model.cpu_eval = fast_path
        resident = reset_peak(ctx.device)
        result = timed_loop(embed, lambda: images, batch_size, ctx.device, warmup, steps, budget)
    finally:
        model.train()
    result.update(peak_memory(ctx.device, resident))
    result.update(method=name, batch=batch_size, input=list(ctx.size), amp="bf16" if cuda else "fp32",
                  channels_last=True, gflop_per_img=counter.get_total_flops() / batch_size / 1e9)
    add_mfu(suite, float(counter.get_total_flops()), result)
    result.pop("input_wait_frac", None)
    return result


def stage_torchrun(suite: Suite, budget: float) -> dict:
    """``torchrun --nproc_per_node 1`` of ``vireid train`` (through this file's child entry, which reports the
    process group the run joined); checks the exit status, the logged steps and the backend."""
    if suite.torchrun_root is None:
        raise RuntimeError("no data: the data stage did not run")
    out = suite.out / "torchrun_run"
    backend = "nccl" if suite.device.type == "cuda" else "gloo"
    config = suite.profile["methods"]["idkl"]["config"]
    train_args = ["train", config, *suite.profile["torchrun_overrides"], "train.log_every=1",
                  "--data-root", str(suite.torchrun_root), "--out", str(out), "--device", suite.device.type]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(Path(__file__).resolve()), CHILD_FLAG, *train_args]
    env = child_env(suite.out)
    env.setdefault("OMP_NUM_THREADS", "1" if suite.device.type == "cpu" else "4")
    start = time.perf_counter()
    returncode, output = run_capped(cmd, budget, suite.out, env)
    wall = time.perf_counter() - start
    (suite.out / "torchrun.log").write_text(output)
    if returncode != 0:
        raise RuntimeError(f"torchrun exited with {returncode}:\n{tail(output)}")
    tags = [json.loads(line.split(CHILD_TAG, 1)[1]) for line in output.splitlines() if CHILD_TAG in line]
    group = tags[-1] if tags else {}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "img_per_s" in r]
    if group.get("backend") != backend:
        raise AssertionError(f"the run joined process group {group or None}, expected backend {backend!r}")
    return {"command": " ".join(shlex.quote(c) for c in cmd), "returncode": returncode,
            "process_group": group["backend"], "world_size": group["world_size"], "ddp": group["ddp"],
            "steps": len(steps), "img_per_s": steps[-1]["img_per_s"] if steps else None,
            "checkpoint": (out / "checkpoint.pt").is_file(), "wall_s": wall}


def torchrun_child(argv: list[str]) -> int:
    """Inside torchrun: ``vireid train`` via its CLI entry, then report the process group it joined."""
    import torch.distributed as dist

    from vireid.cli.main import main

    code = main(argv)
    joined = dist.is_available() and dist.is_initialized()
    info = {"backend": dist.get_backend() if joined else None, "world_size": dist.get_world_size() if joined else 1,
            "ddp": joined}
    print(CHILD_TAG + json.dumps(info), flush=True)
    if joined:
        dist.destroy_process_group()
    return code


def smoke_plan(suite: Suite, plan_path: Path) -> Path:
    """The plan at tiny sizes for --cpu-smoke: its rows, with the smoke budget merged over its budget."""
    import yaml

    from vireid.app.runs import resolve_config_path
    from vireid.config import load_config, merge

    plan = yaml.safe_load(plan_path.read_text(encoding="utf-8"))
    smoke = suite.profile["ablation_smoke"]
    plan["budget"] = merge(plan.get("budget") or {}, smoke["budget"])
    for row in plan["rows"]:
        config = load_config(resolve_config_path(str(row["config"])))
        model = config.get("model") or {}
        if "non_local" in model:
            row["set"] = merge({"model": {"non_local": smoke["non_local"]}}, row.get("set") or {})
        if "depth" in model:  # ResNet rows at ResNet-18 (the plain CNN has no depth)
            row["set"] = merge(row.get("set") or {}, {"model": {"depth": 18}})
        if "stripes" in model:  # a 32x16 input leaves a 2-row map: as many stripes as rows
            row["set"] = merge(row.get("set") or {}, {"model": {"stripes": 2}})
        # one short epoch whatever the plan's rows or budget ask for (epochs, a time budget)
        row["set"] = merge(row.get("set") or {}, {"train": {**smoke["budget"]["train"], "time_budget_s": 0}})
        row["set"] = merge(row["set"], {"train": scaled_lrs(merge(merge(config, plan["budget"]), row["set"]),
                                                            smoke["lr_scale"])})
    plan["trials"] = smoke["trials"]
    plan["seeds"] = [0]  # one training seed per row: the smoke run checks the path, not the spread
    plan.pop("device", None)
    path = suite.out / "ablation_smoke_plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def scaled_lrs(config: dict, scale: float) -> dict:
    """``train`` overrides that multiply every learning rate of ``config`` (``train.lr`` and each named
    optimiser's) by ``scale``.

    Why: a smoke row trains a handful of steps, too few for the BN running statistics to follow weights
    that moved at the full LR; in eval mode the un-normalised activations then grow through the non-local
    blocks until GeM's power overflows (1e11 after 3 MBFVRD steps at its LR 0.1, NaN on some CPUs). At a
    tenth of the LR the weights stay where the running statistics still describe them (activations < 100).
    """
    from vireid.app.runs import run_defaults

    train = {**run_defaults()["train"], **(config.get("train") or {})}
    out = {"lr": float(f"{float(train['lr']) * scale:.6g}")}
    named = {name: {**opt, "lr": float(f"{float(opt['lr']) * scale:.6g}")}
             for name, opt in (train.get("optimizers") or {}).items() if "lr" in (opt or {})}
    if named:
        out["optimizers"] = named
    return out


def stage_ablation(suite: Suite, budget: float):
    plan = Path(suite.args.plan)
    if not plan.is_file():
        raise FileNotFoundError(f"ablation plan not found: {plan}")
    out = suite.out / "ablation"
    cmd = [sys.executable, "-m", "vireid.cli.main", "ablate", str(plan.resolve()), "--out", str(out),
           "--jobs", str(suite.profile["ablation_jobs"]), "--device", suite.device.type]
    note = None
    if suite.args.mode == "cpu-smoke":
        cmd[4] = str(smoke_plan(suite, plan))
        rows = first_row_per_config(plan)
        cmd += ["--data-root", str(suite.data_root), "--rows", ",".join(rows)]
        note = f"--cpu-smoke: the first row of each config ({', '.join(rows)}), tiny sizes, one gallery trial"
    start = time.perf_counter()
    try:
        returncode, output = run_capped(cmd, budget, suite.out, child_env(suite.out))
    except TimeoutError as exc:
        raise TimeoutError(f"vireid ablate did not finish within the {budget:.0f} s left; finished rows are in "
                           f"{out} (the same command resumes them)") from exc
    (suite.out / "ablation.log").write_text(output)
    if returncode != 0:
        raise RuntimeError(f"vireid ablate exited with {returncode}:\n{tail(output)}")
    report = json.loads((out / "ablation.json").read_text())
    rows = []
    for r in report["results"]:
        row = {"name": r["name"]}
        if r.get("failed"):
            row["error"] = "; ".join(f"seed {f['seed']}: {f['error']}" for f in r["failed"])
        if "mean" in r:  # mean over the seeds that finished, seed std beside it
            row.update(seeds=r["n"], rank1=r["mean"]["rank1"], rank1_std=r["seed_std"]["rank1"],
                       mAP=r["mean"]["mAP"], mAP_std=r["seed_std"]["mAP"], trials=r["trials"],
                       train_s=r["train_s"], eval_s=r["eval_s"])
        rows.append(row)
    result = {"command": " ".join(shlex.quote(c) for c in cmd), "plan": str(plan), "rows": len(rows),
              "results": rows, "wall_s": time.perf_counter() - start,
              "table": (out / "ablation.md").read_text(encoding="utf-8")}
    return (result, note) if note else result


def first_row_per_config(plan_path: Path) -> list[str]:
    """Row names, one per distinct base config (the smoke run trains each method once, not every seed)."""
    import yaml

    seen, names = set(), []
    for row in yaml.safe_load(plan_path.read_text(encoding="utf-8"))["rows"]:
        if row["config"] not in seen:
            seen.add(row["config"])
            names.append(row["name"])
    return names


# ---------------------------------------------------------------- report


def _fmt(value, spec: str = ".0f", scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    stages = report["stages"]
    by_name = {s["name"]: s for s in stages}
    lines = [f"# vireid GPU suite ({report['mode']})", "",
             f"Started {report['started']}, wall {report.get('wall_s', 0):.0f} s of a {report['budget_s']:.0f} s "
             f"budget. Command: `{report['command']}`", ""]
    if env:
        lines += [f"Device **{env.get('device_name')}** ({env.get('device')}), torch {env.get('torch')}, "
                  f"CUDA {env.get('cuda', '–')}, cuDNN {env.get('cudnn', '–')}, {env.get('cpu_count')} CPU cores. "
                  f"Measured {env.get('gemm_dtype')} GEMM ({env.get('gemm_n')}^3): "
                  f"{_fmt(env.get('gemm_tflops'), '.3g')} TFLOP/s. MFU reference: "
                  f"{_fmt(env.get('mfu_reference_tflops'), '.3g')} TFLOP/s ({env.get('peak_source')}).", ""]
    train = [s for s in stages if s["status"] == "ok" and "source" in s.get("result", {})]
    lines += ["## Training throughput", "",
              "Forward + backward + optimiser step through the recipe's `training_step` and the trainer's step. "
              "*model*: a synthetic batch already on the device; *pipeline*: images on disk, the image cache, "
              "augmentation, DataLoader workers, host-to-device copy.", "",
              "| method | source | compile | amp | batch | input | img/s | step ms | input wait | peak GiB | TFLOP/s "
              "| MFU |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in train:
        r = s["result"]
        lines.append(f"| {r['method']} | {r['source']} | {'yes' if r['compiled'] else 'no'} | {r['amp']} | "
                     f"{r['batch']} | "
                     f"{r['input'][0]}x{r['input'][1]} | {r['img_per_s']:.0f} | {r['step_ms']:.1f} | "
                     f"{100 * r['input_wait_frac']:.0f}% | {r['peak_mem_gib']:.2f} | {_fmt(r.get('tflops'), '.3g')} "
                     f"| {_fmt(r.get('mfu'), '.1f', 100)}% |")
    infer = [s for s in stages if s["name"].endswith("/inference") and s["status"] == "ok"]
    if infer:
        lines += ["", "## Inference (eval-mode embed)", "",
                  "| method | amp | batch | input | img/s | peak GiB | TFLOP/s | MFU |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in infer:
            r = s["result"]
            lines.append(f"| {r['method']} | {r['amp']} | {r['batch']} | {r['input'][0]}x{r['input'][1]} | "
                         f"{r['img_per_s']:.0f} | {r['peak_mem_gib']:.2f} | {_fmt(r.get('tflops'), '.3g')} | "
                         f"{_fmt(r.get('mfu'), '.1f', 100)}% |")
    ev = by_name.get("eval/3803x301", {})
    if ev.get("status") == "ok":
        r = ev["result"]
        lines += ["", "## Evaluation of a 3803 x 301 problem", "",
                  f"On {r['device']}: {1000 * r['device_s']:.1f} ms (CPU {1000 * r['cpu_s']:.1f} ms); rank-1 "
                  f"{100 * r['rank1']:.2f}%, mAP {100 * r['mAP']:.2f}%, mINP {100 * r['mINP']:.2f}%; identical to "
                  f"the CPU: **{r['identical']}** (max abs differences {r['max_abs_diff']})."]
    tr = by_name.get("torchrun", {})
    if tr.get("status") == "ok":
        r = tr["result"]
        lines += ["", "## torchrun", "",
                  f"`vireid train` under `torchrun --nproc_per_node 1`: process group **{r['process_group']}** "
                  f"(world {r['world_size']}, DDP {r['ddp']}), {r['steps']} steps, last "
                  f"{_fmt(r['img_per_s'])} img/s, {r['wall_s']:.0f} s wall."]
    ab = by_name.get("ablation", {})
    if ab.get("status") == "ok":
        lines += ["", "## Ablation", "", ab["result"]["table"].strip()]
    lines += ["", "## Stages", "", "| stage | status | seconds | budget s | note / error |",
              "| --- | --- | --- | --- | --- |"]
    for s in stages:
        detail = (s.get("error") or s.get("note") or "").replace("\n", " ").replace("|", "/")[:300]
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', 0):.1f} | {s['budget_s']:.0f} | {detail} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu_suite", help="report folder (gpu_suite.json, gpu_suite.md)")
    parser.add_argument("--cpu-smoke", dest="mode", action="store_const", const="cpu-smoke", default="gpu",
                        help="every stage at tiny sizes on the CPU (a dry run of the GPU suite)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the stages (gpu: 450, cpu-smoke: 900); the ablation gets what is left")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="bf16 peak for MFU when the device is not in the built-in table")
    parser.add_argument("--workers", type=int, default=16, help="DataLoader workers of the pipeline stages (16)")
    parser.add_argument("--plan", default=str(REPO / "benchmarks" / "ablation_gpu.yaml"), help="ablation plan")
    parser.add_argument("--skip", default="", help="comma-separated stages or groups to skip (e.g. ablation,agw)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def _on_signal(signum, frame):
    raise SuiteStopped(signal.Signals(signum).name)


def run_suite(args) -> Suite:
    profile = PROFILES[args.mode]
    suite = Suite(args, profile)
    budgets = profile["budgets"]
    threads = torch.get_num_threads()
    if suite.device.type == "cpu":
        torch.set_num_threads(1)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Data first: the generator forks worker processes, best done before this process touches CUDA.
        suite.stage("data", lambda b: stage_data(suite, b), budgets["data"])
        suite.stage("environment", lambda b: stage_environment(suite, b), 60)
        suite.stage("eval/3803x301", lambda b: stage_eval(suite, b), budgets["eval"])
        for name in profile["methods"]:
            suite.stage(f"{name}/flops", lambda b, n=name: stage_flops(suite, n, b), budgets["flops"])
            suite.stage(f"{name}/model/eager", lambda b, n=name: stage_train(suite, n, "model", False, b),
                        budgets["model"])
            suite.stage(f"{name}/pipeline/eager", lambda b, n=name: stage_train(suite, n, "pipeline", False, b),
                        budgets["pipeline"])
            suite.stage(f"{name}/inference", lambda b, n=name: stage_inference(suite, n, b), budgets["inference"])
        suite.stage("torchrun", lambda b: stage_torchrun(suite, b), budgets["torchrun"], min_s=20)
        for name in profile["methods"]:
            suite.stage(f"{name}/model/compile", lambda b, n=name: stage_train(suite, n, "model", True, b),
                        budgets["compile"], min_s=30)
            suite.stage(f"{name}/pipeline/compile", lambda b, n=name: stage_train(suite, n, "pipeline", True, b),
                        budgets["pipeline"], min_s=10)
        reserve = 10.0 if args.mode == "gpu" else 2.0  # writing the report, interpreter exit
        suite.stage("ablation", lambda b: stage_ablation(suite, b - reserve), suite.remaining(),
                    min_s=profile["ablation_min_s"] + reserve)
    except SuiteStopped as exc:
        suite.report["stopped"] = f"stopped by {exc}"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)
        suite.report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        suite.write()
    return suite


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        return torchrun_child(sys.argv[2:])
    args = parse_args(argv)
    suite = run_suite(args)
    print()
    print((suite.out / "gpu_suite.md").read_text())
    failed = [s["name"] for s in suite.report["stages"] if s["status"] == "failed"]
    print(f"report: {suite.out / 'gpu_suite.json'} and gpu_suite.md; "
          f"{len(failed)} failed stage(s){': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed or "stopped" in suite.report else 0


if __name__ == "__main__":
    sys.exit(main())
