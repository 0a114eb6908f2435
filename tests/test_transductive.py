"""The transductive evaluation step: applied to each trial's query + gallery features only when asked, labelled
[transductive] in every table, JSON and markdown, refused clearly for a method without one."""

import zlib

import pytest
import torch

from deploy_runs import make_run
from vireid.app.runs import evaluate_run
from vireid.app.splits import format_markdown, summarize
from vireid.engine.checkpoint import load_checkpoint, save_checkpoint
from vireid.evaluation import evaluate_protocol
from vireid.evaluation.evaluator import cosine_distance
from vireid.evaluation.metrics import evaluate
from vireid.evaluation.protocols import get_protocol
from vireid.evaluation.report import ProtocolResult, result_tags
from vireid.evaluation.transductive import transductive_step
from vireid.methods import build_recipe
from vireid.methods.base import Method

PROTOCOL = "sysu/all/single/seeded"


def extractor():
    """A deterministic feature per image: its identity's direction plus a per-path perturbation."""
    def extract(samples):
        rows = []
        for s in samples:
            g = torch.Generator().manual_seed(zlib.crc32(str(s.path).encode()))
            base = torch.zeros(16)
            base[s.pid % 16] = 1.0
            rows.append(base + 0.9 * torch.randn(16, generator=g))
        return torch.stack(rows)
    return extract


def smooth(features):
    """A stand-in transductive step: each row averaged with its 2 nearest rows of the same trial."""
    f = torch.nn.functional.normalize(features, dim=1)
    near = (f @ f.T).topk(3, dim=1).indices
    return f[near].mean(1)


def test_the_step_changes_distances_only_when_asked_and_sees_each_trial_whole(tiny_trees):
    root = tiny_trees["sysu"]
    calls = []

    def step(features):
        calls.append(features.clone())
        return smooth(features)

    plain = evaluate_protocol(PROTOCOL, root, extractor(), trials=[0, 1])
    refined = evaluate_protocol(PROTOCOL, root, extractor(), trials=[0, 1], transductive=step)
    assert len(calls) == 2  # once per trial
    protocol = get_protocol(PROTOCOL)
    for trial, seen, plain_trial, refined_trial in zip([0, 1], calls, plain.trials, refined.trials):
        split = protocol.build(root, trial)
        both = extractor()(split.query + split.gallery)
        assert torch.equal(seen, both)  # queries first, then the gallery, as extracted
        nq = len(split.query)
        ids = ([s.pid for s in split.query], [s.pid for s in split.gallery],
               [s.camid for s in split.query], [s.camid for s in split.gallery])
        without = evaluate(cosine_distance(both[:nq], both[nq:]), *ids, rule="sysu", pad_short_cmc=True)
        refined_features = smooth(both)
        with_step = evaluate(cosine_distance(refined_features[:nq], refined_features[nq:]), *ids, rule="sysu",
                             pad_short_cmc=True)
        assert plain_trial["mAP"] == pytest.approx(without["mAP"])
        assert refined_trial["mAP"] == pytest.approx(with_step["mAP"])
    assert [t["mAP"] for t in plain.trials] != [t["mAP"] for t in refined.trials]
    assert not plain.transductive and refined.transductive
    assert "[transductive]" not in plain.format_table() and "transductive" not in plain.to_dict()
    table = refined.format_table().splitlines()
    assert all(f"{PROTOCOL} [transductive]" in line for line in table[1:])
    assert "[transductive]" in refined.format_markdown()
    assert refined.to_dict()["transductive"] is True


def test_a_step_that_returns_the_wrong_rows_is_named(tiny_trees):
    with pytest.raises(ValueError, match=r"transductive step returned \(3, 16\) for \d+ feature rows"):
        evaluate_protocol(PROTOCOL, tiny_trees["sysu"], extractor(), trials=[0], transductive=lambda f: f[:3])


def test_labels_put_transductive_before_re_ranking():
    assert result_tags(False, False) == ""
    assert result_tags(True, True) == " [transductive] [re-ranked]"
    result = ProtocolResult("p", True, transductive=True)
    assert result.label == "p [transductive] [re-ranked]" and result.suffix == " [transductive] [re-ranked]"


def test_regdb_split_table_carries_the_label():
    row = {"rank1": 0.5, "rank5": 0.5, "rank10": 0.5, "rank20": 0.5, "mAP": 0.5, "mINP": 0.5}
    results = {d: {"mean": row, "rerank": False, "transductive": True} for d in ("v2i", "i2v")}
    text = format_markdown(summarize([{"trial": 1, "results": results}]), "t")
    assert "| regdb/v2i [transductive] (mean ± std) |" in text and "| regdb/trial1/i2v [transductive] |" in text


def test_a_method_without_a_step_is_refused_clearly(tmp_path, tiny_trees):
    run = make_run(tmp_path / "agw", "agw")
    recipe_cls_error = r"method 'agw' has no transductive step.*e\.g\. method: nformer"
    with pytest.raises(ValueError, match=recipe_cls_error):
        evaluate_run(run, tiny_trees["sysu"], PROTOCOL, device="cpu", transductive=True)
    state = load_checkpoint(run / "checkpoint.pt")
    state["config"]["eval"]["transductive"] = True  # asked for by the run's config: refused the same way
    save_checkpoint(run / "checkpoint.pt", state)
    with pytest.raises(ValueError, match=recipe_cls_error):
        evaluate_run(run, tiny_trees["sysu"], PROTOCOL, device="cpu")


def test_the_contract_wraps_a_recipe_step_on_the_device():
    class Recipe(Method):
        name = "toy"

        def transductive(self, features):
            return features * 2

    step = transductive_step(Recipe({"method": "toy"}, 2), "cpu")
    assert torch.equal(step(torch.ones(3, 2, dtype=torch.float64)), torch.full((3, 2), 2.0))
    cfg = {"method": "plain", "model": {"width": 8}}
    with pytest.raises(ValueError, match="method 'plain' has no transductive step"):
        transductive_step(build_recipe(cfg, num_classes=2))
