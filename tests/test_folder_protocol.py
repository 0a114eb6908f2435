"""The folder protocol: your own labelled images, one modality against the other."""

import pytest
import torch
from PIL import Image

from vireid.data.records import INFRARED, NO_CAMERA, VISIBLE
from vireid.evaluation import evaluate_protocol, get_protocol


def folder_tree(root, people=3, per=2, cameras=False):
    for word in ("visible", "infrared"):
        for p in range(people):
            for i in range(per):
                sub = root / word / f"{p:02d}" / (f"cam{1 if word == 'visible' else 2}" if cameras else "")
                sub.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 16), (p * 40, i * 40, 0)).save(sub / f"{i}.png")
    return root


def perfect(samples):
    """A feature that is the identity itself: rank-1 must be 100%."""
    return torch.nn.functional.one_hot(torch.tensor([s.pid for s in samples]), 8).float()


def test_i2v_and_v2i_split_by_modality_without_a_camera_rule(tmp_path):
    root = folder_tree(tmp_path / "mine")
    split = get_protocol("folder/i2v").build(root, 0)
    assert {s.modality for s in split.query} == {INFRARED} and {s.modality for s in split.gallery} == {VISIBLE}
    assert len(split.query) == len(split.gallery) == 6 and split.rule == "regdb"
    assert {s.camid for s in split.query} == {NO_CAMERA}
    v2i = get_protocol("folder/v2i").build(root, 0)
    assert {s.modality for s in v2i.query} == {VISIBLE}
    result = evaluate_protocol("folder/i2v", root, perfect)
    assert result.trials[0]["rank1"] == 1.0 and result.trials[0]["mAP"] == 1.0


def test_cameras_switch_the_same_camera_rule_on(tmp_path):
    split = get_protocol("folder/i2v").build(folder_tree(tmp_path / "cams", cameras=True), 0)
    assert split.rule == "llcm" and {s.camid for s in split.gallery} == {1}


def test_a_root_that_is_not_a_folder_dataset_is_named(tmp_path):
    (tmp_path / "bad" / "visible").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"bad is not a folder dataset: missing folder .*infrared"):
        get_protocol("folder/i2v").build(tmp_path / "bad", 0)
