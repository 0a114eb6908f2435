"""The released-code presets train run for run like their references: epoch length, sampler semantics,
augmentation parameters, LR per epoch, reference numerics switches and fp32 distances under autocast."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from conftest import golden_root
from vireid.app.runs import resolve_config_path
from vireid.config import load_config
from vireid.data.augmentations import IDKL_PAD_FILL, train_transforms
from vireid.data.image_dataset import ImageDataset, collate_views
from vireid.data.loaders import TrainBatches, second_views
from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.data.samplers import AGWIdentitySampler, IDKLIdentitySampler, build_sampler
from vireid.data.transforms import PadCrop, RandomErasing, torchvision_erasing
from vireid.engine.optim import lr_factor
from vireid.engine.trainer import Trainer
from vireid.losses import adp_loss, hetero_center_triplet, pairwise_sq_dist, triplet_hard, wrt_loss
from vireid.losses.weighted import weighted_parts
from vireid.methods import build_recipe
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses
from vireid.schema import TrainSettings, parse_section

# ------------------------------------------------------------------ epoch length on SYSU-MM01 counts

# Iterations per epoch of the released codes on the official SYSU-MM01 training split
# (395 ids, 22,258 visible / 11,909 infrared), measured by running them (golden README-methods.md).
REFERENCE_STEPS = {"agw_sysu": 696, "caj_sysu": 696, "agw_regdb": 65}
IDKL_PRESETS = ("idkl_sysu", "idkl_paper_sysu", "idkl_regdb")


def _golden(name: str):
    path = golden_root() / "methods" / name
    if not path.is_file():
        pytest.fail(f"golden sampler counts not found: {path} (set VIREID_GOLDEN)")
    return np.load(path)


def _listing(counts: np.ndarray, orig_ids: np.ndarray) -> list[Sample]:
    """Samples with the per-identity, per-camera counts (cameras 3 and 6 infrared), camera-major."""
    out = []
    for column in range(counts.shape[1]):
        modality = INFRARED if column in (2, 5) else VISIBLE
        for label in np.argsort(orig_ids, kind="stable"):
            sample = Sample(f"cam{column + 1}/{label}.jpg", int(label), column + 1, modality)
            out += [sample] * int(counts[label, column])
    return out


def _sysu_listing():
    d = _golden("sampler_idkl_01_sysu_p12k10.npz")
    listing = _listing(d["cam_counts"], d["orig_ids"])
    assert sum(s.modality == VISIBLE for s in listing) == 22258
    assert sum(s.modality == INFRARED for s in listing) == 11909
    return listing, d


def _regdb_listing():
    d = _golden("sampler_idkl_02_regdb_p6k10.npz")
    return _listing(d["cam_counts"], d["orig_ids"]), d


def _preset_batches(name: str, listing) -> TrainBatches:
    """The preset's sampler over ``listing``, wrapped as the training path wraps it (no image is read)."""
    data = load_config(resolve_config_path(name))["data"]
    sampler = build_sampler(data["sampler"], listing, data["p"], data["k"], seed=0)
    return TrainBatches(ImageDataset(listing, (data["height"], data["width"])), sampler, workers=0)


@pytest.mark.parametrize("name", sorted(REFERENCE_STEPS))
def test_agw_lineage_presets_have_the_reference_epoch_length(name):
    listing, _ = _regdb_listing() if "regdb" in name else _sysu_listing()
    batches = _preset_batches(name, listing)
    assert [batches.epoch_length(e) for e in range(3)] == [REFERENCE_STEPS[name]] * 3
    assert batches.fixed_epoch_length


def test_hctri_setting_on_the_agw_sampler_gives_464():
    listing, _ = _sysu_listing()
    assert len(AGWIdentitySampler(listing, num_ids=6, num_per_modality=8)) == 464  # HcTri 6 x (8 + 8)


@pytest.mark.parametrize("name", IDKL_PRESETS)
def test_idkl_presets_have_the_reference_epoch_length(name):
    listing, golden = _regdb_listing() if "regdb" in name else _sysu_listing()
    batches = _preset_batches(name, listing)
    lengths = [batches.epoch_length(e) for e in range(4)]
    reference = set(golden["expected_batches_over_seeds"].tolist())  # SYSU: 194-195 (30 seeds); RegDB: 68
    assert set(lengths) <= reference, (lengths, reference)
    assert batches.sampler.batch_size == (120 if "sysu" in name else 60)
    assert not batches.fixed_epoch_length or len(reference) == 1


