import math
from collections import Counter

import numpy as np
import pytest

from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.data.samplers import CrossModalityIdentitySampler


def uneven_samples(seed: int = 0, ids: int = 15) -> list[Sample]:
    """Identities with 1..20 images per modality, one visible-only identity, shuffled order."""
    rng = np.random.default_rng(seed)
    samples = []
    for pid in range(ids):
        for modality in (VISIBLE, INFRARED):
            samples += [Sample(f"{pid}/{modality}/{n}", pid, 1 + modality, modality)
                        for n in range(int(rng.integers(1, 21)))]
    samples += [Sample(f"lonely/{n}", 99, 1, VISIBLE) for n in range(5)]
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


P, K = 4, 3


@pytest.fixture
def samples():
    return uneven_samples()


def test_every_batch_is_p_ids_times_k_visible_plus_k_infrared(samples):
    sampler = CrossModalityIdentitySampler(samples, P, K, seed=1)
    for batch in sampler:
        assert len(batch) == 2 * P * K == sampler.batch_size
        vis, ir = batch[:P * K], batch[P * K:]
        assert all(samples[i].modality == VISIBLE for i in vis) and all(samples[i].modality == INFRARED for i in ir)
        vis_ids = [samples[i].pid for i in vis]
        ir_ids = [samples[i].pid for i in ir]
        assert vis_ids == ir_ids  # same identity order in both halves
        assert [vis_ids[j * K] for j in range(P)] == list(dict.fromkeys(vis_ids))  # blocks of K
        assert len(set(vis_ids)) == P


def test_len_is_exact_and_the_epoch_size_is_as_documented(samples):
    sampler = CrossModalityIdentitySampler(samples, P, K, seed=1)
    pools = Counter((s.pid, s.modality) for s in samples if s.pid != 99)
    tickets = sum(max(math.ceil(pools[(pid, VISIBLE)] / K), math.ceil(pools[(pid, INFRARED)] / K))
                  for pid in range(15))
    assert len(sampler) == math.ceil(tickets / P)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)


def test_no_index_lost_and_no_early_repeat(samples):
    sampler = CrossModalityIdentitySampler(samples, P, K, seed=2)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = Counter(i for batch in sampler for i in batch)
        usable = {i for i, s in enumerate(samples) if s.pid != 99}
        assert set(drawn) == usable  # every image of every two-modality identity, and nothing else
        assert not any(samples[i].pid == 99 for i in drawn)


def test_same_seed_and_epoch_same_batches_other_epoch_other_batches(samples):
    a = CrossModalityIdentitySampler(samples, P, K, seed=3)
    b = CrossModalityIdentitySampler(samples, P, K, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    c = CrossModalityIdentitySampler(samples, P, K, seed=4)
    assert list(a) != list(c)


def test_ranks_take_disjoint_strides_of_the_same_plan(samples):
    full = CrossModalityIdentitySampler(samples, P, K, seed=5, world_size=3)
    plan = full.plan()
    assert len(plan) % 3 == 0
    ranks = [CrossModalityIdentitySampler(samples, P, K, seed=5, rank=r, world_size=3) for r in range(3)]
    for r, sampler in enumerate(ranks):
        sampler.set_epoch(0)
        got = list(sampler)
        assert got == plan[r::3] and len(got) == len(sampler) == len(plan) // 3
    drawn = {i for s in ranks for batch in s for i in batch}
    assert drawn == {i for i, s in enumerate(samples) if s.pid != 99}


def test_augmentation_seeds_are_fixed_per_position(samples):
    sampler = CrossModalityIdentitySampler(samples, P, K, seed=6, with_seeds=True)
    first = next(iter(sampler))
    assert first == next(iter(sampler))
    indices = [i for i, _ in first]
    assert indices == next(iter(CrossModalityIdentitySampler(samples, P, K, seed=6)))
    assert len({s for _, s in first}) == len(first)


def test_identities_with_few_images_repeat_evenly():
    samples = [Sample(f"{p}/{m}/{n}", p, 0, m) for p in range(4) for m in (VISIBLE, INFRARED) for n in range(2)]
    sampler = CrossModalityIdentitySampler(samples, 2, 5, seed=0)
    for batch in sampler:
        counts = Counter(batch)
        assert set(counts.values()) <= {2, 3}  # 5 draws from 2 images: whole passes before repeats


def test_a_dominant_identity_lengthens_the_epoch_instead_of_losing_images():
    samples = [Sample(f"big/{m}/{n}", 0, 0, m) for m in (VISIBLE, INFRARED) for n in range(30)]
    samples += [Sample(f"{p}/{m}", p, 0, m) for p in (1, 2, 3) for m in (VISIBLE, INFRARED)]
    sampler = CrossModalityIdentitySampler(samples, 4, 3, seed=0)
    assert len(sampler) == 10  # 10 tickets of identity 0, 13 tickets in all < 4 x 10
    assert {i for batch in sampler for i in batch} == set(range(len(samples)))


def test_clear_errors():
    few = uneven_samples(ids=3)
    with pytest.raises(ValueError, match="needs at least 4 identities with both visible and infrared images, found 3"):
        CrossModalityIdentitySampler(few, 4, 2)
    with pytest.raises(ValueError, match="rank must be in 0..world_size-1, got rank 2 with world_size 2"):
        CrossModalityIdentitySampler(few, 2, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="num_ids and num_per_modality must be >= 1"):
        CrossModalityIdentitySampler(few, 0, 2)
