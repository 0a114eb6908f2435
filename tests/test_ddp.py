"""Two gloo processes under torchrun end with the weights of one process on the same global batches."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from vireid.engine.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env():
    src = str(Path(__file__).resolve().parents[1] / "src")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1")


def test_two_process_gloo_matches_single_process(tmp_path):
    subprocess.run([sys.executable, str(WORKER), str(tmp_path / "single"), "--global"], check=True, env=_env(),
                   timeout=120)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(WORKER), str(tmp_path / "ddp")], check=True, env=_env(), timeout=180,
                   capture_output=True)
    single = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    assert single.keys() == ddp.keys()  # no 'module.' prefix: the raw model is saved
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-6)
