"""Image listings and the checked safetensors files."""

import pytest
import torch

from vireid.data.records import INFRARED, VISIBLE
from vireid.deploy.images import fill_modalities, list_images
from vireid.deploy.store import load_checked, load_features, pack_strings, save_checked, save_features, unpack_strings


def test_list_file_paths_modalities_and_comments(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "list.txt"
    listing.write_text("# night shift\na.jpg infrared\n\n/abs/b c.png\nd.png vis\n")
    paths, mods = list_images(listing)
    assert paths == [str(tmp_path / "sub" / "a.jpg"), "/abs/b c.png", str(tmp_path / "sub" / "d.png")]
    assert mods == [INFRARED, None, VISIBLE]
    assert fill_modalities(paths, mods, "visible") == [INFRARED, VISIBLE, VISIBLE]
    with pytest.raises(ValueError, match=r"no modality for /abs/b c.png \(1 of 3 images\)"):
        fill_modalities(paths, mods, None)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no images"):
        list_images(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="no image folder, image file or list file at"):
        list_images(tmp_path / "missing")


def test_strings_round_trip():
    items = ["a", "", "çé/日本.png", "x y"]
    assert unpack_strings(*pack_strings(items)) == items
    assert unpack_strings(*pack_strings([])) == []


def test_checked_files_refuse_another_kind(tmp_path):
    save_checked(tmp_path / "x.st", "vireid-index", {"a": torch.ones(2)}, {"note": {"k": 1}})
    tensors, meta = load_checked(tmp_path / "x.st", "vireid-index", "index")
    assert meta == {"note": {"k": 1}} and torch.equal(tensors["a"], torch.ones(2))
    with pytest.raises(ValueError, match="is not a vireid feature file .format 'vireid-index'"):
        load_checked(tmp_path / "x.st", "vireid-features", "feature file")
    save_features(tmp_path / "f.st", torch.ones(2, 3), ["p", "q"], [0, 1], {"method": "agw"}, [("r", "bad")])
    data = load_features(tmp_path / "f.st")
    assert data["paths"] == ["p", "q"] and data["modalities"] == [0, 1] and data["failed"] == [["r", "bad"]]
