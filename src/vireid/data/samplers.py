"""Cross-modality identity batch sampler: P identities x (K visible + K infrared) per batch.

What an epoch is (this is where reference samplers are vague): every image of
every identity that has both modalities is drawn at least once, and no image
of an (identity, modality) repeats before all its images have been drawn.
Each identity's shuffled images are cut into "tickets" of K visible + K
infrared indices; an identity gets max(ceil(n_vis / K), ceil(n_ir / K))
tickets (the shorter modality cycles through its images again). The epoch is
``ceil(total tickets / P)`` batches (at least the largest ticket count of
one identity; rounded up to a multiple of the world size), a number that does not depend on the seed,
so ``__len__`` is exact and
constant. Batches are filled greedily: identities whose remaining tickets
equal the remaining batches must go in (which is what guarantees nothing is
lost); the rest are drawn with probability proportional to their remaining
tickets; when fewer than P identities have tickets left, random extra
identities fill the batch with fresh draws.

Everything is drawn from ``numpy.random.default_rng([seed, epoch])``: the same
(seed, epoch) gives the same batches on every machine, for any number of
DataLoader workers. Call :meth:`set_epoch` every epoch. With ``world_size``
> 1 rank r takes global batches r, r + W, r + 2W, ...: ranks see disjoint
batches of the same plan.

A batch lists the P*K visible indices (identity by identity) and then the
P*K infrared indices in the same identity order, the "visible then infrared"
concatenation of the reference code. On a single-modality training set
(Market-1501, DukeMTMC-reID, MSMT17: every sample visible) the same epoch is
drawn over that one modality: tickets of K images, batches of P*K indices. With ``with_seeds=True`` each entry is
``(index, augmentation_seed)`` instead, which :class:`~vireid.data.image_dataset.ImageDataset`
uses to make random augmentation independent of worker scheduling.

Every sampler is registered under its ``data.sampler`` name (:func:`register_sampler`): the config schema's
choices and :func:`build_sampler` read the registry, so a new sampler is its class and one decorator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.registry import import_submodules
from vireid.schema import DataSettings, section_defaults

# --- the registry: data.sampler names -> sampler classes ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplerEntry:
    """A registered sampler.

    ``build(samples, num_ids, num_per_modality, seed=, rank=, world_size=, with_seeds=, **options)``: the
    batch sampler; ``cross_modality``: each batch holds K visible + K infrared images per identity, so a
    single-modality training set is refused; ``options``: the data settings it reads beyond P and K
    (setting name -> its keyword, e.g. ``{"idkl_epoch": "epoch"}``).
    """

    build: Callable[..., Sampler]
    cross_modality: bool = False
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)


_SAMPLERS: dict[str, SamplerEntry] = {}


def register_sampler(name: str, *, cross_modality: bool = False, options: Mapping[str, str] | None = None):
    """Decorator: register a sampler class (or factory) as ``data.sampler: name`` (see :class:`SamplerEntry`)."""

    def add(build):
        if name in _SAMPLERS:
            raise ValueError(f"sampler {name!r} is already registered")
        _SAMPLERS[name] = SamplerEntry(build, cross_modality, dict(options or {}))
        return build

    return add


def unregister_sampler(name: str) -> None:
    """Remove ``name`` (for plugins and tests that register something temporary)."""
    _SAMPLERS.pop(name, None)


def _discover() -> None:
    """Import every module of ``vireid.data``: a sampler in a file of its own registers itself, nothing lists it."""
    import_submodules("vireid.data")


def sampler_names() -> tuple[str, ...]:
    """The registered names, in registration order (what ``data.sampler`` accepts)."""
    _discover()
    return tuple(_SAMPLERS)


def sampler_options() -> tuple[str, ...]:
    """Every data setting some registered sampler reads beyond P and K (e.g. ``idkl_epoch``)."""
    _discover()
    return tuple(dict.fromkeys(option for entry in _SAMPLERS.values() for option in entry.options))


def find_sampler(name: str) -> SamplerEntry:
    _discover()
    if name not in _SAMPLERS:
        raise ValueError(f"unknown data.sampler {name!r}; expected one of {', '.join(_SAMPLERS)}")
    return _SAMPLERS[name]


# --- vireid's own sampler --------------------------------------------------------------------------------------


@register_sampler("balanced")
class CrossModalityIdentitySampler(Sampler):
    def __init__(self, samples: Sequence[Sample], num_ids: int = 8, num_per_modality: int = 4, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = False):
        if num_ids < 1 or num_per_modality < 1:
            raise ValueError(f"num_ids and num_per_modality must be >= 1, got {num_ids} and {num_per_modality}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} with world_size {world_size}")
        self.num_ids, self.k = num_ids, num_per_modality
        self.seed, self.rank, self.world_size, self.with_seeds = seed, rank, world_size, with_seeds
        self.epoch = 0
        self.pools = _pools(samples)
        if len(self.pools) < num_ids:
            kind = ("identities" if single_modality(samples) else
                    "identities with both visible and infrared images")
            raise ValueError(f"the cross-modality sampler needs at least {num_ids} {kind}, found {len(self.pools)}")
        self.tickets = np.array([max(math.ceil(len(pool) / self.k) for pool in pools) for pools in self.pools.values()])
        # An identity appears at most once per batch, so a dominant identity lengthens the epoch.
        batches = max(math.ceil(self.tickets.sum() / num_ids), int(self.tickets.max()))
        self.global_batches = math.ceil(batches / world_size) * world_size

    @property
    def batch_size(self) -> int:
        return self.modalities * self.num_ids * self.k

    @property
    def modalities(self) -> int:
        """2, or 1 on a single-modality training set."""
        return len(next(iter(self.pools.values())))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.global_batches // self.world_size

    def __iter__(self) -> Iterator[list]:
        for number, batch in enumerate(self.plan()):
            if number % self.world_size != self.rank:
                continue
            if self.with_seeds:
                base = np.random.SeedSequence([self.seed, self.epoch, number]).generate_state(len(batch))
                batch = [(index, int(s)) for index, s in zip(batch, base)]
            yield batch

    def plan(self) -> list[list[int]]:
        """All global batches of the current epoch (every rank computes the same plan)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pids = list(self.pools)
        queues = [self._tickets(rng, *self.pools[pid], count=count) for pid, count in zip(pids, self.tickets)]
        remaining = self.tickets.copy()
        batches = []
        for left in range(self.global_batches, 0, -1):
            chosen = self._choose(rng, remaining, left)
            halves = [[] for _ in range(self.modalities)]  # visible then infrared (or the one modality)
            for slot in chosen:
                if remaining[slot] > 0:
                    parts = queues[slot][len(queues[slot]) - remaining[slot]]
                    remaining[slot] -= 1
                else:  # filler identity: a fresh draw
                    parts = [_cycle(rng, pool, self.k) for pool in self.pools[pids[slot]]]
                for half, part in zip(halves, parts):
                    half += part
            batches.append([index for half in halves for index in half])
        return batches

    def _choose(self, rng: np.random.Generator, remaining: np.ndarray, left: int) -> list[int]:
        """P distinct identity slots: forced ones, then weighted by remaining tickets, then fillers."""
        forced = np.flatnonzero(remaining == left)
        others = np.flatnonzero((remaining > 0) & (remaining < left))
        take = min(self.num_ids - len(forced), len(others))
        weights = remaining[others] / remaining[others].sum() if take else None
        drawn = rng.choice(others, size=take, replace=False, p=weights) if take else np.array([], int)
        chosen = list(forced) + list(drawn)
        if len(chosen) < self.num_ids:
            idle = np.setdiff1d(np.arange(len(remaining)), chosen)
            chosen += list(rng.choice(idle, size=self.num_ids - len(chosen), replace=False))
        order = rng.permutation(len(chosen))
        return [int(chosen[i]) for i in order]

    def _tickets(self, rng, *pools: np.ndarray, count: int) -> list[tuple[list, ...]]:
        """``count`` tickets of K indices per pool (visible, infrared; or the one modality's), drawn pool by pool."""
        drawn = [_cycle(rng, pool, count * self.k) for pool in pools]
        return [tuple(d[j * self.k:(j + 1) * self.k] for d in drawn) for j in range(count)]


