import re
import shutil

from data_trees import copy_tree
from vireid.cli.main import main


def test_synth_writes_a_tree_and_reports_it(tmp_path, capsys):
    out = tmp_path / "sysu"
    rc = main(["synth", "--out", str(out), "--layout", "sysu", "--ids", "4", "--seed", "3", "--size", "32x16",
               "--images", "2", "--workers", "1"])
    assert rc == 0
    stdout = capsys.readouterr().out
    n = len(list(out.rglob("*.jpg")))
    assert re.search(rf"wrote {n} images \(\d+ visible, \d+ infrared\) of 4 identities in the sysu layout to "
                     rf"{re.escape(str(out))} in [\d.]+ s \(\d+ images/s\)", stdout)
    assert (out / "exp" / "test_id.txt").is_file()


def test_synth_errors_are_one_line(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--layout", "llcm", "--ids", "1"]) == 2
    assert capsys.readouterr().err == "vireid: error: ids must be at least 3 (train and test identities are needed), got 1\n"


def test_synth_rejects_a_bad_size(tmp_path, capsys):
    try:
        main(["synth", "--out", str(tmp_path / "x"), "--layout", "sysu", "--ids", "3", "--size", "big"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "size 'big' is not HEIGHTxWIDTH, e.g. 128x64" in capsys.readouterr().err


def test_data_check_prints_the_summary(tiny_trees, capsys):
    assert main(["data", "check", str(tiny_trees["regdb"]), "--dataset", "regdb", "--trial", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"regdb dataset at {tiny_trees['regdb']} (trial 3): OK, 4 training identities, "
                          "4 test identities\nsplit  modality  camera  ids  images\n")
    assert re.search(r"^train  visible   all +4 +12$", out, re.M)


def test_data_check_lists_every_problem_and_fails(tiny_trees, tmp_path, capsys):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    shutil.rmtree(root / "cam4")
    (root / "exp" / "test_id.txt").unlink()
    assert main(["data", "check", str(root), "--dataset", "sysu", "--no-decode"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sysu dataset at {root}: 2 problem(s) found"
    assert lines[1].startswith(f"  - missing folder {root / 'cam4'} ")
    assert lines[2].startswith(f"  - missing identity list {root / 'exp' / 'test_id.txt'} ")
