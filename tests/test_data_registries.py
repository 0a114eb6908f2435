"""The sampler and augmentation registries: a name registered in a test is accepted by the config schema and
used by the loader; unknown names list the registered ones."""

import pytest
import torch
from torch.utils.data import Sampler

from vireid.data.augmentations import register_augmentation, train_transforms, unregister_augmentation
from vireid.data.loaders import train_batches
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.samplers import build_sampler, register_sampler, sampler_names, unregister_sampler
from vireid.data.transforms import Compose, ToFloat
from vireid.schema import DataSettings, parse_section


class FirstImages(Sampler):
    """Two batches: images 0-3, then 4-7 of the training listing (whatever their identities)."""

    def __init__(self, samples, num_ids, num_per_modality, seed=0, rank=0, world_size=1, with_seeds=False):
        self.with_seeds = with_seeds
        self.batches = [[0, 1, 2, 3], [4, 5, 6, 7]]

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield [(i, 7) for i in batch] if self.with_seeds else batch


@pytest.fixture
def first_images():
    register_sampler("first_images")(FirstImages)
    yield FirstImages
    unregister_sampler("first_images")


class Marked:
    """ToFloat with a flag, to see which pipeline the loader used."""

    def __init__(self):
        self.calls = 0
        self.pipeline = Compose([ToFloat()])

    def __call__(self, x, generator=None):
        self.calls += 1
        return self.pipeline(x, generator)


@pytest.fixture
def no_augment():
    marked = Marked()

    @register_augmentation("as_is")
    def as_is(padding, erasing):
        return {VISIBLE: marked, INFRARED: marked}

    yield marked
    unregister_augmentation("as_is")


def _settings(**values) -> DataSettings:
    return parse_section(DataSettings, {"dataset": "regdb", "height": 32, "width": 16, "p": 2, "k": 2, "workers": 0,
                                        "cache": False, **values}, "data")


def test_a_registered_sampler_is_a_valid_setting_and_the_loader_uses_it(first_images, tiny_trees):
    data = _settings(sampler="first_images")  # the schema's choices are the registry's names
    batches = train_batches(data, tiny_trees["regdb"])
    assert isinstance(batches.sampler, FirstImages) and len(batches) == 2
    images, pids, _, _ = next(iter(batches.epoch(0)))
    assert images.shape == (4, 3, 32, 16)
    assert pids.tolist() == [batches.dataset.samples[i].pid for i in range(4)]


def test_unknown_sampler_names_list_the_registered_ones(first_images):
    with pytest.raises(ValueError, match="data.sampler must be one of balanced, agw, idkl, vsd, pk, first_images, "
                                         "got 'random'"):
        _settings(sampler="random")
    with pytest.raises(ValueError, match="unknown data.sampler 'random'; expected one of balanced, agw, idkl, vsd, "
                                         "pk, first_images"):
        build_sampler("random", [], 2, 2)
    unregister_sampler("first_images")
    assert "first_images" not in sampler_names()
    with pytest.raises(ValueError, match="data.sampler must be one of balanced, agw, idkl, vsd, pk, got"):
        _settings(sampler="first_images")


def test_a_registered_augmentation_is_a_valid_setting_and_the_loader_uses_it(no_augment, tiny_trees):
    batches = train_batches(_settings(augment="as_is"), tiny_trees["regdb"])
    images = next(iter(batches.epoch(0)))[0]
    assert no_augment.calls == len(images) == 8
    assert images.dtype == torch.float32 and float(images.min()) >= 0 and float(images.max()) <= 1  # not normalised


def test_unknown_augmentation_names_list_the_registered_ones(no_augment):
    with pytest.raises(ValueError, match="data.augment must be one of plain, erasing, gray, idkl, caj, as_is, got 'cutmix'"):
        _settings(augment="cutmix")
    with pytest.raises(ValueError, match="unknown augmentation 'cutmix'; expected one of plain, erasing, gray, idkl, caj, "
                                         "as_is"):
        train_transforms("cutmix")
    with pytest.raises(ValueError, match="augmentation 'as_is' is already registered"):
        register_augmentation("as_is")(lambda padding, erasing: {})
