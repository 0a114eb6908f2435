"""Time vireid's evaluation at the sizes the reference was timed at.

    python benchmarks/bench_eval.py [--device cpu|cuda] [--repeats 5] [--threads 2]

Problems (seeded synthetic embeddings around identity centres, 256-d):
* SYSU all-search single-shot, 10 trials: 3803 IR queries (96 ids, cams 3/6)
  against a different 301-image gallery per trial (one image per id and
  visible camera), distance = negated cosine, as the reference scripts pass it;
* RegDB 2060 x 2060 (206 ids x 10 images per modality);
* re-ranking 3803 + 301 and 2060 + 2060 (float32 Euclidean distances of
  L2-normalised embeddings, k1=20, k2=6, lambda=0.3).

Prints the median wall time of ``--repeats`` runs of the call alone (inputs
prebuilt), the median process CPU time (less sensitive to other load on a
shared machine; with ``--threads 1`` it compares directly with the
single-threaded reference) and, on CPU, the peak extra resident memory of a fresh process doing the call
once, next to the reference figures measured on this machine type
(``shared/reference/protocols-reference.md``, "Measured here").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from vireid.evaluation import evaluate, rerank

REFERENCE_SECONDS = {"sysu_10_trials": 14.2, "regdb": 4.65, "rerank_sysu": 3.4, "rerank_regdb": 3.03}
GOALS = {"sysu_10_trials": 30, "regdb": 20, "rerank_sysu": 10, "rerank_regdb": 10}


def embeddings(pids, rng, dim=256, noise=1.4):
    centres = rng.normal(size=(int(pids.max()) + 1, dim))
    x = centres[pids] + noise * rng.normal(size=(len(pids), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def sysu_problem(seed=0):
    """Queries fixed; ten galleries of 301 (id, camera) draws, as the real split has."""
    rng = np.random.default_rng(seed)
    ids = np.arange(96)
    q_pids = np.sort(rng.choice(ids, 3803))
    q_cams = rng.choice([3, 6], 3803)
    pairs = [(p, c) for p in ids for c in (1, 2, 4, 5)]
    present = rng.choice(len(pairs), 301, replace=False)
    g_pids = np.array([pairs[i][0] for i in present])
    g_cams = np.array([pairs[i][1] for i in present])
    q = embeddings(q_pids, rng)
    trials = []
    for _ in range(10):
        g = embeddings(g_pids, rng)  # a new image per (id, camera) each trial
        trials.append(-(q.astype(np.float64) @ g.T.astype(np.float64)))
    return trials, q_pids, g_pids, q_cams, g_cams


def regdb_problem(seed=1):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(206), 10)
    q, g = embeddings(pids, rng), embeddings(pids, rng)
    return -(q.astype(np.float64) @ g.T.astype(np.float64)), pids, pids


def rerank_problem(nq, ng, seed=2):
    rng = np.random.default_rng(seed)
    x = embeddings(rng.integers(0, 100, nq + ng), rng)
    d = np.sqrt(np.maximum(2 - 2 * (x @ x.T), 0)).astype(np.float32)
    return d[:nq, nq:], d[:nq, :nq], d[nq:, nq:]


def to_device(arrays, device):
    return [torch.as_tensor(a).to(device) for a in arrays]


def make_job(name, device):
    """Returns a zero-argument callable doing the timed work (inputs prebuilt)."""
    if name == "sysu_10_trials":
        trials, qp, gp, qc, gc = sysu_problem()
        trials = [to_device([t], device)[0] for t in trials]
        qp, gp, qc, gc = to_device([qp, gp, qc, gc], device)
        return lambda: [evaluate(t, qp, gp, qc, gc, rule="sysu") for t in trials]
    if name == "regdb":
        d, qp, gp = to_device(regdb_problem(), device)
        return lambda: evaluate(d, qp, gp, rule="regdb")
    if name.startswith("rerank"):
        sizes = (3803, 301) if name == "rerank_sysu" else (2060, 2060)
        qg, qq, gg = to_device(rerank_problem(*sizes), device)
        return lambda: rerank(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    raise ValueError(name)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_job(name, device, repeats):
    job = make_job(name, device)
    job()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        job()
        sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), times, statistics.median(cpu)


def _rss_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def warm_up():
    """Touch the code paths once on tiny inputs, so library pages are not counted as data."""
    d = np.random.default_rng(0).random((6, 9))
    q_pids, g_pids = np.arange(6) % 3, np.arange(9) % 3
    evaluate(d, q_pids, g_pids, np.full(6, 6), np.full(9, 1), rule="sysu", max_rank=3)
    evaluate(d, q_pids, g_pids, rule="regdb")
    rerank(*rerank_problem(6, 9))


def peak_extra_mib(name):
    """In a fresh process: peak resident memory during one call minus the memory before it."""
    code = (
        "import sys, torch; sys.argv=['x']; import bench_eval as b; "
        f"torch.set_num_threads({torch.get_num_threads()}); "
        f"job = b.make_job({name!r}, 'cpu'); b.warm_up(); "
        "open('/proc/self/clear_refs', 'w').write('5'); "
        "before = b._rss_kib('VmRSS:'); job(); print(b._rss_kib('VmHWM:') - before)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), env=env)
    if out.returncode:
        raise RuntimeError(f"memory probe for {name} failed:\n{out.stderr}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.2f}")
    rows = {}
    for name in ("sysu_10_trials", "regdb", "rerank_sysu", "rerank_regdb"):
        median, times, cpu = time_job(name, args.device, args.repeats)
        row = {"median_s": median, "runs_s": times, "median_cpu_s": cpu, "reference_s": REFERENCE_SECONDS[name],
               "speedup": REFERENCE_SECONDS[name] / median, "goal_speedup": GOALS[name]}
        if args.device == "cpu":
            row["peak_extra_mib"] = peak_extra_mib(name)
            if name.startswith("rerank"):
                n = 4104 if name == "rerank_sysu" else 4120
                row["peak_over_n2x4"] = row["peak_extra_mib"] * 2**20 / (n * n * 4)
        rows[name] = row
        extra = ""
        if "peak_extra_mib" in row:
            extra = f", peak extra {row['peak_extra_mib']:.0f} MiB"
            if "peak_over_n2x4" in row:
                extra += f" = {row['peak_over_n2x4']:.2f} x N^2 x 4 B"
        print(f"{name:15s} {median * 1000:8.1f} ms, cpu {cpu * 1000:8.1f} ms  "
              f"(reference {REFERENCE_SECONDS[name]:.2f} s, "
              f"{row['speedup']:.0f}x, goal {GOALS[name]}x){extra}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
