"""Issue 25, integrity: index metadata under its checksum and its counts checked, checkpoints checksummed,
metrics.jsonl one line per step after a resume, outputs with the user's umask, temp files cleaned up."""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from robust_helpers import TINY
from vireid.cli.main import main
from vireid.deploy.index import GalleryIndex
from vireid.deploy.store import checksum, load_checked, save_checked
from vireid.engine.checkpoint import CHECKSUM_KEY, load_checkpoint, save_checkpoint
from vireid.synth.generator import generate
from vireid.utils.io import write_text_atomic

RUN = {"method": "idkl", "feature_dim": 8, "weights_sha256": "ab" * 32, "checkpoint": "/runs/a", "flip": False}


def small_index(n: int = 20) -> GalleryIndex:
    torch.manual_seed(0)
    return GalleryIndex.create(torch.randn(n, 8), [f"/g/{i}.png" for i in range(n)], [i % 2 for i in range(n)], RUN)


def flip(path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def test_a_changed_metadata_byte_is_refused_naming_the_file(tmp_path):
    small_index().save(tmp_path / "g.index")
    flip(tmp_path / "g.index", b'\\"/runs/a\\"', b'\\"/runs/b\\"')  # inside the run's JSON in the header
    with pytest.raises(ValueError, match=f"{tmp_path / 'g.index'} is corrupt: its metadata does not match"):
        GalleryIndex.load(tmp_path / "g.index")


def test_an_index_written_before_the_metadata_checksum_still_loads(tmp_path):
    index = small_index()
    tensors = {"a": torch.ones(3)}
    header = {"format": "vireid-index", "version": "1", "sha256": checksum(tensors), "run": json.dumps(RUN)}
    save_file(tensors, str(tmp_path / "old.st"), metadata=header)
    assert load_checked(tmp_path / "old.st", "vireid-index", "index")[1] == {"run": RUN}
    bad = dict(header, run="{not json")
    save_file(tensors, str(tmp_path / "bad.st"), metadata=bad)
    with pytest.raises(ValueError, match=f"{tmp_path / 'bad.st'} is corrupt: its metadata is not valid JSON"):
        load_checked(tmp_path / "bad.st", "vireid-index", "index")
    assert len(index) == 20


def test_counts_that_disagree_are_refused_naming_the_file(tmp_path):
    index = small_index()
    tensors = {"features": index.features[:5], "modality": index.modalities.to(torch.uint8),
               "paths_utf8": torch.zeros(0, dtype=torch.uint8), "paths_offsets": torch.zeros(21, dtype=torch.int64)}
    save_checked(tmp_path / "n.index", "vireid-index", tensors, {"run": RUN})
    with pytest.raises(ValueError, match=f"{tmp_path / 'n.index'} is not a consistent vireid index .* 5 features, "
                                         "20 paths"):
        GalleryIndex.load(tmp_path / "n.index")
    save_checked(tmp_path / "k.index", "vireid-index", {"features": index.features}, {"run": RUN})
    with pytest.raises(ValueError, match=f"{tmp_path / 'k.index'} is not a consistent vireid index .KeyError"):
        GalleryIndex.load(tmp_path / "k.index")


def test_a_faiss_blob_whose_count_disagrees_with_the_paths_is_refused(tmp_path):
    pytest.importorskip("faiss")
    from vireid.deploy.search import ann_to_record, build_ann, search_index

    index = small_index()
    ann, params = build_ann(index.features[:12], "hnsw")  # a blob for 12 vectors in an index of 20 images
    index.ann = ann_to_record(ann, "hnsw", params)
    index.save(tmp_path / "h.index")
    loaded = GalleryIndex.load(tmp_path / "h.index")
    with pytest.raises(ValueError, match=f"index {tmp_path / 'h.index'} is inconsistent: its faiss hnsw structure "
                                         "holds 12 vectors but the index lists 20 images"):
        search_index(loaded, torch.randn(2, 8), 5)
    with pytest.raises(ValueError, match="holds 12 vectors but the index lists 20"):
        loaded.add(torch.randn(1, 8), ["/g/new.png"], [0], RUN)
    loaded.ann = {**loaded.ann, "blob": loaded.ann["blob"][:40]}
    with pytest.raises(ValueError, match="holds a damaged faiss hnsw structure"):
        search_index(loaded, torch.randn(2, 8), 5)


def test_flipped_bytes_inside_a_checkpoint_tensor_are_refused(tmp_path):
    weights = torch.arange(4096, dtype=torch.float32)
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": weights}, "epoch": 3})
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["w"], weights)
    data = bytearray((tmp_path / "c.pt").read_bytes())
    start = bytes(data).index(weights[1000:1004].numpy().tobytes())
    for i in range(start, start + 50):  # 50 bytes flipped inside the tensor's data
        data[i] ^= 0xFF
    (tmp_path / "c.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{tmp_path / 'c.pt'} is corrupt: its contents do not match the sha256"):
        load_checkpoint(tmp_path / "c.pt")


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    torch.save({"model": {"w": torch.ones(3)}, "epoch": 1}, tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt")
    assert state["epoch"] == 1 and CHECKSUM_KEY not in state
    save_checkpoint(tmp_path / "new.pt", {"epoch": 2, "rng": {"python": [3, [1, 2], None]}})
    assert CHECKSUM_KEY not in load_checkpoint(tmp_path / "new.pt")  # checked, then removed


TRAIN = [o for o in TINY if not o.startswith("train.epochs")] + ["train.log_every=1"]


def test_metrics_have_one_line_per_step_after_a_resume_and_outputs_follow_the_umask(tmp_path):
    root = tmp_path / "sysu"
    generate(root, "sysu", 6, seed=1, size=(32, 16), images=2, workers=1)
    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        assert main(["train", "demo_idkl", *TRAIN, "train.epochs=1", "--data-root", str(root), "--out", str(out)]) == 0
        steps = [json.loads(line)["global_step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        # what a run killed (kill -9) after logging two more steps past its checkpoint leaves
        with open(out / "metrics.jsonl", "a") as log:
            log.write(json.dumps({"global_step": steps[-1] + 1, "loss": 1.0}) + "\n")
            log.write(json.dumps({"global_step": steps[-1] + 2, "loss": 1.0}) + "\n")
            log.write('{"global_step": ')  # torn last line
        assert main(["train", "demo_idkl", *TRAIN, "train.epochs=2", "--allow-change", "train.epochs",
                     "--data-root", str(root), "--out", str(out)]) == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        logged = [r["global_step"] for r in records if "global_step" in r]
        assert logged == list(range(1, 2 * len(steps) + 1))  # every step once, in order
        for name in ("config.yaml", "run.json", "checkpoint.pt", "metrics.jsonl"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name  # was 0600 from mkstemp
    finally:
        os.umask(old)


def test_atomic_writes_keep_an_existing_files_mode(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    target.chmod(0o604)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o604


def test_index_temp_files_left_by_a_killed_writer_are_removed(tmp_path):
    from deploy_runs import make_run, write_images

    run = make_run(tmp_path / "run")
    write_images(tmp_path / "imgs", 3)
    left = tmp_path / ".g.index.k1ll3d.tmp"
    left.write_bytes(b"half an index")
    other = tmp_path / ".other.index.x.tmp"  # another file's temp: not ours to remove
    other.write_bytes(b"x")
    assert main(["index", str(run), "--images", str(tmp_path / "imgs"), "--modality", "visible",
                 "--out", str(tmp_path / "g.index")]) == 0
    assert not left.exists() and other.exists()
