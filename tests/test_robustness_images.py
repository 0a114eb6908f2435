"""Issue 25, images as cameras write them and one file policy: 16/32-bit greyscale scaled by a documented rule
(the same in training and in the extractor), data check reporting modes and bit depths, and unreadable, FIFO and
decompression-bomb files skipped and listed (or refused with --strict) instead of tracebacks or hangs."""

import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_trees import copy_tree
from deploy_runs import make_run, write_images
from robust_helpers import ENV, TINY, vireid
from vireid.cli.main import main
from vireid.data.check import check_dataset
from vireid.data.datasets import open_dataset
from vireid.data.image_file import MAX_PIXELS, UnreadableImage, decode, read_rgb
from vireid.data.transforms import load_image
from vireid.deploy.extractor import Extractor, decode_file


def thermal(path: Path, low: int = 1000, high: int = 30000, seed: int = 0) -> np.ndarray:
    """A 16-bit greyscale PNG as a thermal camera writes it (values far above 255)."""
    values = np.random.default_rng(seed).integers(low, high + 1, size=(40, 20)).astype(np.uint16)
    values[0, 0], values[0, 1] = low, high
    Image.fromarray(values).save(path, format="PNG")
    return values


def png_claiming(path: Path, width: int, height: int) -> None:
    """A 60-byte PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = thermal(tmp_path / "t.png")
    assert decode(tmp_path / "t.png").mode.startswith("I")
    grey = np.asarray(read_rgb(tmp_path / "t.png"))[..., 0].astype(float)
    assert grey.min() == 0 and grey.max() == 255  # minmax: the full 8-bit range
    assert (grey == 255).mean() < 0.01  # was: convert("RGB") made 91 % of the pixels white
    expected = np.rint((values - 1000) * 255.0 / 29000)
    assert np.abs(grey - expected).max() <= 1
    fixed = np.asarray(read_rgb(tmp_path / "t.png", "fixed", 16))[..., 0].astype(float)
    assert np.abs(fixed - np.rint(values * 255.0 / 65535)).max() <= 1
    fourteen = np.asarray(read_rgb(tmp_path / "t.png", "fixed", 14))[..., 0]
    assert fourteen.max() == 255 and fourteen.min() == round(1000 * 255 / 16383)


def test_32_bit_integer_and_float_greyscale(tmp_path):
    Image.fromarray(np.array([[0, 70000], [140000, 35000]], dtype=np.int32), "I").save(tmp_path / "i.tif")
    assert np.asarray(read_rgb(tmp_path / "i.tif"))[..., 0].tolist() == [[0, 128], [255, 64]]
    Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32), "F").save(tmp_path / "f.tif")
    assert np.asarray(read_rgb(tmp_path / "f.tif", "fixed"))[..., 0].tolist() == [[0, 128], [255, 64]]


def test_extractor_decodes_as_training_does(tmp_path):
    thermal(tmp_path / "t.png")
    for rule in ("minmax", "fixed"):
        run = make_run(tmp_path / f"run-{rule}", extra=[f"data.depth_rule={rule}", "data.depth_bits=15"])
        extractor = Extractor(run, device="cpu")
        trained = load_image(tmp_path / "t.png", extractor.size, extractor.decoding["resample"], rule, 15)
        assert torch.equal(decode_file(tmp_path / "t.png", extractor.size, **extractor.decoding), trained)
        array = np.asarray(Image.open(tmp_path / "t.png"), dtype=np.uint16)  # a uint16 array takes the same path
        assert torch.equal(extractor.preprocess(trained[None]), extractor.preprocess(torch.stack(
            extractor._decode([array]))))


def test_evaluation_features_decode_with_the_runs_depth_rule(tmp_path):
    from vireid.data.records import Sample
    from vireid.evaluation.features import image_extractor

    thermal(tmp_path / "t.png")
    run = make_run(tmp_path / "run", extra=["data.depth_rule=fixed", "data.depth_bits=15"])
    extractor = Extractor(run, device="cpu")
    samples = [Sample(str(tmp_path / "t.png"), 0, 3, 1)]
    want = extractor.embed([tmp_path / "t.png"], "infrared")
    got = {rule: image_extractor(extractor.recipe.embed, extractor.size, workers=0, resample="lanczos",
                                 depth_rule=rule, depth_bits=15)(samples) for rule in ("fixed", "minmax")}
    assert torch.allclose(got["fixed"], want, atol=1e-5)  # evaluation sees what extract sees
    assert not torch.allclose(got["minmax"], want, atol=1e-3)  # and the rule matters for this image


def test_data_check_reports_modes_and_bit_depths(tiny_trees, tmp_path, capsys):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    thermal(root / "cam3" / "0001" / "0001.jpg")  # a 16-bit PNG under a camera's usual name
    report = check_dataset(root, "sysu")
    assert report.ok and report.formats["I;16 16-bit"] == 1 and report.formats["RGB 8-bit"] > 10
    assert main(["data", "check", str(root), "--dataset", "sysu"]) == 0
    printed = capsys.readouterr().out
    assert "image formats: I;16 16-bit: 1, RGB 8-bit:" in printed and "scaled to 8 bits by data.depth_rule" in printed


BAD = ("the file is empty", "UnidentifiedImageError", "a decompression bomb", "it is a FIFO")


@pytest.fixture
def broken_root(tiny_trees, tmp_path):
    """A tiny SYSU tree with a zero-byte, a text, a bomb-header and a FIFO "image" among its training images
    (one per identity, each keeping other images); returns (root, [(relative path, expected message)])."""
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    by_pid = {}
    for sample in open_dataset("sysu", root).train:
        by_pid.setdefault(sample.pid, []).append(Path(sample.path))
    victims = [paths[0] for paths in by_pid.values() if len(paths) > 1][:4]
    assert len(victims) == 4
    victims[0].write_bytes(b"")
    victims[1].write_text("not an image\n")
    png_claiming(victims[2], 20000, 20000)
    victims[3].unlink()
    os.mkfifo(victims[3])
    return root, [(str(v), why) for v, why in zip(victims, BAD)]


def assert_listed(text: str, bad) -> None:
    for path, why in bad:
        line = next((line for line in text.splitlines() if path in line), "")
        assert why in line, (path, why, text)


def test_data_check_lists_every_bad_file_and_never_opens_a_fifo(broken_root):
    root, bad = broken_root
    done = subprocess.run(vireid("data", "check", str(root), "--dataset", "sysu"), env=ENV,
                          capture_output=True, text=True, timeout=120)  # was: hangs for ever on the FIFO
    assert done.returncode == 1, done.stderr
    assert_listed(done.stdout, bad)
    assert "4 problem(s) found" in done.stdout


def test_training_skips_and_lists_bad_files_or_refuses_them_with_strict(broken_root, tmp_path, caplog, capsys):
    root, bad = broken_root
    args = ["train", "demo_idkl", *TINY, "--data-root", str(root)]
    assert main([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 2  # was: a PIL traceback
    err = capsys.readouterr().err
    assert "4 training image(s) cannot be read (--strict stops here)" in err
    assert_listed(err, bad)
    assert not (tmp_path / "strict" / "checkpoint.pt").exists()
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert "skipping 4 training image(s) that cannot be read" in caplog.text
    assert_listed(caplog.text, bad)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("claim", [(20000, 20000), (9000, 8000)])
def test_a_bomb_header_is_refused_by_name(tmp_path, claim):
    assert claim[0] * claim[1] > MAX_PIXELS
    png_claiming(tmp_path / "bomb.png", *claim)
    with pytest.raises(UnreadableImage, match=r"cannot decode image .*bomb.png: its header claims .* a decompression "
                                               "bomb"):
        read_rgb(tmp_path / "bomb.png")


def test_extract_index_and_search_skip_and_list_bad_files(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    folder = tmp_path / "gallery"
    write_images(folder, 4)
    png_claiming(folder / "bomb.png", 20000, 20000)  # was: DecompressionBombError aborted each command
    (folder / "empty.png").write_bytes(b"")
    os.mkfifo(folder / "pipe.png")
    index = tmp_path / "g.index"
    assert main(["index", str(run), "--images", str(folder), "--modality", "visible", "--out", str(index)]) == 0
    printed = capsys.readouterr()
    assert "+4 ->" in printed.out
    text = printed.out + printed.err
    assert "bomb.png" in text and "empty.png" in text and "pipe.png: it is a FIFO" in text
    assert main(["extract", str(run), "--images", str(folder), "--modality", "visible",
                 "--out", str(tmp_path / "f.safetensors")]) == 0
    assert main(["search", str(index), "--query", str(folder), "--query-modality", "infrared",
                 "--grid", str(tmp_path / "grid.png")]) == 0
    assert main(["index", str(run), "--images", str(folder), "--modality", "visible", "--out",
                 str(tmp_path / "s.index"), "--strict"]) == 2
    assert "--strict stops at the first unreadable image" in capsys.readouterr().err


def test_eval_with_a_fifo_in_the_test_set_stops_with_its_name(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["sysu"], tmp_path)
    victim = Path(open_dataset("sysu", root).test[0].path)
    victim.unlink()
    os.mkfifo(victim)
    run = make_run(tmp_path / "run")
    done = subprocess.run(vireid("eval", str(run), "--data-root", str(root), "--protocol", "sysu/all/single/seeded"),
                          env=ENV, capture_output=True, text=True, timeout=300)  # was: hangs for ever
    assert done.returncode == 2, done.stderr
    assert f"cannot read image {victim}: it is a FIFO" in done.stderr
    assert "Traceback" not in done.stderr


def test_visualize_cam_skips_and_lists_bad_files(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    png_claiming(folder / "bomb.png", 20000, 20000)
    assert main(["visualize", "cam", str(run), "--images", str(folder), "--modality", "infrared",
                 "--out", str(tmp_path / "cam.png")]) == 0
    printed = capsys.readouterr()
    assert "2 images" in printed.out and "bomb.png" in printed.err and "decompression bomb" in printed.err
    assert (tmp_path / "cam.png").is_file()