def test_balanced_sampler_is_about_twice_as_long_on_sysu():
    """Why the presets name their sampler: vireid's every-image-once epoch is 371+ batches at 12 x (5 + 5)."""
    listing, _ = _sysu_listing()
    assert len(build_sampler("balanced", listing, 12, 5)) >= 371


def test_trainer_logs_steps_per_epoch_and_total(tmp_path, caplog):
    listing, _ = _sysu_listing()
    batches = _preset_batches("agw_sysu", listing)
    recipe = _TinyRecipe()
    trainer = Trainer(recipe, batches, TrainSettings(epochs=81, optimizer="sgd", lr=0.1), tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="vireid"):
        info = trainer.log_schedule()
    assert info == {"steps_per_epoch": 696, "epochs": 81, "total_steps": 56376, "exact": True}
    assert "696 steps per epoch" in caplog.text and "56376 steps in total" in caplog.text
    idkl = Trainer(recipe, _preset_batches("idkl_sysu", listing), TrainSettings(epochs=160), tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="vireid"):
        info = idkl.log_schedule()
    assert info["steps_per_epoch"] in (194, 195) and not info["exact"] and "about" in caplog.text


class _TinyRecipe(Method):
    name = "tiny"

    def __init__(self):
        self.model = torch.nn.Linear(2, 2)

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def training_step(self, model, batch):
        raise AssertionError("not called")


# ------------------------------------------------------------------ sampler semantics


def _toy_listing(vis=(6, 3, 8, 5, 4), ir=(4, 3, 5, 6, 2)):
    out = [Sample("", pid, 1, VISIBLE) for pid, n in enumerate(vis) for _ in range(n)]
    return out + [Sample("", pid, 3, INFRARED) for pid, n in enumerate(ir) for _ in range(n)]


def test_agw_sampler_batches_are_p_identities_with_k_images_each_in_vireid_layout():
    listing = _toy_listing()
    sampler = AGWIdentitySampler(listing, num_ids=3, num_per_modality=2, seed=4)
    assert len(sampler) == max(26, 20) // 6 + 1  # floor(N / (P*K)) + 1
    for batch in sampler:
        vis, ir = batch[:6], batch[6:]
        assert all(listing[i].modality == VISIBLE for i in vis) and all(listing[i].modality == INFRARED for i in ir)
        pids_v, pids_i = [listing[i].pid for i in vis], [listing[i].pid for i in ir]
        assert pids_v == pids_i and len(set(pids_v)) == 3 and pids_v[::2] == pids_v[1::2]
    sampler.set_epoch(1)
    again = AGWIdentitySampler(listing, num_ids=3, num_per_modality=2, seed=4)
    again.set_epoch(1)
    assert list(sampler) == list(again)  # a pure function of (seed, epoch)
    again.set_epoch(2)
    assert list(sampler) != list(again)


def test_idkl_sampler_cuts_to_the_smaller_modality_and_uses_each_image_once():
    listing = _toy_listing(vis=(12, 9, 4, 6), ir=(4, 5, 8, 6))
    sampler = IDKLIdentitySampler(listing, num_ids=2, num_per_modality=2, seed=0)
    batches = list(sampler)
    drawn = [i for b in batches for i in b]
    assert len(drawn) == len(set(drawn))  # no image twice in a pass
    per_pid = np.bincount([listing[i].pid for i in drawn], minlength=4)
    assert all(per_pid[p] <= 2 * min(v, r) for p, (v, r) in enumerate([(12, 4), (9, 5), (4, 8), (6, 6)]))
    for batch in batches:
        order = IDKLIdentitySampler.reference_order(batch)  # I, V, I, V, ... per identity
        assert [listing[i].modality for i in order] == [INFRARED, VISIBLE] * 4
        assert [listing[i].pid for i in order[::2]] == [listing[i].pid for i in order[1::2]]


def test_idkl_sampler_refuses_what_crashes_the_reference():
    with pytest.raises(ValueError, match=r"identities \[1\] do not"):
        IDKLIdentitySampler(_toy_listing(vis=(6, 12), ir=(6, 3)), num_ids=1, num_per_modality=5)


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown data.sampler 'random'"):
        build_sampler("random", _toy_listing(), 2, 2)


