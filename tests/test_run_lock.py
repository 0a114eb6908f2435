"""A run directory is held by one live process; stale locks are taken over; writes are durable."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from vireid.engine.run_lock import LOCK_NAME, RunDirectoryBusy, acquire, release, run_directory_lock


def test_second_holder_is_refused_with_the_holders_pid_and_host(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunDirectoryBusy, match=f"in use by process {sleeper.pid} on host"):
            acquire(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger="vireid.engine.run_lock"):
        with run_directory_lock(tmp_path) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    path = acquire(tmp_path)
    assert acquire(tmp_path) == path
    release(path)
    assert not path.exists()


def test_cli_train_into_a_busy_directory_stops_with_a_clear_message(tmp_path, capsys):
    from vireid.cli.main import main

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        code = main(["train", "demo_idkl", "--data-root", str(tmp_path / "nowhere"), "--out", str(out)])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 2
    assert "is in use by process" in capsys.readouterr().err
