import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import optional
from data_trees import TINY
from vireid.data import layouts
from vireid.synth.generator import generate
from vireid.synth.render import Garment, make_camera, make_identity, render


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def files(root: Path, pattern: str = "*") -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(pattern) if p.is_file())


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path, tiny_trees):
    again = tmp_path / "again"
    generate(again, "sysu", TINY["ids"], seed=TINY["seed"], size=TINY["size"], images=TINY["images"], workers=2)
    assert tree_digest(again) == tree_digest(tiny_trees["sysu"])


def test_another_seed_gives_other_images(tmp_path, tiny_trees):
    other = tmp_path / "other"
    generate(other, "regdb", TINY["ids"], seed=TINY["seed"] + 1, size=TINY["size"], images=TINY["images"], workers=1)
    a, b = tree_digest(other), tree_digest(tiny_trees["regdb"])
    shared = set(a) & set(b)
    assert sum(a[k] != b[k] for k in shared) > len(shared) // 2


def test_sysu_layout_is_the_real_one(tiny_trees):
    root = tiny_trees["sysu"]
    images = files(root, "*.jpg")
    assert images and all(re.fullmatch(r"cam[1-6]/\d{4}/\d{4}\.jpg", p) for p in images)
    split = {n: layouts.read_id_line(root / "exp" / f"{n}_id.txt") for n in ("train", "val", "test")}
    assert (root / "exp" / "train_id.txt").read_text().count("\n") == 1
    all_ids = split["train"] + split["val"] + split["test"]
    assert sorted(all_ids) == list(range(1, TINY["ids"] + 1))  # a partition
    for pid in all_ids:
        cams = {int(p[3]) for p in images if p[5:9] == f"{pid:04d}"}
        assert cams & set(layouts.SYSU_VISIBLE_CAMS) and cams & set(layouts.SYSU_INFRARED_CAMS), pid
    # the reference's fixed offsets: camera 15th from the end, pid 13..10 from the end
    full = str(root / images[0])
    assert full[-15] == images[0][3] and full[-13:-9] == images[0][5:9]


def test_sysu_rand_perm_cam_holds_permutations_of_each_folder(tiny_trees):
    scipy_io = optional("scipy.io")
    root = tiny_trees["sysu"]
    cells = scipy_io.loadmat(root / "exp" / "rand_perm_cam.mat")["rand_perm_cam"]
    assert cells.shape == (6, 1)
    for cam in range(1, 7):
        for pid in range(1, TINY["ids"] + 1):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            perm = cells[cam - 1][0].squeeze()[pid - 1]  # how the usual Python evaluation reads it
            n = len(list(folder.iterdir())) if folder.is_dir() else 0
            if n == 0:
                assert perm.size == 0
            else:
                assert perm.shape == (10, n)
                assert all(sorted(row) == list(range(1, n + 1)) for row in perm.astype(int))


def test_infrared_images_are_three_equal_grey_channels_and_visible_ones_colour(tiny_trees):
    root = tiny_trees["sysu"]
    ir = np.asarray(Image.open(next((root / "cam3").rglob("*.jpg"))).convert("RGB")).astype(int)
    vis = np.asarray(Image.open(next((root / "cam1").rglob("*.jpg"))).convert("RGB")).astype(int)
    assert np.abs(ir[..., 0] - ir[..., 1]).max() <= 2 and np.abs(ir[..., 0] - ir[..., 2]).max() <= 2
    assert np.abs(vis[..., 0] - vis[..., 2]).mean() > 5


def test_regdb_lists_split_each_trial_in_two_disjoint_halves(tiny_trees):
    root = tiny_trees["regdb"]
    for trial in layouts.REGDB_TRIALS:
        folders = {}
        for split in ("train", "test"):
            vis = layouts.read_index_list(root / "idx" / f"{split}_visible_{trial}.txt")
            thm = layouts.read_index_list(root / "idx" / f"{split}_thermal_{trial}.txt")
            assert [label for _, label in vis] == [label for _, label in thm]
            assert sorted({label for _, label in vis}) == list(range(len({label for _, label in vis})))
            assert all((root / rel).is_file() for rel, _ in vis + thm)
            assert all(re.fullmatch(r"Visible/\d+/(fe)?male_(front|back)_v_\d{5}_\d+\.bmp", r) for r, _ in vis)
            # a dual camera: thermal image n pairs with visible image n
            assert [r.replace("Visible", "Thermal").replace("_v_", "_t_") for r, _ in vis] == [r for r, _ in thm]
            folders[split] = {rel.split("/")[1] for rel, _ in vis}
        assert not folders["train"] & folders["test"]
        assert len(folders["train"] | folders["test"]) == TINY["ids"]


