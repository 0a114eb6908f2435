"""Keypoints as an extra per-sample input: the file and its errors, flip/crop/resize moving the points with the
image, heat-map peaks, the dataset and batch format with and without keypoints, and synth's keypoint files."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from vireid.data.augmentations import train_transforms
from vireid.data.datasets import open_dataset
from vireid.data.image_dataset import ImageDataset, batch_extras
from vireid.data.keypoints import (
    COCO17,
    FLIP_PERMUTATION,
    HeatmapSpec,
    KeypointFileError,
    KeypointInputs,
    KeypointTable,
    flip_heatmaps,
    flip_points,
    render_heatmaps,
    write_keypoints,
)
from vireid.data.loaders import train_batches
from vireid.data.records import Sample
from vireid.data.transforms import Compose, HorizontalFlip, PadCrop, RandomErasing
from vireid.schema import DataSettings


def close(actual, expected):
    """allclose with the values in the message (torch.testing's first call imports for seconds)."""
    assert torch.allclose(actual.float(), expected.float(), atol=1e-5, rtol=1e-5), (actual, expected)


def _points(**joints) -> torch.Tensor:
    """(17, 3) keypoints, all zero except the named joints: name=(x, y, confidence)."""
    out = torch.zeros(17, 3)
    for name, value in joints.items():
        out[COCO17.index(name)] = torch.tensor(value, dtype=torch.float32)
    return out


def test_flip_permutation_is_coco_left_right():
    assert FLIP_PERMUTATION == (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def test_flip_mirrors_x_and_swaps_left_and_right():
    points = _points(nose=(5.0, 2.0, 1.0), left_wrist=(3.0, 10.0, 0.9), right_wrist=(12.5, 11.0, 0.4))
    flipped = flip_points(points, width=16)
    # x -> 16 - x; the joint that was the left wrist (x 3) is now the *right* wrist at x 13
    close(flipped[COCO17.index("nose")], torch.tensor([11.0, 2.0, 1.0]))
    close(flipped[COCO17.index("right_wrist")], torch.tensor([13.0, 10.0, 0.9]))
    close(flipped[COCO17.index("left_wrist")], torch.tensor([3.5, 11.0, 0.4]))
    close(flip_points(flipped, 16), points)  # an involution


def test_flip_transform_moves_points_with_the_image_from_the_same_draw():
    image = torch.zeros(3, 8, 6, dtype=torch.uint8)
    image[:, 2, 1] = 255  # a marked pixel at x 1 (spans [1, 2), centre 1.5), y 2
    points = _points(left_eye=(1.5, 2.5, 1.0))
    out, moved = HorizontalFlip(p=1.0).with_points(image, points)
    close(out, image.flip(-1))
    ys, xs = torch.nonzero(out[0], as_tuple=True)
    right_eye = moved[COCO17.index("right_eye")]
    assert (float(xs[0]) + 0.5, float(ys[0]) + 0.5) == (right_eye[0].item(), right_eye[1].item()) == (4.5, 2.5)
    assert moved[COCO17.index("left_eye"), 2] == 0  # the absent right eye became an absent left eye
    same, kept = HorizontalFlip(p=0.0).with_points(image, points)
    assert torch.equal(same, image) and torch.equal(kept, points)


def test_crop_shifts_keypoints_with_the_marked_pixel():
    image = torch.zeros(3, 12, 8, dtype=torch.uint8)
    image[:, 7, 3] = 255
    points = _points(nose=(3.5, 7.5, 1.0))
    crop = PadCrop(padding=3)
    for seed in range(6):
        expected = crop(image, torch.Generator().manual_seed(seed))
        out, moved = crop.with_points(image, points, torch.Generator().manual_seed(seed))
        assert torch.equal(out, expected)  # the same draws as without keypoints
        ys, xs = torch.nonzero(out[0], as_tuple=True)
        if len(xs):  # the marked pixel stayed in the window: the nose moved exactly with it
            assert (float(xs[0]) + 0.5, float(ys[0]) + 0.5) == tuple(moved[0, :2].tolist())
    # by hand: top 1, left 5 (of 0..6) moves every point by (3 - 5, 3 - 1) = (-2, +2)
    gen = torch.Generator().manual_seed(0)
    tops, lefts = crop._draw(1, gen)
    _, moved = crop.with_points(image, points, torch.Generator().manual_seed(0))
    close(moved[0, :2], torch.tensor([3.5 + 3 - lefts[0], 7.5 + 3 - tops[0]]))


def test_training_pipeline_gives_the_same_images_with_keypoints():
    raw = torch.randint(0, 256, (3, 32, 16), dtype=torch.uint8)
    points = _points(left_hip=(4.0, 20.0, 1.0))
    for augment in ("plain", "erasing", "caj", "idkl"):
        for modality, pipeline in train_transforms(augment).items():
            plain = pipeline(raw, torch.Generator().manual_seed(11))
            with_points, _ = pipeline.with_points(raw, points, torch.Generator().manual_seed(11))
            assert torch.equal(plain, with_points), (augment, modality)


def test_a_geometric_step_without_point_support_is_refused():
    class Shear:
        geometric = True

        def __call__(self, x, generator=None):
            return x

    with pytest.raises(ValueError, match="cannot move keypoints"):
        Compose([Shear()]).with_points(torch.zeros(3, 4, 4), _points())
    out, _ = Compose([RandomErasing(p=1.0)]).with_points(torch.zeros(3, 8, 8), _points())  # not geometric: fine
    assert out.shape == (3, 8, 8)


def test_heatmap_peak_lands_on_the_keypoint_cell():
    # x 10, y 22 at stride 4: cell coordinate (u, v) = (10 / 4 - 0.5, 22 / 4 - 0.5) = (2, 5)
    points = _points(nose=(10.0, 22.0, 0.8), left_ankle=(0.0, 0.0, 0.0))
    maps = render_heatmaps(points, (8, 4), stride=4, sigma=1.0)
    assert maps.shape == (17, 8, 4)
    nose = maps[0]
    assert divmod(int(nose.argmax()), 4) == (5, 2)
    assert nose[5, 2].item() == pytest.approx(0.8)  # the peak is the confidence
    assert nose[5, 3].item() == pytest.approx(0.8 * math.exp(-0.5))  # one cell away: exp(-1 / (2 sigma^2))
    assert nose[4, 3].item() == pytest.approx(0.8 * math.exp(-1.0))
    assert maps[COCO17.index("left_ankle")].abs().max() == 0  # confidence 0: an empty map
    # between cells: x 12 -> u 2.5, the two cells 2 and 3 tie
    tie = render_heatmaps(_points(nose=(12.0, 22.0, 1.0)), (8, 4), 4, 1.0)[0]
    assert tie[5, 2].item() == pytest.approx(tie[5, 3].item())


def test_flipping_heatmaps_equals_rendering_flipped_points():
    torch.manual_seed(0)
    points = torch.cat([torch.rand(17, 1) * 32, torch.rand(17, 1) * 64, torch.rand(17, 1)], dim=1)
    spec = HeatmapSpec(stride=4, sigma=1.5)
    close(flip_heatmaps(spec.render(points, (64, 32))),
                               spec.render(flip_points(points, 32), (64, 32)))


def test_heatmap_spec_checks():
    with pytest.raises(ValueError, match="not a multiple of data.heatmap_stride 5"):
        HeatmapSpec(stride=5).grid((64, 32))
    with pytest.raises(ValueError, match="heatmap_sigma must be > 0"):
        HeatmapSpec(sigma=0)


# ------------------------------------------------------------------------------------------------ the file


def _write(path, images, **top):
    path.write_text(json.dumps({"format": "vireid-keypoints/1", "layout": "coco17", "images": images, **top}))
    return path


def _entry(n=17, conf=1.0, size=(16, 32)):
    return {"size": list(size), "keypoints": [[1.0, 2.0, conf]] * n}


def test_table_scales_to_the_training_size(tmp_path):
    points = np.zeros((17, 3), np.float32)
    points[0] = (8.0, 30.0, 0.5)
    write_keypoints(tmp_path / "kp.json", {"a/b.jpg": ((16, 32), points)})
    table = KeypointTable.load(tmp_path / "kp.json")
    rows = table.for_samples([Sample(str(tmp_path / "a" / "b.jpg"), 0, 1, 0)], tmp_path, size=(64, 64))
    close(torch.from_numpy(rows[0, 0]), torch.tensor([32.0, 60.0, 0.5]))  # x * 4, y * 2


@pytest.mark.parametrize("entry, message", [
    (_entry(n=16), r"image 'cam1/x\.jpg': expected 17 keypoints .*got 16"),
    ({"size": [16, 32], "keypoints": [[1, 2, 1]] * 16 + [["a", 2, 1]]},
     r"image 'cam1/x\.jpg': keypoint 16 \(right_ankle\) has a non-numeric x \"a\""),
    ({"size": [16, 32], "keypoints": [[1, float("nan"), 1]] * 17}, r"non-numeric y NaN"),
    (_entry(conf=1.5), r"image 'cam1/x\.jpg': keypoint 0 \(nose\) has confidence 1\.5, outside \[0, 1\]"),
    ({"size": [16, 32], "keypoints": [[1, 2]] * 17}, r"keypoint 0 \(nose\) must be \[x, y, confidence\]"),
    ({"keypoints": [[1, 2, 1]] * 17}, r"image 'cam1/x\.jpg': expected an object with \"size\""),
    (_entry(size=(0, 32)), r"\"size\" must be \[width, height\]"),
])
def test_bad_entries_name_the_image_and_what_was_expected(tmp_path, entry, message):
    path = _write(tmp_path / "kp.json", {"cam1/x.jpg": entry})
    with pytest.raises(KeypointFileError, match=message) as error:
        KeypointTable.load(path)
    assert str(path) in str(error.value)


def test_missing_image_and_bad_files(tmp_path):
    path = _write(tmp_path / "kp.json", {"cam1/x.jpg": _entry()})
    table = KeypointTable.load(path)
    with pytest.raises(KeypointFileError, match=r"no keypoints for image 'cam2/y\.jpg'"):
        table.for_samples([Sample(str(tmp_path / "cam2" / "y.jpg"), 0, 2, 0)], tmp_path, (32, 16))
    with pytest.raises(FileNotFoundError, match="keypoint file not found: .*nope.json"):
        KeypointTable.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KeypointFileError, match="bad.json: not valid JSON"):
        KeypointTable.load(tmp_path / "bad.json")
    with pytest.raises(KeypointFileError, match="\"format\": \"vireid-keypoints/1\""):
        KeypointTable.load(_write(tmp_path / "old.json", {}, format="other"))
    with pytest.raises(KeypointFileError, match="layout 'mpii' is not supported"):
        KeypointTable.load(_write(tmp_path / "mpii.json", {}, layout="mpii"))


# ------------------------------------------------------------------------------------------------ data path


def test_synth_writes_a_keypoint_entry_for_every_image(tiny_trees):
    for layout, root in tiny_trees.items():
        table = KeypointTable.load(root / "keypoints.json")
        dataset = open_dataset(layout, root, **({"trial": 1} if layout == "regdb" else {}))
        samples = dataset.train
        rows = table.for_samples(samples, root, (32, 16))  # raises if any image lacks an entry
        assert len(rows) == len(samples) and len(table) >= len(samples)
        visible = rows[:, :, 2] > 0
        assert visible[:, 5:].all()  # body joints are always drawn
        assert (rows[..., 0][visible] >= 0).all() and (rows[..., 0][visible] <= 16).all()
        assert (rows[..., 1][visible] >= 0).all() and (rows[..., 1][visible] <= 32).all()
        # head above shoulders above hips above knees above ankles
        assert (rows[:, 5, 1] < rows[:, 11, 1]).all() and (rows[:, 11, 1] < rows[:, 13, 1]).all()
        assert (rows[:, 13, 1] < rows[:, 15, 1]).all() and (rows[:, 3, 1] < rows[:, 5, 1]).all()


def test_dataset_items_and_batches_with_and_without_keypoints(tiny_trees):
    root = tiny_trees["sysu"]
    data = DataSettings(dataset="sysu", height=32, width=16, p=2, k=2, workers=0, augment="plain", cache=False)
    plain = train_batches(data, root)
    keyed = train_batches(replace(data, keypoints="keypoints.json", heatmap_stride=4), root)
    first, second = next(iter(plain.epoch(0))), next(iter(keyed.epoch(0)))
    assert len(first) == 4 and batch_extras(first) == {}
    assert len(second) == 5 and set(batch_extras(second)) == {"heatmaps"}
    for a, b in zip(first, second[:4]):
        assert torch.equal(a, b)  # the same images, labels and order: keypoints change nothing else
    heatmaps = batch_extras(second)["heatmaps"]
    assert heatmaps.shape == (len(first[0]), 17, 8, 4) and heatmaps.max() > 0.5


def test_dataset_heatmaps_follow_the_flip(tmp_path):
    image = np.zeros((32, 16, 3), np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "a.png")
    sample = Sample(str(tmp_path / "a.png"), 0, 1, 0)
    points = np.zeros((1, 17, 3), np.float32)
    points[0, COCO17.index("left_shoulder")] = (3.0, 11.0, 1.0)
    inputs = KeypointInputs(points, HeatmapSpec(stride=2, sigma=0.5))
    flip = Compose([HorizontalFlip(p=1.0)])
    _, _, _, _, extras = ImageDataset([sample], (32, 16), flip, keypoints=inputs)[(0, 3)]
    maps = extras["heatmaps"]
    assert maps.shape == (17, 16, 8)
    assert maps[COCO17.index("left_shoulder")].max() == 0  # now it is the right shoulder, at x 16 - 3 = 13
    # cell (v, u) = (11 / 2 - 0.5, 13 / 2 - 0.5) = (5, 6)
    assert divmod(int(maps[COCO17.index("right_shoulder")].argmax()), 8) == (5, 6)
