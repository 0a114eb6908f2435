"""Issue 25, command-line values: --device on a machine without it, --device bogus, --grid-rows -2, a binary
file as --images list: each a clear one-line error instead of a traceback, a truncation or a nameless UTF-8 error."""

import pytest
import torch

from deploy_runs import make_run, write_images
from vireid.cli.main import main
from vireid.deploy.images import list_images
from vireid.utils.device import check_device


@pytest.mark.parametrize("argv", [
    ["train", "demo_idkl", "--data-root", "d", "--out", "o"],
    ["eval", "r", "--data-root", "d"],
    ["extract", "r", "--images", "i", "--out", "o"],
    ["index", "r", "--images", "i", "--out", "o"],
    ["search", "i", "--query", "q"],
])
def test_bogus_device_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--device", "bogus"])
    assert stop.value.code == 2
    assert "argument --device: unknown device 'bogus'; expected one of auto, cpu, cuda, cuda:N" in \
        capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_says_so(capsys):
    with pytest.raises(SystemExit):
        main(["extract", "r", "--images", "i", "--out", "o", "--device", "cuda"])
    err = capsys.readouterr().err
    assert "device 'cuda' was asked for but" in err and "use --device cpu" in err
    with pytest.raises(ValueError, match="device 'cuda:3' was asked for"):
        check_device("cuda:3")


def test_good_devices_pass():
    assert check_device("auto") == "auto" and check_device("CPU") == "cpu"
    if torch.cuda.is_available():
        assert check_device("cuda") == "cuda"


def test_negative_grid_rows_is_refused_before_any_work(tmp_path, capsys):
    assert main(["search", str(tmp_path / "none.index"), "--query", "q", "--grid", str(tmp_path / "g.png"),
                 "--grid-rows", "-2"]) == 2
    assert capsys.readouterr().err == "vireid: error: --grid-rows must be >= 1, got -2\n"


def test_a_binary_file_as_images_list_is_named(tmp_path, capsys):
    blob = tmp_path / "photos.bin"
    blob.write_bytes(bytes(range(256)) * 4)  # an archive, or an image with an unknown suffix
    with pytest.raises(ValueError, match=rf"{blob} is not a list file: it holds binary data \(at byte 128\)"):
        list_images(blob)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"a.png\n\0\0\0")
    with pytest.raises(ValueError, match=rf"{nul} is not a list file: it holds binary data \(at byte 6\)"):
        list_images(nul)
    run = make_run(tmp_path / "run")
    assert main(["extract", str(run), "--images", str(blob), "--modality", "visible",
                 "--out", str(tmp_path / "f.safetensors")]) == 2
    assert f"vireid: error: {blob} is not a list file" in capsys.readouterr().err
    write_images(tmp_path / "ok", 1)
    (tmp_path / "list.txt").write_text("ok/img000.png visible\n")
    assert list_images(tmp_path / "list.txt")[0] == [str(tmp_path / "ok" / "img000.png")]


def test_an_image_error_raised_in_a_data_worker_is_still_one_line(tmp_path, capsys, monkeypatch):
    """With DataLoader workers, torch re-raises a worker's error with the worker's traceback in its message."""
    from torch.utils.data import DataLoader, Dataset

    import vireid.cli.extract_cmd as extract_cmd
    from vireid.data.image_file import UnreadableImage

    class Fifo(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise UnreadableImage("cannot read image /d/x.jpg: it is a FIFO, not an image file (not opened)")

    monkeypatch.setattr(extract_cmd, "run_extract", lambda args: list(DataLoader(Fifo(), num_workers=1)))
    assert main(["extract", "r", "--images", "i", "--out", str(tmp_path / "f.safetensors")]) == 2
    assert capsys.readouterr().err == ("vireid: error: cannot read image /d/x.jpg: it is a FIFO, not an image file "
                                       "(not opened)\n")
