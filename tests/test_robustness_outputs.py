"""Issue 25, output paths checked before any work: an existing directory, a path under a file, a read-only place;
each a one-line error naming the path, before the command reads a model or a dataset."""

import errno

import pytest

from vireid.cli.main import main, os_error_line
from vireid.utils.outputs import OutputPathError, output_dir, output_file

READ_ONLY = "/proc/vireid-no-such-dir/out.json"  # /proc refuses new files on every Linux


def commands(tmp_path, out: str) -> dict[str, list[str]]:
    """Every writing command with ``out`` in its output option; the run and data do not exist, so an error about
    them (rather than about ``out``) would mean the output was checked after the work started."""
    run, data = str(tmp_path / "no-run"), str(tmp_path / "no-data")
    return {
        "train": ["train", "demo_idkl", "--data-root", data, "--out", out],
        "extract": ["extract", run, "--images", data, "--out", out],
        "index": ["index", run, "--images", data, "--out", out],
        "eval --json": ["eval", run, "--data-root", data, "--json", out],
        "search --json": ["search", str(tmp_path / "no.index"), "--query", data, "--json", out],
        "search --grid": ["search", str(tmp_path / "no.index"), "--query", data, "--grid", out],
        "synth": ["synth", "--out", out, "--layout", "sysu", "--ids", "3"],
        "export": ["export", run, "--format", "onnx", "--out", out],
    }


def place(tmp_path, kind: str) -> str:
    if kind == "directory":
        (tmp_path / "adir").mkdir()
        return str(tmp_path / "adir")
    if kind == "under a file":
        (tmp_path / "afile").write_text("x")
        return str(tmp_path / "afile" / "out.x")
    return READ_ONLY


NAMES = ["train", "extract", "index", "eval --json", "search --json", "search --grid", "synth", "export"]
CASES = [(name, kind) for name in NAMES for kind in ("directory", "under a file", "read-only")
         if not (name in ("train", "synth") and kind == "directory")]  # a directory is what those two write


@pytest.mark.parametrize("name, kind", CASES)
def test_bad_output_paths_fail_first_in_one_line(tmp_path, capsys, name, kind):
    out = place(tmp_path, kind)
    assert main(commands(tmp_path, out)[name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vireid: error: ") and err.count("\n") == 1, err
    expected = {"directory": "is a directory", "under a file": "is a file", "read-only": "is not writable"}[kind]
    assert expected in err and (out in err or str(tmp_path / "afile") in err), err


def test_train_and_synth_refuse_an_existing_file_as_their_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for argv in (commands(tmp_path, str(tmp_path / "f"))["train"], commands(tmp_path, str(tmp_path / "f"))["synth"]):
        assert main(argv) == 2
        assert f"--out {tmp_path / 'f'} is a file; it must be a directory" in capsys.readouterr().err


def test_output_checks_pass_for_good_paths(tmp_path):
    assert output_file(tmp_path / "new" / "deeper" / "x.json") == tmp_path / "new" / "deeper" / "x.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert output_file(None) is None
    (tmp_path / "old.json").write_text("{}")
    output_file(tmp_path / "old.json")
    with pytest.raises(OutputPathError, match="already exists"):
        output_file(tmp_path / "old.json", overwrite=False)
    output_dir(tmp_path / "run")
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]  # no probe file left behind


def test_any_os_error_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import vireid.cli.extract_cmd as extract_cmd

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f.safetensors"))

    monkeypatch.setattr(extract_cmd, "run_extract", full_disk)
    assert main(["extract", "r", "--images", "i", "--out", str(tmp_path / "f.safetensors")]) == 1
    assert capsys.readouterr().err == f"vireid: error: {tmp_path / 'f.safetensors'}: No space left on device\n"
    assert os_error_line(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "a -> b: Invalid cross-device link"
