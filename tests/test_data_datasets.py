from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.data import layouts
from vireid.data.datasets import DATASETS, open_dataset
from vireid.data.datasets.llcm import parse_cam_pid
from vireid.data.records import INFRARED, NO_CAMERA, VISIBLE


def test_registry_knows_the_seven_datasets():
    assert DATASETS.names() == ["dukemtmc", "folder", "llcm", "market1501", "msmt17", "regdb", "sysu"]
    with pytest.raises(ValueError, match="unknown dataset 'market'; known: dukemtmc, folder, llcm, market1501, "
                                         "msmt17, regdb, sysu"):
        DATASETS.get("market")


def test_sysu_trains_on_train_plus_val_relabelled_by_ascending_pid(tiny_trees):
    root = tiny_trees["sysu"]
    data = open_dataset("sysu", root)
    assert data.problems == []
    train_ids = sorted(layouts.read_id_line(root / "exp/train_id.txt") + layouts.read_id_line(root / "exp/val_id.txt"))
    assert data.num_classes == len(train_ids)
    for sample in data.train:
        original = int(Path(sample.path).parent.name)
        assert sample.pid == train_ids.index(original)
        assert str(sample.camid) == Path(sample.path).parent.parent.name[-1]
        assert sample.modality == (INFRARED if sample.camid in (3, 6) else VISIBLE)
    expected = sum(1 for pid in train_ids for p in root.glob(f"cam*/{pid:04d}/*.jpg"))
    assert len(data.train) == expected
    assert data.test_ids == sorted(layouts.read_id_line(root / "exp/test_id.txt"))
    # per identity: visible cams 1,2,4,5 first, then infrared 3,6, files sorted
    first = [s.camid for s in data.train if s.pid == 0]
    order = [c for c in (1, 2, 4, 5, 3, 6) if c in first]
    assert first == sorted(first, key=order.index)


@pytest.mark.parametrize("trial", [1, 7])
def test_regdb_reads_the_trial_lists(tiny_trees, trial):
    root = tiny_trees["regdb"]
    data = open_dataset("regdb", root, trial=trial)
    assert data.problems == []
    vis = layouts.read_index_list(root / f"idx/train_visible_{trial}.txt")
    assert [(Path(s.path).relative_to(root).as_posix(), s.pid) for s in data.train if s.modality == VISIBLE] == vis
    assert {s.camid for s in data.train if s.modality == INFRARED} == {2}
    assert data.num_classes == len({label for _, label in vis})


def test_regdb_trials_differ_and_bad_trial_is_refused(tiny_trees):
    one = open_dataset("regdb", tiny_trees["regdb"], trial=1).listing.train_keys
    two = open_dataset("regdb", tiny_trees["regdb"], trial=2).listing.train_keys
    assert one != two
    with pytest.raises(ValueError, match="RegDB trial must be 1..10, got 0"):
        open_dataset("regdb", tiny_trees["regdb"], trial=0)


def test_llcm_reads_lists_and_test_folders(tiny_trees):
    root = tiny_trees["llcm"]
    data = open_dataset("llcm", root)
    assert data.problems == []
    assert len(data.train) == sum(len(layouts.read_index_list(root / f"idx/train_{m}.txt")) for m in ("vis", "nir"))
    assert all(s.camid == parse_cam_pid(s.path)[0] for s in data.train)
    assert data.test_ids == sorted(layouts.read_id_line(root / "idx/test_id.txt"))
    assert {s.pid for s in data.test} <= set(data.test_ids)
    assert not any("test_nir/cam3" in s.path for s in data.test)
    assert len(data.test) == len(list(root.glob("test_*/cam*/*/*.jpg")))


def test_llcm_cam_rule_reads_the_first_cam_only():
    assert parse_cam_pid("root/test_nir/cam7/0042/0042_c07_f0001.jpg") == (7, 42)
    assert parse_cam_pid("/data/camera/test_vis/cam1/0001/x.jpg") is None  # 'cam' in the root breaks it, as in the reference
    assert parse_cam_pid("no_camera_here.jpg") is None


def write_image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path)


def test_folder_dataset_with_and_without_cameras(tmp_path):
    write_image(tmp_path / "visible/10/cam2/a.png")
    write_image(tmp_path / "visible/2/b.jpg")
    write_image(tmp_path / "infrared/10/cam5/c.png")
    write_image(tmp_path / "infrared/2/d.png")
    write_image(tmp_path / "infrared/7/e.png")
    (tmp_path / "visible/2/notes.txt").write_text("x")
    data = open_dataset("folder", tmp_path)
    assert data.problems == []
    by_name = {Path(s.path).name: s for s in data.train}
    assert set(by_name) == {"a.png", "b.jpg", "c.png", "d.png", "e.png"}
    # numeric order: '2' < '7' < '10'
    assert (by_name["b.jpg"].pid, by_name["e.png"].pid, by_name["a.png"].pid) == (0, 1, 2)
    assert (by_name["a.png"].camid, by_name["c.png"].camid, by_name["b.jpg"].camid) == (2, 5, NO_CAMERA)
    assert Counter(s.modality for s in data.train) == {VISIBLE: 2, INFRARED: 3}
    notes = " ".join(data.listing.notes)
    assert "not images and were skipped" in notes and "one modality only" in notes and ": 1" in notes
