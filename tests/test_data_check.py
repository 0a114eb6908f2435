import shutil

import pytest

from data_trees import copy_tree
from vireid.data.check import DatasetError, check_dataset, require_valid


def problems_of(root, name, **options):
    report = check_dataset(root, name, **options)
    assert not report.ok
    return report.problems, report.format()


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm"])
def test_a_good_tree_passes_with_a_summary_table(tiny_trees, name):
    report = check_dataset(tiny_trees[name], name)
    assert report.ok, report.problems
    text = report.format()
    assert "OK" in text and "split  modality  camera" in text
    assert any(row[0] == "train" and row[2] == "all" for row in report.rows)
    assert require_valid(tiny_trees[name], name).num_classes > 0


def test_missing_root(tmp_path):
    problems, _ = problems_of(tmp_path / "nowhere", "sysu")
    assert problems == [f"dataset root {tmp_path / 'nowhere'} is not a folder; expected "
                        "cam1..cam6/<pid:04d>/<n:04d>.jpg and exp/{train,val,test}_id.txt"]


def test_sysu_missing_camera_folder_and_id_list(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    shutil.rmtree(root / "cam6")
    (root / "exp" / "val_id.txt").unlink()
    problems, _ = problems_of(root, "sysu", decode=False)
    assert f"missing folder {root / 'cam6'} (sysu expects cam1..cam6/<pid:04d>/<n:04d>.jpg and " \
           "exp/{train,val,test}_id.txt)" in problems
    assert any(p.startswith(f"missing identity list {root / 'exp' / 'val_id.txt'} ") for p in problems)


def test_sysu_unparsable_id_line_and_overlap(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    test_ids = (root / "exp/test_id.txt").read_text().strip()
    (root / "exp/val_id.txt").write_text("1,two,3\n")
    (root / "exp/train_id.txt").write_text(test_ids + "\n")
    problems, _ = problems_of(root, "sysu", decode=False)
    assert f"{root / 'exp/val_id.txt'}:1: identity 'two' is not an integer; expected comma-separated integers" \
        in problems
    n = len(test_ids.split(","))
    assert (f"{n} identities are in both the training and the test split (exp/train_id.txt + exp/val_id.txt "
            f"vs exp/test_id.txt): {test_ids.replace(',', ', ')}") in problems


def test_sysu_bad_file_name_and_missing_rand_perm_note(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    folder = next((root / "cam1").iterdir())
    shutil.copy(next(folder.iterdir()), folder / "extra_01.jpg")
    (root / "exp/rand_perm_cam.mat").unlink(missing_ok=True)
    problems, text = problems_of(root, "sysu", decode=False)
    assert f"unexpected file {folder / 'extra_01.jpg'}: SYSU-MM01 images are named NNNN.jpg" in problems[0]
    assert "note: " in text and "rand_perm_cam.mat not found" in text


def test_undecodable_images_are_named(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["llcm"], tmp_path)
    broken = next((root / "train_vis").rglob("*.jpg"))
    broken.write_bytes(broken.read_bytes()[:60])
    text_file = next((root / "test_nir").rglob("*.jpg"))
    text_file.write_text("not an image")
    problems, _ = problems_of(root, "llcm")
    assert len(problems) == 2
    assert any(p.startswith(f"cannot decode image {broken}: ") for p in problems)
    assert any(p.startswith(f"cannot decode image {text_file}: UnidentifiedImageError") for p in problems)
    assert check_dataset(root, "llcm", decode=False).ok  # decoding is what finds them


def test_regdb_missing_list_bad_line_missing_image_and_overlap(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["regdb"], tmp_path)
    (root / "idx/test_thermal_4.txt").unlink()
    lines = (root / "idx/train_visible_2.txt").read_text().splitlines()
    lines[2] = "Visible/1/nolabel.bmp"
    lines[3] = "Visible/999/gone.bmp 0"
    (root / "idx/train_visible_2.txt").write_text("\n".join(lines) + "\n")
    test_line = (root / "idx/test_visible_5.txt").read_text().splitlines()[0]
    with (root / "idx/train_visible_5.txt").open("a") as handle:
        handle.write(test_line + "\n")
    problems, text = problems_of(root, "regdb", decode=False)
    assert any(p.startswith(f"missing index list {root / 'idx/test_thermal_4.txt'} ") for p in problems)
    assert (f"{root / 'idx/train_visible_2.txt'}:3: cannot parse 'Visible/1/nolabel.bmp'; "
            "expected '<relative path> <integer label>'") in problems
    assert (f"{root / 'idx/train_visible_2.txt'}: entry 'Visible/999/gone.bmp' points to a missing image "
            f"{root / 'Visible/999/gone.bmp'}") in problems
    person = test_line.split("/")[1]
    assert f"1 identities are in both the training and the test split (RegDB trial 5, by person folder): {person}" \
        in problems
    assert any(p.startswith("1 images are in both the train and the test lists of RegDB trial 5") for p in problems)
    assert text.count("\n  - ") == len(problems)


def test_llcm_missing_folder_and_overlap(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["llcm"], tmp_path)
    shutil.rmtree(root / "test_vis")
    train_pid = int((root / "idx/train_nir.txt").read_text().split("/")[2])
    (root / "idx/test_id.txt").write_text(f"{train_pid}\n")
    problems, _ = problems_of(root, "llcm", decode=False)
    assert any(p.startswith(f"missing folder {root / 'test_vis'} (llcm expects ") for p in problems)
    assert (f"1 identities are in both the training and the test split (pid folders of idx/train_*.txt vs "
            f"idx/test_id.txt): {train_pid}") in problems


def test_folder_without_modality_folders(tmp_path):
    (tmp_path / "visible").mkdir()
    problems, _ = problems_of(tmp_path, "folder")
    assert problems[0].startswith(f"missing folder {tmp_path / 'infrared'} (folder expects ")
    assert problems[-1].startswith(f"no training images found under {tmp_path}")


def test_training_refuses_with_the_same_messages(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    shutil.rmtree(root / "cam2")
    report = check_dataset(root, "sysu", decode=False)
    with pytest.raises(DatasetError) as info:
        require_valid(root, "sysu")
    assert str(info.value) == report.format()
    assert isinstance(info.value, ValueError)


def test_regdb_label_naming_two_people_is_a_problem(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["regdb"], tmp_path)
    path = root / "idx/train_thermal_1.txt"
    lines = path.read_text().splitlines()
    rel, label = lines[0].split(" ")
    other = next(line.split(" ")[1] for line in lines if line.split(" ")[1] != label)
    lines[0] = f"{rel} {other}"  # one thermal image of person A labelled as person B
    path.write_text("\n".join(lines) + "\n")
    problems, _ = problems_of(root, "regdb", decode=False)
    person = rel.split("/")[1]
    assert any(p.startswith(f"label {other} names several people in the RegDB trial 1 train lists: ")
               for p in problems), problems
    assert any(p.startswith(f"person {person} has several labels in the RegDB trial 1 train lists: ")
               for p in problems)


def test_llcm_checks_work_when_the_root_path_contains_cam(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["llcm"], tmp_path / "camera_data")
    train_pid = int((root / "idx/train_nir.txt").read_text().split("/")[2])
    (root / "idx/test_id.txt").write_text(f"{train_pid}\n")
    problems, _ = problems_of(root, "llcm", decode=False)
    assert any("identities are in both the training and the test split" in p for p in problems)


def test_label_gaps_are_noted_and_the_classifier_covers_them(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["llcm"], tmp_path)
    for name in ("train_vis", "train_nir"):
        path = root / "idx" / f"{name}.txt"
        lines = [line.rsplit(" ", 1) for line in path.read_text().splitlines()]
        path.write_text("".join(f"{rel} {int(label) * 2}\n" for rel, label in lines))
    report = check_dataset(root, "llcm", decode=False)
    assert report.ok
    labels = {s.pid for s in report.dataset.train}
    assert report.dataset.num_classes == max(labels) + 1
    assert "training labels in idx/train_*.txt are not 0..N-1" in report.format()
