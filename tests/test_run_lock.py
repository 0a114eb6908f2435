"""A run directory is held by one live process (an flock); locks of dead processes are taken over."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from vireid.engine.run_lock import LOCK_NAME, RunDirectoryBusy, acquire, release, run_directory_lock

HOLD = ("import sys, time; from vireid.engine.run_lock import acquire; acquire(sys.argv[1]); print('held', "
        "flush=True); time.sleep(60)")


def hold_lock(run_dir):
    """A live process that holds ``run_dir``'s lock (started and waited for)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_holder_is_refused_with_the_holders_pid_and_host(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirectoryBusy, match=f"in use by process {holder.pid} on host"):
            acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    acquire(tmp_path)  # the kernel dropped the killed holder's lock


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with caplog.at_level(logging.INFO, logger="vireid.engine.run_lock"):
        with run_directory_lock(tmp_path) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "is gone; taking over" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    path = acquire(tmp_path)
    assert acquire(tmp_path) == path
    release(path)
    assert path.exists()  # the outer hold is still there
    release(path)
    assert not path.exists()


def test_cli_train_into_a_busy_directory_stops_with_a_clear_message(tmp_path, capsys):
    from vireid.cli.main import main

    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        code = main(["train", "demo_idkl", "--data-root", str(tmp_path / "nowhere"), "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert "is in use by process" in capsys.readouterr().err
