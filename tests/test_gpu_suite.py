"""benchmarks/gpu_suite.py: the --cpu-smoke dry run reports every stage with numbers; stages are guarded."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark_modules import load

SUITE_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def gpu_suite():
    return load("gpu_suite")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_cpu_smoke_reports_every_stage_with_numbers(gpu_suite, tmp_path):
    # As its header says to run it: the shell wrapper, from another directory, with a relative --out (the
    # torchrun and ablation children run with the report folder as their working directory).
    proc = subprocess.run(["bash", str(SUITE_PATH.with_suffix(".sh")), "--cpu-smoke", "--out", "suite"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    code, out = proc.returncode, tmp_path / "suite"
    report = json.loads((out / "gpu_suite.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    failed = {n: s.get("error") for n, s in stages.items() if s["status"] == "failed"}
    assert code == 0 and not failed, failed
    methods = ("idkl", "agw")
    expected = ["environment", "data", "eval/3803x301", "torchrun", "ablation"]
    expected += [f"{m}/{part}" for m in methods for part in ("flops", "model/eager", "pipeline/eager", "inference",
                                                             "model/compile", "pipeline/compile")]
    assert sorted(stages) == sorted(expected)
    for name, stage in stages.items():
        assert _number(stage["seconds"]), name
        if name.endswith("/compile"):  # tracing is too slow for a CPU smoke run: skipped, with the reason
            assert stage["status"] == "skipped" and "--cpu-smoke" in stage["note"], stage
        else:
            assert stage["status"] == "ok", stage

    assert _number(stages["environment"]["result"]["gemm_tflops"])
    for m in methods:
        flops = stages[f"{m}/flops"]["result"]
        assert flops["flops_per_step"] > 0 and flops["batch"] == 8
        for part in ("model/eager", "pipeline/eager", "inference"):
            r = stages[f"{m}/{part}"]["result"]
            for key in ("img_per_s", "step_ms", "peak_mem_gib", "mfu"):
                assert _number(r[key]) and r[key] > 0, (m, part, key, r[key])
            assert r["steps"] >= 1
        assert stages[f"{m}/pipeline/eager"]["result"]["steps_per_epoch"] >= 1

    ev = stages["eval/3803x301"]["result"]
    assert (ev["queries"], ev["gallery"]) == (3803, 301) and ev["identical"] is True
    assert 0 < ev["rank1"] <= 1 and 0 < ev["mAP"] <= 1

    tr = stages["torchrun"]["result"]
    assert tr["process_group"] == "gloo" and tr["ddp"] is True and tr["world_size"] == 1
    assert tr["steps"] >= 1 and tr["checkpoint"] is True

    ab = stages["ablation"]["result"]
    plan = SUITE_PATH.parent / "ablation_gpu.yaml"  # the smoke run trains the plan's first row of each config
    assert [r["name"] for r in ab["results"]] == gpu_suite.first_row_per_config(plan)
    assert all("error" not in r for r in ab["results"]), [r.get("error") for r in ab["results"]]
    assert all(0 <= r["rank1"] <= 1 and 0 <= r["mAP"] <= 1 and r["trials"] == 1 for r in ab["results"])

    md = (out / "gpu_suite.md").read_text()
    for heading in ("## Training throughput", "## Inference", "## Evaluation of a 3803 x 301 problem",
                    "## torchrun", "## Ablation", "## Stages"):
        assert heading in md
    assert "| idkl | pipeline | no | fp32 | 8 | 32x16 |" in md
    assert "## Stages" in proc.stdout  # the markdown is printed too


def test_smoke_plan_scales_each_rows_own_learning_rates(gpu_suite):
    # A handful of steps at a row's full LR leaves BN running statistics behind the weights; in eval mode
    # MBFVRD's activations then overflowed GeM (NaN test features). Each row keeps its own LR ratio, x 0.1.
    assert gpu_suite.scaled_lrs({"train": {"lr": 0.1}}, 0.1) == {"lr": 0.01}
    assert gpu_suite.scaled_lrs({}, 0.1) == {"lr": 3.5e-05}  # the train.lr default
    two = {"train": {"lr": 2e-4, "optimizers": {"dis": {"lr": 1e-3, "betas": [0.5, 0.999]}, "gen": {}}}}
    assert gpu_suite.scaled_lrs(two, 0.5) == {"lr": 1e-4, "optimizers": {"dis": {"lr": 5e-4, "betas": [0.5, 0.999]}}}


def _bare_suite(gpu_suite, tmp_path, **args):
    defaults = dict(out=str(tmp_path), mode="cpu-smoke", budget_s=None, peak_tflops=None, workers=1, plan="",
                    skip=set(), argv=[])
    return gpu_suite.Suite(SimpleNamespace(**{**defaults, **args}), gpu_suite.PROFILES["cpu-smoke"])


def test_a_failing_stage_is_recorded_and_the_suite_goes_on(gpu_suite, tmp_path):
    suite = _bare_suite(gpu_suite, tmp_path, skip={"later"})

    def boom(budget):
        raise RuntimeError("no such kernel")

    assert suite.stage("broken", boom, 5)["status"] == "failed"
    assert suite.stage("fine", lambda b: {"img_per_s": 3.0}, 5)["status"] == "ok"
    assert suite.stage("later/x", lambda b: {}, 5)["note"] == "skipped by --skip"
    assert suite.stage("late", lambda b: {}, 5, min_s=10**6)["status"] == "skipped"
    report = json.loads((tmp_path / "gpu_suite.json").read_text())  # rewritten after every stage
    broken = report["stages"][0]
    assert broken["error"] == "RuntimeError: no such kernel" and "boom" in broken["traceback"]
    assert [s["status"] for s in report["stages"]] == ["failed", "ok", "skipped", "skipped"]
    assert "| broken | failed |" in (tmp_path / "gpu_suite.md").read_text()


def test_peak_table_and_flag(gpu_suite):
    import torch

    cpu = torch.device("cpu")
    assert gpu_suite.peak_tflops(cpu, 123.0) == (123.0, "--peak-tflops")
    assert gpu_suite.peak_tflops(cpu, None)[0] is None  # a CPU: MFU is against the measured GEMM rate
    table = dict(gpu_suite.PEAK_BF16_TFLOPS)
    assert table["H200"] == 989.0 and table["H100 PCIe"] == 756.0
    names = [k for k, _ in gpu_suite.PEAK_BF16_TFLOPS]
    assert names.index("H100 PCIe") < names.index("H100")  # the more specific name is matched first


def test_sysu_sized_problem_has_the_all_search_shape(gpu_suite):
    dist, _, g_pids, q_cams, g_cams = gpu_suite.sysu_sized_problem()
    assert dist.shape == (3803, 301) and set(q_cams.tolist()) == {3, 6} and set(g_cams.tolist()) <= {1, 2, 4, 5}
    assert len(set(zip(g_pids.tolist(), g_cams.tolist()))) == 301  # one image per identity and camera
    assert len(set(dist.ravel().tolist())) < dist.size  # rounded: ties occur, so the tie rule is compared too
