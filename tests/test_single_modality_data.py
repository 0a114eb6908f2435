"""Market-1501, DukeMTMC-reID and MSMT17: readers, `data check` errors and the synthetic layouts."""

import shutil

import pytest

from data_trees import copy_tree
from vireid.cli.main import main
from vireid.data import layouts
from vireid.data.check import check_dataset, require_valid
from vireid.data.datasets import open_dataset
from vireid.data.records import VISIBLE
from vireid.synth.generator import generate

LAYOUTS = ("market1501", "dukemtmc", "msmt17")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("single")
    roots = {}
    for layout in LAYOUTS:
        roots[layout] = base / layout
        generate(roots[layout], layout, 8, seed=3, size=(32, 16), images=3, workers=1)
    return roots


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synthetic_trees_pass_the_check_and_are_visible_only(trees, layout):
    report = check_dataset(trees[layout], layout)
    assert report.ok, report.problems
    data = report.dataset
    assert data.single_modality and data.train and data.test
    assert {s.modality for s in data.train + data.test} == {VISIBLE}
    assert sorted({s.pid for s in data.train}) == list(range(data.num_classes))  # relabelled 0..N-1
    assert any(note.startswith("query: ") for note in data.listing.notes)
    assert "OK" in report.format()


def test_market_reader_parses_names_relabels_and_keeps_junk_out_of_training(tmp_path):
    touch(tmp_path / "bounding_box_train", "0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
          "0007_c3s2_000101_01.jpg", "Thumbs.db")
    touch(tmp_path / "query", "0011_c1s1_001051_00.jpg")
    touch(tmp_path / "bounding_box_test", "0011_c2s1_001101_01.jpg", "0011_c1s1_001151_01.jpg",
          "-1_c1s1_000401_03.jpg", "0000_c4s1_000151_01.jpg")
    data = open_dataset("market1501", tmp_path)
    assert data.problems == []
    assert [(s.pid, s.camid) for s in data.train] == [(0, 1), (0, 2), (1, 3)]
    assert data.test_ids == [11]  # junk (-1) and distractors (0000) are no identity
    assert len(data.test) == 5  # ... but they are images to count and decode
    notes = " ".join(data.listing.notes)
    assert "1 files that are not .jpg images were skipped" in notes and "Thumbs.db" in notes
    assert "1 distractors (0000, kept as negatives) and 1 junk images (-1, ignored by the protocol)" in notes


def test_missing_query_folder_is_named(trees, tmp_path):
    root = copy_tree(trees["market1501"], tmp_path)
    shutil.rmtree(root / "query")
    report = check_dataset(root, "market1501", decode=False)
    assert not report.ok
    assert report.problems[0].startswith(f"missing folder {root / 'query'} (market1501 expects "
                                         "bounding_box_train/, query/ and bounding_box_test/")


@pytest.mark.parametrize("layout, bad, expected", [
    ("market1501", "0002_c1_000451_03.jpg", "PPPP_cCsS_FFFFFF_NN.jpg"),
    ("market1501", "0002_c7s1_000451_03.jpg", "names camera 7; Market-1501 has cameras 1-6"),
    ("dukemtmc", "0005_c2s1_f0046182.jpg", "PPPP_cC_fFFFFFFF.jpg"),
    ("dukemtmc", "0005_c9_f0046182.jpg", "names camera 9; DukeMTMC-reID has cameras 1-8"),
])
def test_a_malformed_file_name_is_named_with_the_expected_pattern(trees, tmp_path, layout, bad, expected):
    root = copy_tree(trees[layout], tmp_path)
    good = next((root / "bounding_box_train").iterdir())
    shutil.copy(good, root / "bounding_box_train" / bad)
    report = check_dataset(root, layout, decode=False)
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert problem.startswith(f"{root / 'bounding_box_train' / bad}: file name {bad!r}") and expected in problem


def test_junk_or_distractors_outside_the_gallery_are_a_problem(trees, tmp_path):
    root = copy_tree(trees["market1501"], tmp_path)
    good = next((root / "query").iterdir())
    shutil.copy(good, root / "query" / "0000_c1s1_000001_01.jpg")
    problems = check_dataset(root, "market1501", decode=False).problems
    assert problems == [f"1 junk (-1) or distractor (0000) images in {root / 'query'}, e.g. "
                        f"{root / 'query' / '0000_c1s1_000001_01.jpg'}; they belong only in bounding_box_test/"]


def test_train_test_identity_overlap(tmp_path):
    touch(tmp_path / "bounding_box_train", "0002_c1_f0000451.jpg")
    touch(tmp_path / "query", "0002_c2_f0001051.jpg")
    touch(tmp_path / "bounding_box_test", "0002_c1_f0001101.jpg")
    problems = open_dataset("dukemtmc", tmp_path).problems
    assert problems and problems[0].startswith("1 identities are in both the training and the test split")


