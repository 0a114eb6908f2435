"""Training on a single-modality set: the samplers, the method checks and a tiny AGW run end to end."""

import json

import numpy as np
import pytest

from vireid.app.runs import train, validation_split
from vireid.cli.main import main
from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.data.samplers import CrossModalityIdentitySampler, PKIdentitySampler, build_sampler
from vireid.synth.generator import generate

TINY = ["data.height=32", "data.width=16", "data.p=2", "data.k=2", "data.workers=0", "data.cache=false",
        "model.depth=18", "model.non_local=[0,1,1,0]", "model.pretrained=none", "train.epochs=1",
        "train.warmup_epochs=0", "train.milestones=[]"]


def visible_samples(counts):
    """``counts[i]`` visible images of identity i, cameras cycling 1..3."""
    return [Sample(f"{pid}_{n}.jpg", pid, 1 + n % 3, VISIBLE) for pid, c in enumerate(counts) for n in range(c)]


def test_balanced_sampler_on_one_modality_draws_p_times_k_and_every_image():
    samples = visible_samples([5, 3, 8, 2, 4])
    sampler = CrossModalityIdentitySampler(samples, num_ids=2, num_per_modality=2, seed=1)
    assert sampler.modalities == 1 and sampler.batch_size == 4
    batches = sampler.plan()
    assert len(batches) == len(sampler)
    seen = set()
    for batch in batches:
        pids = [samples[i].pid for i in batch]
        assert len(batch) == 4 and pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
        seen |= set(batch)
    assert seen == set(range(len(samples)))


def test_pk_sampler_is_reid_strong_baselines_epoch():
    samples = visible_samples([5, 3, 8, 1, 4, 6])
    sampler = PKIdentitySampler(samples, num_ids=2, num_per_modality=2, seed=3)
    batches = sampler.plan()
    per_pid = {}
    for batch in batches:
        assert len(batch) == 4
        pids = [samples[i].pid for i in batch]
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
        for i in batch:
            per_pid.setdefault(samples[i].pid, []).append(i)
    for pid, indices in per_pid.items():
        if len({s for s in samples if s.pid == pid}) >= 2:
            assert len(indices) == len(set(indices))  # no image twice in one pass (the lone-image id repeats)
    chunks = sum(max(c, 2) // 2 for c in (5, 3, 8, 1, 4, 6))  # 13 chunks of 2; batches stop when < 2 ids are left
    assert sum(len(b) for b in batches) // 2 <= chunks
    sampler.set_epoch(0)
    assert PKIdentitySampler(samples, num_ids=2, num_per_modality=2, seed=3).plan() == batches
    sampler.set_epoch(1)
    assert sampler.plan() != batches


def test_samplers_refuse_the_wrong_number_of_modalities():
    visible = visible_samples([4, 4, 4])
    for kind in ("agw", "idkl", "vsd"):
        with pytest.raises(ValueError, match=f"data.sampler: {kind} draws K visible and K infrared images per "
                                             "identity, but the training set has one modality"):
            build_sampler(kind, visible, 2, 2)
    both = visible + [Sample(f"ir{i}.jpg", i % 3, 3, INFRARED) for i in range(6)]
    with pytest.raises(ValueError, match="data.sampler: pk draws identities regardless of modality"):
        build_sampler("pk", both, 2, 2)
    with pytest.raises(ValueError, match="needs at least 4 identities"):
        build_sampler("pk", visible, 4, 2)


def test_single_modality_validation_split():
    samples = visible_samples([4, 4])
    query, gallery, rule = validation_split(samples)
    assert rule == "market1501" and len(query) == 6 and len(gallery) == 2
    assert len({(s.pid, s.camid) for s in query}) == len(query)


@pytest.mark.parametrize("config, overrides, words", [
    ("idkl_sysu", [], "method 'idkl' trains on visible and infrared images together"),
    ("caj_sysu", [], "recipe.channel_exchange: true builds CAJ's visible / channel-exchanged / infrared batch"),
    ("agw_sysu", ["loss.hetero_center=1.0"], "loss.hetero_center > 0 pulls each identity's visible and infrared"),
])
def test_cross_modality_methods_refuse_a_single_modality_dataset_before_reading_it(tmp_path, config, overrides,
                                                                                    words):
    with pytest.raises(ValueError) as info:
        train(config, tmp_path / "no-data", tmp_path / "run",
              ["data.dataset=market1501", "model.pretrained=none", *overrides])
    message = str(info.value)
    assert message.startswith("data.dataset: market1501 has one modality (visible images only), but ")
    assert words in message and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("market") / "market"
    generate(root, "market1501", 8, seed=4, size=(32, 16), images=3, workers=1)
    return root


def test_agw_market1501_trains_and_evaluates_end_to_end(market, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "agw_market1501", *TINY, "data.val_ids=1", "--data-root", str(market),
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_mAP" in r for r in records) and all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    capsys.readouterr()
    assert main(["eval", str(out), "--data-root", str(market), "--json", str(tmp_path / "eval.json")]) == 0
    printed = capsys.readouterr().out
    assert "market1501 trial 0" in printed
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["protocol"] == "market1501" and len(result["trials"]) == 1
    assert 0.0 <= result["mean"]["mAP"] <= 1.0


@pytest.mark.parametrize("layout", ["dukemtmc", "msmt17"])
def test_agw_trains_and_evaluates_on_the_other_single_modality_layouts(layout, tmp_path, capsys):
    root = tmp_path / layout
    generate(root, layout, 8, seed=5, size=(32, 16), images=3, workers=1)
    out = tmp_path / "run"
    assert main(["train", "agw_market1501", *TINY, f"data.dataset={layout}", f"eval.protocol={layout}",
                 "--data-root", str(root), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--data-root", str(root), "--json", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["protocol"] == layout and len(result["trials"]) == 1 and 0.0 <= result["mean"]["mAP"] <= 1.0
