import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_trees import copy_tree
from vireid.data.cache import ImageCache, listing_digest
from vireid.data.channel_aug import train_transform
from vireid.data.datasets import open_dataset
from vireid.data.image_dataset import ImageDataset
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.samplers import CrossModalityIdentitySampler
from vireid.data.transforms import load_image
from vireid.schema import DataSettings

SIZE = (32, 16)


@pytest.fixture
def sysu(tiny_trees):
    return open_dataset("sysu", tiny_trees["sysu"])


def test_items_are_image_pid_camid_modality(sysu):
    data = ImageDataset(sysu.train, SIZE)
    image, pid, camid, modality = data[0]
    sample = sysu.train[0]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
    assert (pid, camid, modality) == (sample.pid, sample.camid, sample.modality)
    assert torch.equal(image, load_image(sample.path, SIZE))


def test_cache_matches_decoding_and_is_reused(sysu, tmp_path):
    paths = [s.path for s in sysu.train]
    cache = ImageCache.build(paths, SIZE, "sysu", tmp_path)
    assert len(cache) == len(paths)
    for i in (0, len(paths) // 2, len(paths) - 1):
        assert torch.equal(cache[i], load_image(paths[i], SIZE))
    again = ImageCache.build(paths, SIZE, "sysu", tmp_path)
    assert again.path == cache.path and os.stat(again.path).st_mtime_ns == os.stat(cache.path).st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path.name]  # no temp file left


def test_cache_is_rebuilt_when_the_listing_or_size_changes(tiny_trees, tmp_path):
    root = copy_tree(tiny_trees["sysu"], tmp_path / "copy")
    paths = [s.path for s in open_dataset("sysu", root).train]
    first = ImageCache.build(paths, SIZE, "sysu", tmp_path / "cache")
    other_size = ImageCache.build(paths, (16, 8), "sysu", tmp_path / "cache")
    assert other_size.path != first.path and first.path.exists()  # another size is another cache
    time.sleep(0.01)
    image = np.zeros((SIZE[0], SIZE[1], 3), np.uint8)
    from PIL import Image

    Image.fromarray(image).save(paths[0])  # the file changed
    rebuilt = ImageCache.build(paths, SIZE, "sysu", tmp_path / "cache")
    assert rebuilt.path != first.path and not first.path.exists()
    assert int(rebuilt[0].max()) <= 1
    assert listing_digest(paths[:-1], SIZE) != listing_digest(paths, SIZE)


def test_dataset_refuses_a_transform_mapping_without_every_modality(sysu):
    with pytest.raises(ValueError, match="transform mapping has no pipeline for modality infrared"):
        ImageDataset(sysu.train, SIZE, {VISIBLE: train_transform("visible")})


def test_dataset_refuses_a_cache_of_another_listing(sysu, tmp_path):
    cache = ImageCache.build([s.path for s in sysu.train[:3]], SIZE, "part", tmp_path)
    with pytest.raises(ValueError, match=r"holds 3 images but the listing has"):
        ImageDataset(sysu.train, SIZE, cache=cache)


def test_loader_with_sampler_seeds_is_deterministic_across_worker_counts(sysu, tmp_path):
    cache = ImageCache.build([s.path for s in sysu.train], SIZE, "sysu", tmp_path)
    transform = {VISIBLE: train_transform("visible"), INFRARED: train_transform("infrared")}
    data = ImageDataset(sysu.train, SIZE, transform, cache=cache)

    def first_batch(workers):
        sampler = CrossModalityIdentitySampler(sysu.train, 2, 2, seed=0, with_seeds=True)
        loader = DataLoader(data, batch_sampler=sampler, num_workers=workers)
        return next(iter(loader))

    images, pids, camids, modalities = first_batch(0)
    assert images.shape == (8, 3, *SIZE) and images.dtype == torch.float32
    assert modalities.tolist() == [VISIBLE] * 4 + [INFRARED] * 4
    assert torch.equal(pids[:4], pids[4:])
    again = first_batch(2)
    assert torch.equal(images, again[0]) and torch.equal(pids, again[1])


def test_train_loader_wires_checks_cache_and_sampler(tiny_trees, tmp_path):
    from vireid.data.check import DatasetError
    from vireid.data.loaders import train_loader

    data = DataSettings(dataset="regdb", height=SIZE[0], width=SIZE[1], p=2, k=2, workers=0, trial=2)
    loader = train_loader(data, tiny_trees["regdb"], cache_dir=tmp_path)
    images, pids, camids, modalities = next(iter(loader))
    assert images.shape == (8, 3, *SIZE) and images.dtype == torch.float32
    assert camids.tolist() == [1] * 4 + [2] * 4
    assert [p.name.split("-")[:3] for p in tmp_path.iterdir()] == [["regdb", "trial2", "32x16"]]
    raw = train_loader(replace(data, trial=None, cache=False), tiny_trees["regdb"], augment_on_device=True)
    assert next(iter(raw))[0].dtype == torch.uint8
    with pytest.raises(DatasetError, match="is not a folder"):
        train_loader(DataSettings(dataset="llcm", workers=0), tmp_path / "missing")


def test_train_batches_resume_mid_epoch_and_augmentations(tiny_trees, tmp_path):
    from vireid.data.augmentations import train_transforms
    from vireid.data.loaders import train_batches

    data = DataSettings(dataset="regdb", height=SIZE[0], width=SIZE[1], p=2, k=2, workers=0, augment="erasing",
                        trial=2)
    batches = train_batches(data, tiny_trees["regdb"], cache_dir=tmp_path)
    full = list(batches.epoch(1))
    tail = list(batches.epoch(1, start=1))
    assert len(full) == len(batches) and len(tail) == len(full) - 1
    for a, b in zip(full[1:], tail):  # same images, same augmentation, same labels
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(full[0][0], list(batches.epoch(2))[0][0])
    with pytest.raises(ValueError, match="unknown augmentation 'cutmix'"):
        train_transforms("cutmix")


def test_split_validation_holds_out_whole_identities_and_relabels():
    from vireid.data.loaders import split_validation
    from vireid.data.records import Sample

    samples = [Sample(f"{p}-{m}-{i}", p, 1, m) for p in (3, 5, 8, 9, 12) for m in (0, 1) for i in range(2)]
    train, val = split_validation(samples, 2, seed=0)
    assert len({s.pid for s in val}) == 2 and len(val) == 8
    assert sorted({s.pid for s in train}) == [0, 1, 2]
    assert not {s.path for s in train} & {s.path for s in val}
    assert split_validation(samples, 2, seed=0) == (train, val)
    with pytest.raises(ValueError, match="data.val_ids must be between 1 and 3"):
        split_validation(samples, 4, seed=0)