def single_modality(samples: Sequence[Sample]) -> bool:
    """True when every sample has the same modality (Market-1501, DukeMTMC-reID, MSMT17: all visible)."""
    return len({s.modality for s in samples}) == 1


def _pools(samples: Sequence[Sample]) -> dict[int, tuple[np.ndarray, ...]]:
    """Per identity with both modalities: (visible indices, infrared indices), identities ascending.

    On a single-modality set: (indices,) per identity.
    """
    if samples and single_modality(samples):
        by_pid: dict[int, list] = {}
        for index, sample in enumerate(samples):
            by_pid.setdefault(sample.pid, []).append(index)
        return {pid: (np.array(v),) for pid, v in sorted(by_pid.items())}
    pairs: dict[int, tuple[list, list]] = {}
    for index, sample in enumerate(samples):
        lists = pairs.setdefault(sample.pid, ([], []))
        if sample.modality == VISIBLE:
            lists[0].append(index)
        elif sample.modality == INFRARED:
            lists[1].append(index)
    return {pid: (np.array(v), np.array(i)) for pid, (v, i) in sorted(pairs.items()) if v and i}


def _cycle(rng: np.random.Generator, pool: np.ndarray, n: int) -> list[int]:
    """n indices: whole shuffled passes over ``pool`` (no repeat before every index is used)."""
    passes = [rng.permutation(pool) for _ in range(math.ceil(n / len(pool)))]
    return [int(i) for i in np.concatenate(passes)[:n]]


