"""`vireid train-splits`: two RegDB splits of a tiny synthetic tree, trained with a shrunk MSCLNet preset, each
evaluated on its own protocols; the table; resuming skips finished trials; errors."""

import json

import pytest
import yaml

import vireid.app.runs as runs
from vireid.app.splits import parse_trials, summarize, train_splits
from vireid.cli.main import main
from vireid.synth.generator import generate

TINY = {"data": {"height": 32, "width": 16, "p": 2, "k": 2, "workers": 0, "cache": False},
        "model": {"depth": 18, "non_local": [0, 0, 0, 0], "mogrifier_rounds": 1},
        "train": {"epochs": 1, "milestones": [], "lr_factors": [], "lr": 0.01, "amp": "off", "log_every": 1}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(data root, tiny config, out, summary) after train-splits ran trials 1 and 2."""
    base = tmp_path_factory.mktemp("splits")
    root = base / "regdb"
    generate(root, "regdb", 6, seed=3, size=(32, 16), images=2, workers=1)
    config = base / "tiny_msclnet_regdb.yaml"
    config.write_text(yaml.safe_dump({"_base_": str(runs.resolve_config_path("msclnet_regdb")), **TINY}))
    out = base / "out"
    summary = train_splits(config, root, out, trials=[1, 2], device="cpu", progress=False)
    return root, config, out, summary


def test_each_trial_is_trained_on_its_split_and_evaluated_on_its_own_lists(finished):
    root, config, out, summary = finished
    assert summary["trials"] == [1, 2]
    for t in (1, 2):
        done = json.loads((out / f"trial{t}" / "splits_result.json").read_text())
        assert done["config"]["data"]["trial"] == t
        assert yaml.safe_load((out / f"trial{t}" / "config.yaml").read_text())["data"]["trial"] == t
        assert {d: r["protocol"] for d, r in done["results"].items()} == {
            "v2i": f"regdb/trial{t}/v2i", "i2v": f"regdb/trial{t}/i2v"}
    for d in ("v2i", "i2v"):
        block = summary["directions"][d]
        values = [block["trials"][t]["mAP"] for t in ("1", "2")]
        assert block["mean"]["mAP"] == pytest.approx(sum(values) / 2)
        assert block["std"]["mAP"] == pytest.approx(abs(values[0] - values[1]) / 2)  # population std of two
        assert all(0.0 <= v <= 1.0 for v in values)
    assert json.loads((out / "splits.json").read_text())["directions"] == summary["directions"]
    table = (out / "splits.md").read_text()
    assert "| regdb/v2i (mean ± std) |" in table and "| regdb/trial2/i2v |" in table
    assert "2 split(s) (1, 2)" in table


def test_rerun_skips_finished_trials_and_the_cli_prints_the_table(finished, monkeypatch, capsys):
    root, config, out, summary = finished

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(runs, "train", no_training)
    monkeypatch.setattr(runs, "evaluate_run", no_training)
    code = main(["train-splits", str(config), "--data-root", str(root), "--out", str(out), "--trials", "2,1",
                 "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| regdb/trial1/v2i |" in text and "splits.md" in text
    assert json.loads((out / "splits.json").read_text())["trials"] == [2, 1]


def test_a_changed_config_is_not_mixed_with_finished_trials(finished):
    root, config, out, _ = finished
    with pytest.raises(ValueError, match="trial1 was trained with a different config"):
        train_splits(config, root, out, ["train.lr=0.02"], trials=[1], device="cpu", progress=False)


def test_summary_of_given_results():
    def result(m):
        return {"mean": {"rank1": m, "rank5": m, "rank10": m, "rank20": m, "mAP": m, "mINP": m}}

    finished = [{"trial": t, "results": {"v2i": result(v), "i2v": result(1 - v)}} for t, v in ((3, 0.2), (7, 0.6))]
    out = summarize(finished)
    assert out["trials"] == [3, 7]
    assert out["directions"]["v2i"]["mean"]["rank1"] == pytest.approx(0.4)
    assert out["directions"]["v2i"]["std"]["rank1"] == pytest.approx(0.2)
    assert out["directions"]["i2v"]["trials"]["7"]["mAP"] == pytest.approx(0.4)


def test_trial_list_and_dataset_errors(tmp_path):
    assert parse_trials(None) == list(range(1, 11)) and parse_trials("1, 2") == [1, 2]
    with pytest.raises(ValueError, match="RegDB trials 1-10 \\(e.g. 1,2\\), got '0,11'"):
        parse_trials("0,11")
    with pytest.raises(ValueError, match="lists trial 2 twice"):
        parse_trials("2,2")
    with pytest.raises(ValueError, match="reads data.dataset='sysu'; use a RegDB config"):
        train_splits("msclnet_sysu", tmp_path, tmp_path / "out", trials=[1], device="cpu")
    assert main(["train-splits", "msclnet_regdb", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--trials", "x"]) == 2