def test_msmt_list_line_with_a_missing_image_is_named_with_file_and_line(trees, tmp_path):
    root = copy_tree(trees["msmt17"], tmp_path)
    lines = (root / "list_gallery.txt").read_text().splitlines()
    rel = lines[2].split(" ")[0]
    (root / "test" / rel).unlink()
    problems = check_dataset(root, "msmt17", decode=False).problems
    assert problems == [f"{root / 'list_gallery.txt'}:3: entry {rel!r} points to a missing image "
                        f"{root / 'test' / rel}"]


def test_msmt_malformed_lines(trees, tmp_path):
    root = copy_tree(trees["msmt17"], tmp_path)
    lines = (root / "list_train.txt").read_text().splitlines()
    rel, label = lines[0].split(" ")
    lines[0] = rel  # no label
    lines[1] = "0000/not_a_name.jpg 0"
    wrong = int(label) + 1
    lines[2] = f"{lines[2].split(' ')[0]} {wrong}"
    (root / "list_train.txt").write_text("\n".join(lines) + "\n")
    problems = check_dataset(root, "msmt17", decode=False).problems
    path = root / "list_train.txt"
    assert problems[0] == f"{path}:1: cannot parse {rel!r}; expected '<relative path> <integer label>'"
    assert problems[1].startswith(f"{path}:2: entry '0000/not_a_name.jpg' does not match the MSMT17 pattern "
                                  "PPPP/PPPP_SSS_CC_")
    assert problems[2].startswith(f"{path}:3: entry ") and f"has label {wrong} but lives in person folder" in problems[2]


def test_msmt_missing_list_and_v2_folders(trees, tmp_path):
    root = copy_tree(trees["msmt17"], tmp_path)
    (root / "list_query.txt").unlink()
    problems = check_dataset(root, "msmt17", decode=False).problems
    assert problems[0].startswith(f"missing list file {root / 'list_query.txt'} (msmt17 expects")
    # V2: the same lists with mask_train_v2/ and mask_test_v2/
    (root / "train").rename(root / "mask_train_v2")
    (root / "test").rename(root / "mask_test_v2")
    shutil.copy(trees["msmt17"] / "list_query.txt", root / "list_query.txt")
    data = require_valid(root, "msmt17")
    assert data.version == "V2" and all("mask_train_v2" in s.path for s in data.train)


def test_msmt_camera_is_the_third_field_and_labels_are_kept(trees):
    data = open_dataset("msmt17", trees["msmt17"])
    first = (trees["msmt17"] / "list_train.txt").read_text().splitlines()[0]
    rel, label = first.split(" ")
    sample = data.train[0]
    assert sample.path.endswith(rel) and sample.pid == int(label) and sample.camid == int(rel.split("_")[2])
    assert all(1 <= s.camid <= 15 for s in data.train + data.test)


def test_data_check_cli_on_the_new_datasets(trees, tmp_path, capsys):
    assert main(["data", "check", str(trees["dukemtmc"]), "--dataset", "dukemtmc", "--no-decode"]) == 0
    assert "dukemtmc dataset at" in capsys.readouterr().out
    root = copy_tree(trees["market1501"], tmp_path)
    shutil.rmtree(root / "bounding_box_test")
    assert main(["data", "check", str(root), "--dataset", "market1501", "--no-decode"]) == 1
    assert f"missing folder {root / 'bounding_box_test'}" in capsys.readouterr().out


def test_synth_layout_details(trees):
    market = trees["market1501"]
    gallery = sorted(p.name for p in (market / "bounding_box_test").iterdir())
    assert any(n.startswith("-1_c") for n in gallery) and any(n.startswith("0000_c") for n in gallery)
    for folder in layouts.SINGLE_FOLDERS.values():
        for path in (market / folder).iterdir():
            layouts.MARKET_NAMES.parse(path.name)
    duke = trees["dukemtmc"]
    train_ids = {layouts.DUKE_NAMES.parse(p.name)[0] for p in (duke / "bounding_box_train").iterdir()}
    query_ids = {layouts.DUKE_NAMES.parse(p.name)[0] for p in (duke / "query").iterdir()}
    gallery_ids = {layouts.DUKE_NAMES.parse(p.name)[0] for p in (duke / "bounding_box_test").iterdir()}
    assert gallery_ids > query_ids and not train_ids & gallery_ids  # gallery-only distractor identities
    msmt = trees["msmt17"]
    assert {p.name for p in msmt.iterdir()} >= {"train", "test", "list_train.txt", "list_val.txt",
                                                "list_query.txt", "list_gallery.txt"}


def test_synth_is_deterministic_and_refuses_one_image_per_camera(trees, tmp_path):
    again = tmp_path / "again"
    generate(again, "market1501", 8, seed=3, size=(32, 16), images=3, workers=2)
    names = sorted(p.relative_to(again).as_posix() for p in again.rglob("*.jpg"))
    assert names == sorted(p.relative_to(trees["market1501"]).as_posix() for p in trees["market1501"].rglob("*.jpg"))
    for rel in names[:5]:
        assert (again / rel).read_bytes() == (trees["market1501"] / rel).read_bytes()
    with pytest.raises(ValueError, match="needs at least 2 images per camera"):
        generate(tmp_path / "one", "dukemtmc", 8, images=1)