def test_llcm_layout_parses_with_the_first_cam_rule(tiny_trees):
    root = tiny_trees["llcm"]
    assert (root / "test_nir" / "cam3").is_dir() and not any((root / "test_nir" / "cam3").iterdir())
    test_ids = layouts.read_id_line(root / "idx" / "test_id.txt")
    for rel in files(root, "*.jpg"):
        after = rel[rel.index("cam"):]
        assert rel.count("cam") == 1 and re.fullmatch(r"cam\d/\d{4}/\d{4}_c0\d_f\d{4}\.jpg", after), rel
        assert (int(after[5:9]) in test_ids) == rel.startswith("test_")
    train = layouts.read_index_list(root / "idx" / "train_vis.txt")
    labels = sorted({label for _, label in train})
    assert labels == list(range(TINY["ids"] - len(test_ids)))


def test_infrared_ignores_clothing_colour_but_visible_does_not():
    size = (64, 32)
    person = make_identity(3, 7)
    recoloured = Garment(np.array([0.9, 0.1, 0.1]), np.array([0.1, 0.1, 0.9]), person.top.pattern,
                         person.top.material, person.top.period)
    other = person.__class__(**{**person.__dict__, "top": recoloured})
    ir, vis = make_camera(3, 2, True, True, size), make_camera(3, 2, False, True, size)
    assert np.array_equal(render(person, ir, (1, 2)), render(other, ir, (1, 2)))
    assert not np.array_equal(render(person, vis, (1, 2)), render(other, vis, (1, 2)))


def body_colours(image: np.ndarray) -> np.ndarray:
    """Crude re-ID feature: mean colour of the central strip at torso, hip and leg height."""
    h, w = image.shape[:2]
    strip = image[:, w // 3: 2 * w // 3].astype(float)
    bands = [(0.3, 0.5), (0.5, 0.65), (0.65, 0.9)]
    return np.concatenate([strip[int(h * a):int(h * b)].reshape(-1, 3).mean(0) for a, b in bands])


@pytest.mark.parametrize("scene, indoor", [(1, True), (4, False)])
def test_identities_are_recognisable_across_poses_in_a_visible_camera(scene, indoor):
    """The task is learnable: even a crude feature finds the same person far above chance (1/12)."""
    camera = make_camera(0, scene, False, indoor, (64, 32))
    people = [make_identity(0, pid) for pid in range(1, 13)]
    gallery = np.stack([body_colours(render(p, camera, (i, 1))) for i, p in enumerate(people)])
    query = np.stack([body_colours(render(p, camera, (i, 2))) for i, p in enumerate(people)])
    nearest = np.abs(query[:, None] - gallery[None]).mean(-1).argmin(1)
    assert (nearest == np.arange(len(people))).mean() >= 0.4


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "market"}, "unknown layout 'market'"),
    ({"ids": 2}, "ids must be at least 3"),
    ({"images": 0}, "images per camera must be at least 1"),
    ({"size": (8, 8)}, "size must be (height, width)"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    args = {"layout": "sysu", "ids": 4, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(tmp_path / "x", args.pop("layout"), args.pop("ids"), **args)


def test_refuses_to_overwrite_a_non_empty_folder_and_leaves_no_temp(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        generate(out, "regdb", 3, images=1, size=(16, 16), workers=1)
    assert (out / "keep.txt").read_text() == "mine"
    generate(out, "regdb", 3, images=1, size=(16, 16), workers=1, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "idx" / "train_visible_1.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sample_grid_rows_are_identities_with_grey_infrared_columns():
    from vireid.synth.generator import sample_grid

    grid = sample_grid(seed=0, ids=2, size=(32, 16), per_camera=1, gap=2)
    assert grid.shape == (2 * 32 + 2, 6 * 16 + 5 * 3 * 2, 3)  # wider gaps between cameras
    infrared = grid[:32, -16:].astype(int)  # cam 6 of identity 1
    visible = grid[:32, :16].astype(int)  # cam 1
    assert np.abs(infrared[..., 0] - infrared[..., 2]).max() == 0
    assert np.abs(visible[..., 0] - visible[..., 2]).max() > 0


def test_overwrite_replaces_a_plain_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        generate(out, "llcm", 3, images=1, size=(16, 16), workers=1)
    generate(out, "llcm", 3, images=1, size=(16, 16), workers=1, overwrite=True)
    assert out.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