# --------------------------------------------------------------------------- reference samplers
#
# Ports of the samplers the released codes train with, so that an "epoch"
# means what it means there (``data.sampler``). Each draws its epoch from a
# ``numpy.random.RandomState`` with the reference's call sequence: seeded
# with the reference's seed and fed the reference's listing order, it yields
# the reference's batches exactly (the golden ``sampler_epoch`` vectors pin
# this). In training the state is derived from (seed, epoch), so epochs are a
# pure function of the run's seed as with the default sampler. Batches come
# in vireid's layout (P*K visible then P*K infrared, identity-major, the same
# identity order in both halves).

def epoch_state(seed: int, epoch: int) -> np.random.RandomState:
    """The legacy numpy generator of one epoch (the reference samplers draw from ``np.random``)."""
    return np.random.RandomState(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def agw_epoch_counts(num_visible: int, num_infrared: int, num_ids: int, num_per_modality: int) -> dict[str, int]:
    """How long one epoch of AGW's ``IdentitySampler`` is (also CAJ's and HcTri's: the same file).

    The sampler draws ``floor(N / (P*K)) + 1`` groups of P identities, N the
    larger modality's image count, and the loader yields one group per batch:
    ``batches``. ``len(DataLoader)`` is one less (``len_dataloader``: the
    sampler's ``__len__`` returns N), which is what the reference's log line
    "[i/695]" shows on SYSU-MM01.
    """
    n = max(int(num_visible), int(num_infrared))
    batch = num_ids * num_per_modality
    groups = n // batch + 1
    return {"batches": groups, "len_dataloader": n // batch, "sampler_len": n, "index_len": groups * batch,
            "images_per_epoch": 2 * groups * batch}


def idkl_length_estimate(infrared_counts: Sequence[int], num_instances: int, batch_size: int) -> dict[str, int]:
    """IDKL's ``RandomIdentitySampler.__init__`` length estimate and the ``len(DataLoader)`` it implies.

    ``sum_u (m_u - m_u mod k)``, ``m_u = max(n_ir_u, k)``, infrared only; on
    SYSU-MM01 this gives 99 batches where a pass has ~195. ignite 0.2.1 (what
    IDKL pins) runs an epoch as one full pass, so the estimate only matters
    with ignite >= 0.4, which fixes the epoch length from it.
    """
    k = int(num_instances)
    total = sum(max(int(n), k) - max(int(n), k) % k for n in infrared_counts)
    return {"sampler_len": total, "len_dataloader": total // int(batch_size)}


class PlannedSampler(Sampler):
    """The base of a sampler whose epoch is a plan drawn from (seed, epoch): a subclass writes ``draw(rng)``
    (the epoch's batches, each P*K visible then P*K infrared indices, identity-major) and ``batch_size``; the
    base keeps one epoch's plan, slices it by rank under torchrun and adds per-sample augmentation seeds."""

    fixed_length = True  # every epoch has the same number of batches

    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1, with_seeds: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} with world_size {world_size}")
        self.seed, self.rank, self.world_size, self.with_seeds = seed, rank, world_size, with_seeds
        self.epoch = 0
        self._plans: dict[int, list[list[int]]] = {}

    def identity_pools(self, samples: Sequence[Sample], num_ids: int, num_per_modality: int, who: str) -> None:
        """Check P and K and keep the identities with both modalities (``self.pools``), at least P of them."""
        if num_ids < 1 or num_per_modality < 1:
            raise ValueError(f"num_ids and num_per_modality must be >= 1, got {num_ids} and {num_per_modality}")
        self.num_ids, self.k = num_ids, num_per_modality
        if samples and single_modality(samples):
            raise ValueError(f"{who} draws K visible and K infrared images per identity, but the training set has "
                             f"one modality ({samples[0].modality_name} only); use data.sampler: balanced or pk")
        self.pools = _pools(samples)
        if len(self.pools) < num_ids:
            raise ValueError(f"{who} needs at least {num_ids} identities with both visible and "
                             f"infrared images, found {len(self.pools)}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self, rng: np.random.RandomState | None = None) -> list[list[int]]:
        """All global batches of the current epoch (or of the reference's draw sequence from ``rng``)."""
        if rng is not None:
            return self.draw(rng)
        if self.epoch not in self._plans:
            self._plans = {self.epoch: self.draw(epoch_state(self.seed, self.epoch))}  # keep one epoch
        return self._plans[self.epoch]

    def draw(self, rng: np.random.RandomState) -> list[list[int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.plan()) // self.world_size

    def __iter__(self) -> Iterator[list]:
        batches = self.plan()
        usable = len(batches) // self.world_size * self.world_size  # every rank takes the same number of steps
        for number in range(self.rank, usable, self.world_size):
            batch = batches[number]
            if self.with_seeds:
                base = np.random.SeedSequence([self.seed, self.epoch, number]).generate_state(len(batch))
                batch = [(index, int(s)) for index, s in zip(batch, base)]
            yield batch


@register_sampler("agw", cross_modality=True)
class AGWIdentitySampler(PlannedSampler):
    """AGW's ``utils.py:IdentitySampler`` (CAJ and HcTri ship the same): identities uniform, images with replacement.

    One epoch = ``floor(N / (P*K)) + 1`` batches (N = the larger modality's
    image count, :func:`agw_epoch_counts`); each batch = P distinct
    identities drawn uniformly, K visible and K infrared images of each drawn
    with replacement. Identities lacking a modality are left out.
    """

    def __init__(self, samples: Sequence[Sample], num_ids: int = 8, num_per_modality: int = 4, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = False):
        super().__init__(seed, rank, world_size, with_seeds)
        self.identity_pools(samples, num_ids, num_per_modality, "the AGW identity sampler")
        n_vis = sum(s.modality == VISIBLE for s in samples)
        n_ir = sum(s.modality == INFRARED for s in samples)
        self.counts = agw_epoch_counts(n_vis, n_ir, num_ids, num_per_modality)

    @property
    def batch_size(self) -> int:
        return 2 * self.num_ids * self.k

    def __len__(self) -> int:  # no need to draw the plan: the count is fixed
        return self.counts["batches"] // self.world_size

    def draw(self, rng: np.random.RandomState) -> list[list[int]]:
        pids = np.array(list(self.pools))
        batches = []
        for _ in range(self.counts["batches"]):
            chosen = rng.choice(pids, self.num_ids, replace=False)
            visible, infrared = [], []
            for pid in chosen:
                vis, ir = self.pools[int(pid)]
                visible += rng.choice(vis, self.k).tolist()
                infrared += rng.choice(ir, self.k).tolist()
            batches.append(visible + infrared)
        return batches


@register_sampler("idkl", cross_modality=True, options={"idkl_epoch": "epoch"})
class IDKLIdentitySampler(PlannedSampler):
    """IDKL's ``data/sampler.py:RandomIdentitySampler`` (MPANet lineage), one full pass per epoch.

    Per identity (those with infrared images, in order of their first
    infrared image in the listing): if both modalities have fewer than k/2
    images, k/2 of each are drawn with replacement; otherwise the larger
    modality is cut to the smaller one's size (random subset); both are
    shuffled and paired into chunks of k/2 infrared + k/2 visible, the rest
    dropped. Then batches of p distinct identities (uniform among those with
    chunks left), one chunk each, until fewer than p identities remain. On
    SYSU-MM01 with p = 12, k = 10 this is 194-195 batches (visible images are
    in effect cut to the infrared count per identity), where vireid's
    balanced sampler gives >= 371. The count varies a little from epoch to
    epoch; ``len()`` is the current epoch's.

    ``num_per_modality`` is k/2 (vireid's ``data.k``). An identity with
    fewer than k/2 images in exactly one modality would crash the reference
    (``pop from empty list``); here it is refused up front.

    ``epoch`` (``data.idkl_epoch``): "pass" is what IDKL's pinned ignite
    0.2.1 does, one full pass per epoch. "ignite04" is what the same code
    does under ignite >= 0.4, which fixes the epoch length from
    ``len(DataLoader)`` at start -- the sampler's infrared-only estimate, 99
    on SYSU-MM01 (:func:`idkl_length_estimate`) -- and restarts the iterator
    (a fresh pass) whenever it runs out, so epochs cut across passes.
    """

    EPOCHS = ("pass", "ignite04")

    def __init__(self, samples: Sequence[Sample], num_ids: int = 12, num_per_modality: int = 5, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = False, epoch: str = "pass"):
        super().__init__(seed, rank, world_size, with_seeds)
        if epoch not in self.EPOCHS:
            raise ValueError(f"unknown data.idkl_epoch {epoch!r}; expected one of {', '.join(self.EPOCHS)}")
        self.epoch_mode = epoch
        self.fixed_length = epoch == "ignite04"
        self._passes: dict[int, list[list[int]]] = {}
        self._pass_lengths: list[int] = []
        if num_ids < 1 or num_per_modality < 1:
            raise ValueError(f"num_ids and num_per_modality must be >= 1, got {num_ids} and {num_per_modality}")
        self.num_ids, self.half = num_ids, num_per_modality
        infrared: dict[int, list[int]] = {}
        visible: dict[int, list[int]] = {}
        for index, sample in enumerate(samples):
            (infrared if sample.modality == INFRARED else visible).setdefault(sample.pid, []).append(index)
        self.pids = list(infrared)  # first-seen order, as the reference's dict keys
        bad = [pid for pid in self.pids if not visible.get(pid) or min(len(infrared[pid]), len(visible[pid]))
               < self.half <= max(len(infrared[pid]), len(visible[pid]))]
        if bad:
            raise ValueError(f"the IDKL sampler needs, per identity, at least {self.half} images in both modalities "
                             f"or fewer than {self.half} (but at least one) in both (the reference crashes otherwise); "
                             f"identities {bad[:20]} do not")
        self.infrared, self.visible = infrared, visible
        self._arrays = {pid: (np.array(infrared[pid]), np.array(visible[pid])) for pid in self.pids}
        if len(self.pids) < num_ids:
            raise ValueError(f"the IDKL sampler needs at least {num_ids} identities with infrared images, "
                             f"found {len(self.pids)}")
        self.estimate = idkl_length_estimate([len(infrared[p]) for p in self.pids], 2 * num_per_modality,
                                             2 * num_per_modality * num_ids)

    @property
    def batch_size(self) -> int:
        return 2 * self.num_ids * self.half

    def chunks(self, rng: np.random.RandomState) -> dict[int, list[tuple[list[int], list[int]]]]:
        """Per identity: its (infrared k/2, visible k/2) chunks for one pass, drawn as the reference does."""
        out = {}
        for pid in self.pids:
            ir, vis = self._arrays[pid]
            ir, vis = ir.copy(), vis.copy()
            if len(ir) < self.half and len(vis) < self.half:
                ir = rng.choice(ir, size=self.half, replace=True)
                vis = rng.choice(vis, size=self.half, replace=True)
            if len(ir) > len(vis):
                ir = rng.choice(ir, size=len(vis), replace=False)
            if len(vis) > len(ir):
                vis = rng.choice(vis, size=len(ir), replace=False)
            rng.shuffle(ir)
            rng.shuffle(vis)
            n = len(ir) // self.half
            ir, vis = ir.tolist(), vis.tolist()
            out[pid] = [(ir[c * self.half:(c + 1) * self.half], vis[c * self.half:(c + 1) * self.half])
                        for c in range(n)]
        return out

    def draw(self, rng: np.random.RandomState) -> list[list[int]]:
        queues = {pid: chunks[::-1] for pid, chunks in self.chunks(rng).items()}  # pop() from the end
        available = list(self.pids)
        batches = []
        while len(available) >= self.num_ids:
            chosen = rng.choice(available, self.num_ids, replace=False).tolist()
            visible, infrared = [], []
            for pid in chosen:
                ir, vis = queues[pid].pop()
                infrared += ir
                visible += vis
                if not queues[pid]:
                    available.remove(pid)
            batches.append(visible + infrared)
        return batches

    def plan(self, rng: np.random.RandomState | None = None) -> list[list[int]]:
        if rng is not None or self.epoch_mode == "pass":
            return super().plan(rng)
        if self.epoch not in self._plans:
            length = self.estimate["len_dataloader"]
            if length < 1:
                raise ValueError(f"data.idkl_epoch: ignite04 gives epochs of {length} batches here (the sampler's "
                                 f"estimate {self.estimate['sampler_len']} < batch {self.batch_size}); use 'pass'")
            start, end = self.epoch * length, (self.epoch + 1) * length
            batches, offset, number = [], 0, 0
            while offset < end:
                n = self._pass_length(number)
                if offset + n > start:
                    batches += self._pass(number)[max(start - offset, 0):end - offset]
                offset, number = offset + n, number + 1
            self._plans = {self.epoch: batches}
        return self._plans[self.epoch]

    def _pass(self, number: int) -> list[list[int]]:
        """Pass ``number`` of the endless stream (ignite04), drawn from its own state; the last two are kept."""
        if number not in self._passes:
            self._passes = {k: v for k, v in self._passes.items() if k >= number - 1}
            self._passes[number] = self.draw(epoch_state(self.seed, number))
        return self._passes[number]

    def _pass_length(self, number: int) -> int:
        while len(self._pass_lengths) <= number:
            self._pass_lengths.append(len(self._pass(len(self._pass_lengths))))
        return self._pass_lengths[number]

    @staticmethod
    def reference_order(batch: Sequence[int]) -> list[int]:
        """A batch in the reference's order: per identity k/2 (infrared, visible) pairs, infrared first."""
        n = len(batch) // 2
        return [index for pair in zip(batch[n:], batch[:n]) for index in pair]


@register_sampler("vsd", cross_modality=True)
class VSDIdentitySampler(PlannedSampler):
    """VSD's ``CamRandomIdentitySampler`` epoch: every identity once, in random order, k/2 visible + k/2 infrared.

    Batches of ``num_ids`` identities; the last incomplete batch is dropped
    (``drop_last``): ``floor(identities / num_ids)`` batches, 24 on SYSU-MM01
    with batch 128 = 16 x 8. Images are drawn without replacement where an
    identity has enough, with replacement otherwise.
    """

    def __init__(self, samples: Sequence[Sample], num_ids: int = 16, num_per_modality: int = 4, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = False):
        super().__init__(seed, rank, world_size, with_seeds)
        self.identity_pools(samples, num_ids, num_per_modality, "the VSD sampler")

    @property
    def batch_size(self) -> int:
        return 2 * self.num_ids * self.k

    def __len__(self) -> int:
        return vsd_epoch_length(len(self.pools), self.num_ids) // self.world_size

    def draw(self, rng: np.random.RandomState) -> list[list[int]]:
        pids = list(self.pools)
        order = rng.permutation(len(pids))
        batches = []
        for b in range(vsd_epoch_length(len(pids), self.num_ids)):
            visible, infrared = [], []
            for slot in order[b * self.num_ids:(b + 1) * self.num_ids]:
                vis, ir = self.pools[pids[slot]]
                visible += rng.choice(vis, self.k, replace=len(vis) < self.k).tolist()
                infrared += rng.choice(ir, self.k, replace=len(ir) < self.k).tolist()
            batches.append(visible + infrared)
        return batches


def vsd_epoch_length(num_identities: int, ids_per_batch: int) -> int:
    """Batches in one VSD epoch: every identity once, incomplete last batch dropped."""
    return int(num_identities) // int(ids_per_batch)


@register_sampler("pk")
class PKIdentitySampler(PlannedSampler):
    """The single-modality P x K sampler of reid-strong-baseline (``RandomIdentitySampler``), which
    ReID-Survey's AGW and NFormer train with; one full pass per epoch.

    Per identity (in order of first appearance): its images, drawn K times
    with replacement when it has fewer than K, shuffled and cut into chunks
    of K (the remainder dropped). Then batches of P distinct identities drawn
    uniformly among those with chunks left, one chunk each, until fewer than
    P identities remain. The batch count varies a little from epoch to epoch
    (``len()`` is the current epoch's). A batch is P*K indices, identity by
    identity. Modality is not looked at, so it refuses a visible-infrared
    training set, whose recipes expect the visible-then-infrared layout.
    """

    fixed_length = False

    def __init__(self, samples: Sequence[Sample], num_ids: int = 16, num_per_modality: int = 4, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = False):
        super().__init__(seed, rank, world_size, with_seeds)
        if num_ids < 1 or num_per_modality < 1:
            raise ValueError(f"num_ids and num_per_modality must be >= 1, got {num_ids} and {num_per_modality}")
        if not single_modality(samples):
            raise ValueError("data.sampler: pk draws identities regardless of modality (the single-modality re-ID "
                             "sampler), but this training set has visible and infrared images; use balanced, agw, "
                             "idkl or vsd")
        self.num_ids, self.k = num_ids, num_per_modality
        by_pid: dict[int, list[int]] = {}
        for index, sample in enumerate(samples):
            by_pid.setdefault(sample.pid, []).append(index)
        self.pids = list(by_pid)  # first-seen order, as the reference's dict keys
        self._arrays = {pid: np.array(indices) for pid, indices in by_pid.items()}
        if len(self.pids) < num_ids:
            raise ValueError(f"the P x K sampler needs at least {num_ids} identities (data.p), found {len(self.pids)}")

    @property
    def batch_size(self) -> int:
        return self.num_ids * self.k

    def draw(self, rng: np.random.RandomState) -> list[list[int]]:
        queues = {}
        for pid in self.pids:
            indices = self._arrays[pid]
            if len(indices) < self.k:
                indices = rng.choice(indices, size=self.k, replace=True)
            indices = indices.copy()
            rng.shuffle(indices)
            chunks = len(indices) // self.k
            queues[pid] = [indices[c * self.k:(c + 1) * self.k].tolist() for c in range(chunks)][::-1]
        available = list(self.pids)
        batches = []
        while len(available) >= self.num_ids:
            chosen = [available[i] for i in rng.choice(len(available), self.num_ids, replace=False)]
            batch = []
            for pid in chosen:
                batch += queues[pid].pop()
                if not queues[pid]:
                    available.remove(pid)
            batches.append(batch)
        return batches


def build_sampler(kind: str, samples: Sequence[Sample], num_ids: int, num_per_modality: int, seed: int = 0,
                  rank: int = 0, world_size: int = 1, with_seeds: bool = False, **options) -> Sampler:
    """The batch sampler registered as ``data.sampler: kind``: balanced (vireid's), agw, idkl or vsd (the VI
    references'), pk (the single-modality references').

    ``options``: data settings some sampler reads (:func:`sampler_options`), e.g. ``idkl_epoch`` ("pass" or
    "ignite04", see :class:`IDKLIdentitySampler`); one that ``kind`` does not read must keep its default. On a
    single-modality training set (every sample visible) only the samplers that are not cross-modality apply.
    """
    entry = find_sampler(kind)
    if entry.cross_modality and samples and single_modality(samples):
        raise ValueError(f"data.sampler: {kind} draws K visible and K infrared images per identity, but the training "
                         f"set has one modality ({samples[0].modality_name} only); use data.sampler: balanced "
                         "(vireid's epoch) or pk (reid-strong-baseline's, which AGW's and NFormer's single-modality "
                         "code use)")
    extra = {}
    for setting, value in options.items():
        if setting in entry.options:
            extra[entry.options[setting]] = value
        elif value != _default(setting):
            owners = ", ".join(name for name, e in _SAMPLERS.items() if setting in e.options)
            raise ValueError(f"data.{setting}: {value} applies to data.sampler: {owners} only (got {kind!r})")
    return entry.build(samples, num_ids, num_per_modality, seed=seed, rank=rank, world_size=world_size,
                       with_seeds=with_seeds, **extra)


def _default(setting: str):
    """The default of ``data.<setting>`` (a sampler option), or a ValueError for a setting no sampler reads."""
    if setting not in sampler_options():
        raise ValueError(f"no data.sampler reads data.{setting}; sampler settings: {', '.join(sampler_options())}")
    return section_defaults(DataSettings)[setting]
