"""Issue 25, writers that cannot lose data: concurrent ``index --add`` and a just-created run lock."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy_runs import make_run, write_images
from robust_helpers import ENV, vireid
from vireid.engine.run_lock import LOCK_NAME, RunDirectoryBusy, acquire, release
from vireid.utils.locks import lock_path_for

FLOCK_ONLY = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")


def hold(path: Path) -> subprocess.Popen:
    """A live process holding an flock on ``path`` (writing nothing into it) until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", FLOCK_ONLY, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def waiters(path: Path) -> int:
    """Processes blocked on an flock of ``path`` (the ``->`` lines of /proc/locks for its inode)."""
    inode = f":{os.stat(path).st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and inode in line)


def test_an_empty_lock_file_of_a_live_holder_is_never_taken_over(tmp_path):
    """Right after creation a live lock is empty: it must still refuse a second run."""
    holder = hold(tmp_path / LOCK_NAME)
    try:
        assert (tmp_path / LOCK_NAME).read_text() == ""
        with pytest.raises(RunDirectoryBusy, match="in use by another process .it has just started"):
            acquire(tmp_path)
    finally:
        holder.stdin.close()
        holder.wait()
    release(acquire(tmp_path))  # its holder is gone: free


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to see blocked writers")
@pytest.mark.parametrize("faiss", [None, "flat", "hnsw"])
def test_two_concurrent_index_add_keep_every_image(tmp_path, faiss):
    """Two ``--add`` writers run while a third process holds the index lock: both wait, and after it is
    released the index holds the first build's images plus both batches (nothing lost)."""
    if faiss:
        pytest.importorskip("faiss")
    run = make_run(tmp_path / "run")
    first = write_images(tmp_path / "first", 3, seed=1)
    batch_a = write_images(tmp_path / "a", 5, seed=2)
    batch_b = write_images(tmp_path / "b", 4, seed=3)
    out = tmp_path / "g.index"
    build = vireid("index", str(run), "--images", str(tmp_path / "first"), "--modality", "visible", "--out", str(out),
                   *(["--faiss", faiss] if faiss else []))
    subprocess.run(build, check=True, env=ENV, capture_output=True)
    before = out.stat().st_mtime_ns
    holder = hold(lock_path_for(out))
    writers = [subprocess.Popen(vireid("index", str(run), "--images", str(tmp_path / name), "--modality", "infrared",
                                       "--out", str(out), "--add"), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 300
        while waiters(lock_path_for(out)) < 2:
            assert all(w.poll() is None for w in writers), "a writer finished while the index was locked"
            assert time.monotonic() < deadline, "the writers never waited for the index lock"
            time.sleep(0.2)
        assert out.stat().st_mtime_ns == before  # nobody wrote while the lock was held
    finally:
        holder.stdin.close()
        holder.wait()
    logs = [w.communicate(timeout=300)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], logs
    from vireid.deploy.index import GalleryIndex

    index = GalleryIndex.load(out)
    written = {str(p.resolve()) for p in first + batch_a + batch_b}
    assert len(index) == len(written) == 12
    assert set(index.paths) == written
    if faiss:
        assert index.ann["kind"] == faiss
    assert not lock_path_for(out).exists()


RACE = ("import sys, time; from vireid.engine.run_lock import RunDirectoryBusy, acquire\n"
        "start = float(sys.argv[2])\n"
        "time.sleep(max(0.0, start - time.time()))\n"
        "try:\n    acquire(sys.argv[1])\nexcept RunDirectoryBusy:\n    print('busy', flush=True)\n"
        "else:\n    print('got', flush=True)\n    time.sleep(3)\n")


def test_racing_processes_never_share_a_run_directory(tmp_path):
    """Six processes try the same run directory at the same instant: exactly one gets it."""
    start = time.time() + 4  # after every child has imported vireid
    children = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path / "run"), str(start)], env=ENV,
                                 stdout=subprocess.PIPE, text=True) for _ in range(6)]
    answers = sorted(c.communicate(timeout=120)[0].strip() for c in children)
    assert answers == ["busy"] * 5 + ["got"]
