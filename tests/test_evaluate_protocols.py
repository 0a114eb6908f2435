"""Several protocols of one run share one model load and one feature cache, with the same numbers as one by one."""

from __future__ import annotations

import pytest

from deploy_runs import make_run
from vireid.app import runs
from vireid.evaluation import features as features_module
from vireid.synth.generator import generate

PROTOCOLS = ["sysu/all/single/seeded", "sysu/indoor/single/seeded"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    generate(root, "sysu", 10, seed=6, size=(32, 16), images=2, workers=1)
    return root


def test_shared_cache_gives_the_one_by_one_numbers_and_embeds_shared_images_once(tree, tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", "agw")
    alone = [runs.evaluate_run(run, tree, p, device="cpu", trials=[0, 1]) for p in PROTOCOLS]

    embedded = []
    real = features_module.image_extractor

    def counting(*args, **kwargs):
        extract = real(*args, **kwargs)

        def wrapped(samples):
            embedded.extend(s.path for s in samples)
            return extract(samples)
        return wrapped

    monkeypatch.setattr(runs, "image_extractor", counting)
    shared = runs.evaluate_run_protocols(run, tree, PROTOCOLS, device="cpu", trials=[0, 1])
    for one, both in zip(alone, shared):
        assert one.to_dict() == both.to_dict()
    assert len(embedded) == len(set(embedded))  # every image once, across both protocols and both trials


def test_an_unknown_protocol_fails_before_the_run_is_loaded(tmp_path):
    with pytest.raises(ValueError, match="sysu/nowhere"):
        runs.evaluate_run_protocols(tmp_path / "no-run", tmp_path, ["sysu/all/single/seeded", "sysu/nowhere"])