def test_reference_samplers_split_batches_between_ranks():
    listing = _toy_listing()
    whole = AGWIdentitySampler(listing, 2, 2, seed=1).plan()
    parts = [list(AGWIdentitySampler(listing, 2, 2, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert parts[0] == whole[0::2][:len(parts[0])] and parts[1] == whole[1::2][:len(parts[1])]
    assert len(parts[0]) == len(parts[1]) == len(whole) // 2


# ------------------------------------------------------------------ augmentation


def test_idkl_augmentation_parameters():
    pipeline = train_transforms("idkl", padding=10, erasing=0.5)[VISIBLE]
    pad, erase = pipeline.steps[0], pipeline.steps[-1]
    assert isinstance(pad, PadCrop) and pad.fill == IDKL_PAD_FILL == 127
    assert (erase.sl, erase.sh, erase.r1, erase.r2, erase.log_ratio, erase.attempts) == (0.02, 0.33, 0.3, 3.3, True, 10)
    assert erase.fill == (0.0, 0.0, 0.0) and erase.p == 0.5
    # The grey border: a crop from the padded corner shows 127 where AGW's shows 0.
    image = torch.full((1, 3, 8, 4), 200, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    grey = PadCrop(2, fill=127)(image, g)
    assert set(torch.unique(grey).tolist()) <= {127, 200}


def test_torchvision_erasing_draws_log_uniform_aspects_within_bounds():
    erase = torchvision_erasing(p=1.0)
    x = torch.zeros(400, 3, 64, 32) + 1.0
    out = erase(x, torch.Generator().manual_seed(3))
    areas = (out[:, 0] == 0).flatten(1).sum(1).float() / (64 * 32)
    erased = areas > 0
    assert erased.float().mean() > 0.8  # 10 tries: most images find a fitting rectangle
    assert float(areas[erased].max()) <= 0.36 and float(areas[erased].min()) >= 0.015
    uniform = RandomErasing(p=1.0, sl=0.02, sh=0.33, r1=0.3, r2=3.3, log_ratio=False, attempts=10)
    assert uniform.r2 == 3.3 and not uniform.log_ratio


class _FakeCache:
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


def test_caj_second_view_is_drawn_from_the_raw_image():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 32, 16), dtype=torch.uint8, generator=g) for _ in range(4)]
    samples = [Sample("", 0, 1, VISIBLE), Sample("", 1, 1, VISIBLE), Sample("", 0, 3, INFRARED),
               Sample("", 1, 3, INFRARED)]
    dataset = ImageDataset(samples, (32, 16), train_transforms("caj", padding=2), _FakeCache(images),
                           second_view=second_views("raw", padding=2))
    items = [dataset[(i, 100 + i)] for i in range(4)]
    assert items[0][4] is not None and items[2][4] is None
    first, second = items[0][0], items[0][4]
    assert torch.equal(second[0], second[1]) and torch.equal(second[1], second[2])  # channel-exchanged
    assert not any(torch.allclose(second[0], first[c]) for c in range(3))  # not a channel of the first view
    batch = collate_views(items)
    assert len(batch) == 5 and batch[4].shape == (2, 3, 32, 16)
    recipe = build_recipe(load_config(resolve_config_path("caj_sysu"), ["model.depth=18",
                                                                        "model.non_local=[0,0,0,0]"]), 2)
    seen = {}
    recipe.model.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    recipe.training_step(recipe.model, batch)
    assert torch.equal(seen["x"][2:4], batch[4])  # the tri-modal batch uses the loader's second views
    with pytest.raises(ValueError, match="unknown data.caj_view"):
        second_views("both")


# ------------------------------------------------------------------ schedules and numerics switches


def test_agw_preset_sets_the_rate_once_per_epoch():
    train = load_config(resolve_config_path("agw_sysu"))["train"]
    cfg = parse_section(TrainSettings, {k: v for k, v in train.items() if k not in ("seed", "deterministic")}, "train")
    factor = lambda e: lr_factor(e, schedule=cfg.schedule, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,  # noqa
                                 warmup_start=cfg.warmup_start, milestones=cfg.milestones, gamma=cfg.gamma)
    assert [factor(e) for e in (0, 0.99, 4, 9.5, 10, 19.9, 20, 49, 50, 80)] == pytest.approx(
        [0.1, 0.1, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_presets_select_the_reference_numerics():
    for name in ("agw_sysu", "caj_sysu", "agw_regdb", "caj_llcm"):
        cfg = load_config(resolve_config_path(name))
        assert cfg["loss"]["weighted_numerics"] == "reference" and cfg["model"]["gem_form"] == "root_eps"
        assert cfg["data"]["sampler"] == "agw"
    assert load_config(resolve_config_path("caj_sysu"))["data"]["caj_view"] == "raw"
    for name in IDKL_PRESETS + ("idkl_llcm",):
        data = load_config(resolve_config_path(name))["data"]
        assert (data["sampler"], data["augment"], data["resize"]) == ("idkl", "idkl", "bilinear")
    with pytest.raises(ValueError, match="loss.weighted_numerics must be one of"):
        parse_section(MetricLosses, {"weighted_numerics": "exact"}, "loss")


def test_reference_and_textbook_wrt_differ_only_at_scale():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    small = torch.rand(16, 16)
    assert wrt_loss(small, labels, numerics="reference").item() == pytest.approx(
        wrt_loss(small, labels).item(), rel=1e-3)
    far = small * 40  # distances ~ 20-60: the reference's negative weights vanish, its d_n collapses
    ref = weighted_parts(far, labels, numerics="reference")
    text = weighted_parts(far, labels)
    assert float(ref["weights_an"].sum(1).max()) < 1e-2 and torch.allclose(text["weights_an"].sum(1),
                                                                            torch.ones(16), atol=1e-5)
    assert wrt_loss(far, labels, numerics="reference") > 2 * wrt_loss(far, labels)
    feat = far.clone().requires_grad_(True)
    loss = adp_loss(feat, labels, numerics="reference")
    loss.backward()
    assert loss.item() == pytest.approx(88.0) and float(feat.grad.abs().max()) == 0.0  # CAJ's clamp at scale


# ------------------------------------------------------------------ precision under autocast


def _features(norm=100.0, n=16, dim=2048, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=g)
    return x / x.norm(dim=1, keepdim=True) * norm * (1 + 0.2 * torch.rand(n, 1, generator=g))


LOSSES = {
    "triplet": lambda f, y, m: triplet_hard(f, y),
    "wrt": lambda f, y, m: wrt_loss(f, y, numerics="reference"),
    "adp": lambda f, y, m: adp_loss(f, y, numerics="reference"),
    "hetero_center": lambda f, y, m: hetero_center_triplet(f, y, m),
}


def _cpu_autocast(dtype):
    """CPU autocast in ``dtype``; torch versions without CPU fp16 autocast test the half inputs under bf16."""
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.mm(torch.ones(2, 2), torch.ones(2, 2))
        return torch.autocast("cpu", dtype=dtype)
    except RuntimeError:
        return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_metric_distances_stay_fp32_under_autocast(dtype):
    """Features of norm ~100 (half-precision model outputs) through the distance under CPU autocast: fp32 out."""
    feat = _features()
    exact = pairwise_sq_dist(feat.double())
    with _cpu_autocast(dtype):
        assert torch.mm(feat, feat.t()).dtype in (torch.bfloat16, torch.float16)  # what autocast does to a matmul
        sq = pairwise_sq_dist(feat.to(dtype))
    assert sq.dtype == torch.float32
    # Only the rounding of the half-precision inputs remains: a few 1e-3 of a squared distance of ~1e4.
    off = ~torch.eye(len(feat), dtype=torch.bool)
    rel = ((sq.double() - pairwise_sq_dist(feat.to(dtype).double())).abs() / exact.abs().clamp(min=1))[off]
    assert float(rel.max()) < 1e-5
    half = feat.to(dtype)
    naive = (half.pow(2).sum(1, keepdim=True) + half.pow(2).sum(1) - 2 * half @ half.t())  # all in half
    assert float(((naive.double() - exact).abs() / exact.abs().clamp(min=1))[off].max()) > 1e-3
    modality = torch.tensor([VISIBLE, INFRARED]).repeat_interleave(8)
    labels = torch.cat([torch.arange(4).repeat_interleave(2)] * 2)
    for name, fn in LOSSES.items():
        reference = fn(feat.to(dtype).float(), labels, modality)
        with _cpu_autocast(dtype):
            value = fn(feat.to(dtype), labels, modality)
        assert value.dtype == torch.float32 and math.isfinite(value.item()), name
        assert value.item() == pytest.approx(reference.item(), rel=1e-4, abs=1e-4), name


def test_fp16_norms_that_overflow_half_still_give_finite_distances():
    feat = _features(norm=300.0).half()  # |f|^2 = 9e4 > 65504: inf in fp16
    assert torch.isinf(feat.pow(2).sum(1)).all()
    dist = pairwise_sq_dist(feat).clamp(min=1e-12).sqrt()
    assert dist.dtype == torch.float32 and torch.isfinite(dist).all()
    assert torch.isfinite(triplet_hard(feat, torch.arange(4).repeat_interleave(4)))


# ------------------------------------------------------------------ end to end


def test_idkl_preset_trains_with_its_reference_sampler(tmp_path, caplog):
    import json

    import yaml

    from vireid.app.runs import train
    from vireid.synth.generator import generate

    root = tmp_path / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    tiny = {"_base_": str(resolve_config_path("idkl_sysu")),
            "data": {"height": 32, "width": 16, "p": 2, "k": 2, "workers": 0, "cache": False},
            "model": {"depth": 18}, "train": {"epochs": 1, "milestones": [], "amp": "off", "log_every": 1}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny))
    with caplog.at_level(logging.INFO, logger="vireid"):
        train(config, root, tmp_path / "run", device="cpu", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = records[-1]["step"]
    assert f"{steps} steps per epoch" in caplog.text and records[-1]["global_step"] == steps
    assert all(r.get("ce") == r.get("ce") for r in records)  # finite


def test_bilinear_resize_for_idkl_train_cache_and_test(tmp_path):
    from PIL import Image

    from vireid.data.cache import ImageCache
    from vireid.data.transforms import load_image

    rng = np.random.default_rng(0)
    path = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(path)
    lanczos, bilinear = load_image(path, (16, 8)), load_image(path, (16, 8), "bilinear")
    assert not torch.equal(lanczos, bilinear)
    cache = ImageCache.build([str(path)], (16, 8), "t", tmp_path / "cache", resample="bilinear")
    assert "-bilinear-" in cache.path.name and torch.equal(cache[0], bilinear)
    assert torch.equal(ImageCache.build([str(path)], (16, 8), "t", tmp_path / "cache")[0], lanczos)
    assert cache.path.is_file()  # the other filter's cache is not taken for a stale one
    with pytest.raises(ValueError, match="unknown resize filter 'nearest'"):
        load_image(path, (16, 8), "nearest")


def test_idkl_ignite04_epochs_are_the_loader_length_and_continue_across_passes():
    listing, golden = _sysu_listing()
    sampler = build_sampler("idkl", listing, 12, 5, seed=3, idkl_epoch="ignite04")
    epochs = []
    for e in range(3):
        sampler.set_epoch(e)
        epochs.append(sampler.plan())
    assert [len(b) for b in epochs] == [int(golden["expected_len_dataloader_before"])] * 3 == [99] * 3
    stream = [b for plan in epochs for b in plan]
    passes = build_sampler("idkl", listing, 12, 5, seed=3)
    first = len(passes.plan())  # pass 0 = epoch 0 of the "pass" mode
    assert stream[:first] == passes.plan()
    passes.set_epoch(1)
    assert stream[first:] == passes.plan()[:297 - first]
    with pytest.raises(ValueError, match="applies to data.sampler: idkl only"):
        build_sampler("agw", listing, 8, 4, idkl_epoch="ignite04")


def test_agw_bn_neck_initialisation():
    from vireid.models.reid_net import ReIDNet

    assert load_config(resolve_config_path("agw_sysu"))["model"]["bn_neck_std"] == 0.01
    torch.manual_seed(0)
    net = ReIDNet(num_classes=3, depth=18, non_local=(0, 0, 0, 0), bn_neck_std=0.01)
    w = net.bn_neck.weight.detach()
    assert 0.005 < float(w.std()) < 0.02 and abs(float(w.mean()) - 1) < 0.01
    assert torch.equal(ReIDNet(num_classes=3, depth=18, non_local=(0, 0, 0, 0)).bn_neck.weight.detach(),
                       torch.ones(512))
    with pytest.raises(ValueError, match="bn_neck_std must be a number >= 0"):
        ReIDNet(num_classes=3, depth=18, non_local=(0, 0, 0, 0), bn_neck_std=-1)
