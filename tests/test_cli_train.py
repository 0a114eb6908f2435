"""End to end through the CLI on a tiny synthetic dataset: train, resume, evaluate, and every user error."""

import json
import os

import pytest
import torch

from vireid.cli.main import main
from vireid.engine.checkpoint import load_checkpoint, save_checkpoint
from vireid.synth.generator import generate

TINY = ["data.height=32", "data.width=16", "data.p=2", "data.k=2", "data.workers=0", "data.cache=false",
        "model.depth=18", "train.epochs=1", "train.milestones=[]", "train.amp=off", "train.time_budget_s=0"]


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    return root


@pytest.fixture(scope="module")
def trained(sysu_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "demo_idkl", *TINY, "--data-root", str(sysu_root), "--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run_directory(trained):
    assert {p.name for p in trained.iterdir()} >= {"config.yaml", "run.json", "metrics.jsonl", "checkpoint.pt"}
    run = json.loads((trained / "run.json").read_text())
    assert run["seed"] == 0 and run["torch"] == torch.__version__ and "command" in run
    state = load_checkpoint(trained / "checkpoint.pt")
    assert state["method"] == "idkl" and state["epoch"] == 1 and state["config"]["model"]["depth"] == 18


def test_eval_prints_protocol_and_writes_json(trained, sysu_root, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trained), "--data-root", str(sysu_root), "--protocol", "sysu/all/single/seeded",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.strip()]
    # Every number line names the protocol: the mean and the 10 trials.
    assert sum(line.startswith("sysu/all/single/seeded ") for line in lines) == 11
    data = json.loads(out.read_text())
    assert data["protocol"] == "sysu/all/single/seeded" and data["rerank"] is False and len(data["trials"]) == 10
    assert all(0.0 <= data["mean"][k] <= 1.0 for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"))


def test_eval_defaults_to_the_config_protocol_and_labels_reranking(trained, sysu_root, capsys):
    assert main(["eval", str(trained), "--data-root", str(sysu_root), "--rerank"]) == 0
    assert "sysu/all/single/seeded [re-ranked] mean" in capsys.readouterr().out


def test_eval_follows_the_config_rerank_switch(trained, sysu_root, tmp_path, capsys):
    """eval.rerank (e.g. MBFVRD's published setting) takes effect and is labelled; --no-rerank overrides it."""
    state = load_checkpoint(trained / "checkpoint.pt")
    state["config"]["eval"]["rerank"] = True
    ckpt = tmp_path / "rerank.pt"
    save_checkpoint(ckpt, state)
    assert main(["eval", str(ckpt), "--data-root", str(sysu_root)]) == 0
    assert "sysu/all/single/seeded [re-ranked] mean" in capsys.readouterr().out
    assert main(["eval", str(ckpt), "--data-root", str(sysu_root), "--no-rerank"]) == 0
    out = capsys.readouterr().out
    assert "sysu/all/single/seeded mean" in out and "[re-ranked]" not in out


def test_evaluation_does_not_need_the_imagenet_file(trained, tmp_path):
    """The checkpoint replaces every weight: a run whose weights file has gone still loads."""
    from vireid.app.runs import load_run

    state = load_checkpoint(trained / "checkpoint.pt")
    state["config"]["model"]["pretrained"] = str(tmp_path / "gone" / "resnet18.pth")
    save_checkpoint(tmp_path / "moved.pt", state)
    recipe, cfg = load_run(tmp_path / "moved.pt")
    assert cfg["model"]["pretrained"].endswith("resnet18.pth") and not recipe.model.training


def test_rerunning_a_finished_run_resumes_and_does_nothing(trained, sysu_root):
    before = load_checkpoint(trained / "checkpoint.pt")["global_step"]
    assert main(["train", "demo_idkl", *TINY, "--data-root", str(sysu_root), "--out", str(trained)]) == 0
    assert load_checkpoint(trained / "checkpoint.pt")["global_step"] == before


def _error(capsys, argv):
    """One message (a data check lists each problem on its own line), never a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vireid: error: ") and "Traceback" not in err, err
    return err


def test_user_errors_are_one_message(trained, sysu_root, tmp_path, capsys):
    root, out = str(sysu_root), str(tmp_path / "x")
    assert "unknown config key 'train.epoch'" in _error(capsys, ["train", "demo_idkl", "train.epoch=3",
                                                                  "--data-root", root, "--out", out])
    assert "bad override 'epochs'" in _error(capsys, ["train", "demo_idkl", "epochs", "--data-root", root,
                                                      "--out", out])
    assert "unknown method 'idkll'" in _error(capsys, ["train", "demo_idkl", "method=idkll", "--data-root", root,
                                                       "--out", out])
    assert "unknown dataset 'market'" in _error(capsys, ["train", "demo_idkl", "data.dataset=market",
                                                         "--data-root", root, "--out", out])
    assert "config not found: nope" in _error(capsys, ["train", "nope", "--data-root", root, "--out", out])
    assert "unknown protocol 'sysu/all'" in _error(capsys, ["eval", str(trained), "--data-root", root,
                                                            "--protocol", "sysu/all"])
    missing = tmp_path / "missing"
    # the dataset checker lists its problems one per line after the headline
    assert str(missing) in _error(capsys, ["train", "demo_idkl", *TINY, "--data-root", str(missing),
                                           "--out", out])


@pytest.mark.parametrize("preset", ["idkl_sysu", "idkl_paper_sysu", "agw_sysu", "caj_regdb", "mbfvrd_llcm"])
def test_resnet50_presets_refuse_to_start_without_pretrained_weights(preset, sysu_root, tmp_path, capsys):
    message = _error(capsys, ["train", preset, "--data-root", str(sysu_root), "--out", str(tmp_path / "r")])
    assert "model.pretrained is not set" in message and "resnet50-19c8e357.pth" in message
    assert "model.pretrained=none" in message
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_pretrained_none_is_a_deliberate_random_start(sysu_root):
    from vireid.app.runs import _prepare, _require_weights

    cfg = _prepare("idkl_sysu", ["model.pretrained=none"], "cpu")[0]
    assert cfg["model"]["pretrained"] == "none" and cfg["model"]["depth"] == 50
    _require_weights(cfg)
    with pytest.raises(ValueError, match="model.pretrained is not set"):
        _prepare("idkl_sysu", [], "cpu")


def test_missing_config_key(tmp_path, sysu_root, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: idkl\ndata: {dataset: sysu}\nmodel: {depth: 18}\n")
    assert "config key 'train.epochs' is missing" in _error(capsys, ["train", str(cfg), "--data-root", str(sysu_root),
                                                              "--out", str(tmp_path / "r")])


def test_checkpoint_from_another_method_is_refused(trained, sysu_root, tmp_path, capsys):
    state = load_checkpoint(trained / "checkpoint.pt")
    state["method"] = "idkl_paper"
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", state)
    message = _error(capsys, ["train", "demo_idkl", *TINY, "--data-root", str(sysu_root),
                              "--out", str(tmp_path / "run")])
    assert "written by method 'idkl_paper', not 'idkl'" in message


def test_demo_writes_report_json_and_picture(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--ids", "8", "--seed", "3", "--method", "mbfvrd", *TINY,
                 "--baseline", "model.width=4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["protocol"] for r in report["results"]] == ["sysu/all/single/seeded", "sysu/indoor/single/seeded"]
    assert report["test_identities"] >= 1 and 0 < report["chance_rank1"] <= 1
    assert report["generator"] == {"seed": 3, "ids": 8, "size": [128, 64]}
    method, plain = report["methods"]
    assert (method["method"], plain["method"]) == ("MBFVRD", "plain CNN") and report["method"] == "mbfvrd"
    assert method["steps"] >= 1 and plain["steps"] >= 1
    baseline_cfg = load_checkpoint(out / "baseline" / "checkpoint.pt")["config"]
    assert baseline_cfg["train"]["time_budget_s"] == pytest.approx(method["trained_s"])  # same training seconds
    assert baseline_cfg["data"]["height"] == 32 and baseline_cfg["model"]["width"] == 4  # shared + own overrides
    assert (out / "ranklist.png").stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "| MBFVRD | `demo_mbfvrd` | `sysu/all/single/seeded` |" in markdown
    assert "| plain CNN | `demo_baseline` |" in markdown and "information bottleneck" in markdown
    assert "| chance |" in markdown and "seed 3 and 8 identities" in markdown and "ranklist.png" in markdown
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out


def test_demo_trains_side_by_side_with_the_same_budget(tmp_path, monkeypatch):
    from vireid.app import demo

    monkeypatch.setattr(demo, "available_cpus", lambda: [0, 1] if len(os.sched_getaffinity(0)) > 1 else [0, 0])
    out = tmp_path / "demo"
    tiny = [o for o in TINY if not o.startswith("train.time_budget_s")] + ["train.time_budget_s=1"]
    demo.run_demo(out, None, tiny, ids=8, seed=3, progress=False, baseline_overrides=["model.width=4"],
                  method="idkl")
    report = json.loads((out / "report.json").read_text())
    assert report["side_by_side"] is True and report["threads"] == 1
    assert report["config"] == "demo_idkl" and report["methods"][0]["method"] == "IDKL + hetero-center"
    assert "plus the hetero-center triplet" in (out / "report.md").read_text()
    for run in ("run", "baseline"):
        state = load_checkpoint(out / run / "checkpoint.pt")
        assert state["config"]["train"]["time_budget_s"] == 1 and state["trained_s"] >= 1 and state["global_step"] >= 1


def test_demo_fine_tunes_from_imagenet_by_default_with_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("VIREID_OFFLINE", "1")  # the weights come with the install
    monkeypatch.setenv("VIREID_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--ids", "8", "--seed", "3", "--no-baseline", *TINY]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "imagenet" and report["config"] == "demo_imagenet"
    assert report["methods"][0]["method"] == "EfficientNet-Lite0 from ImageNet" and report["methods"][0]["steps"] >= 1
    weights = json.loads((out / "run" / "run.json").read_text())["pretrained"]
    assert weights["path"].endswith("efficientnet-lite0-57934424.pth") and weights["sha256"].startswith("57934424")
    cfg = load_checkpoint(out / "run" / "checkpoint.pt")["config"]
    assert cfg["model"]["backbone"] == "efficientnet_lite0" and cfg["model"]["pretrained"] == "imagenet"
    assert not (tmp_path / "home").exists()  # nothing downloaded or cached


def test_demo_side_by_side_needs_a_time_budget(tmp_path):
    from vireid.app.demo import run_demo

    with pytest.raises(ValueError, match="train.time_budget_s > 0"):
        run_demo(tmp_path / "demo", None, TINY, ids=8, seed=3, progress=False, parallel=True)


def test_demo_refuses_an_unknown_method(tmp_path, capsys):
    from vireid.app.demo import run_demo

    with pytest.raises(ValueError, match="unknown demo method 'agw'; expected one of imagenet, mbfvrd, idkl"):
        run_demo(tmp_path / "demo", None, TINY, ids=8, seed=3, progress=False, method="agw")
    assert not (tmp_path / "demo").exists()  # refused before anything is generated
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["demo", "--method", "agw", "--out", str(tmp_path / "demo")])
    assert "invalid choice: 'agw'" in capsys.readouterr().err


def test_demo_override_split():
    from vireid.app.demo import split_overrides

    shared, own = split_overrides(["data.height=32", "model.depth=18", "train.epochs=1", "terms.ip=false"])
    assert shared == ["data.height=32", "train.epochs=1"] and own == ["model.depth=18", "terms.ip=false"]


def test_validation_split_selects_without_the_test_set(sysu_root, tmp_path):
    out = tmp_path / "val"
    assert main(["train", "demo_idkl", *TINY, "data.val_ids=2", "--data-root", str(sysu_root), "--out", str(out)]) == 0
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_mAP" in r]
    assert len(val) == 1 and 0.0 <= val[0]["val_mAP"] <= 1.0
    best = load_checkpoint(out / "best_val.pt")
    assert best["selected_by"].startswith("validation mAP") and best["val_mAP"] == val[0]["val_mAP"]
    # Two identities fewer to classify than the training split has.
    from vireid.data.datasets import open_dataset

    train_ids = len({s.pid for s in open_dataset("sysu", sysu_root).train})
    assert best["num_classes"] == train_ids - 2
    assert best["model"]["classifier.weight"].shape[0] == train_ids - 2


def test_killed_idkl_run_resumes_to_the_same_weights(sysu_root, tmp_path):
    """SIGTERM mid-epoch, re-run the same command: the weights equal an uninterrupted run's."""
    import signal
    import threading
    import time

    args = ["train", "demo_idkl", *TINY, "train.epochs=2", "train.log_every=1", "--data-root", str(sysu_root)]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0

    killed = tmp_path / "killed"

    def kill_after_three_steps():
        log = killed / "metrics.jsonl"
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=kill_after_three_steps, daemon=True)
    watcher.start()
    assert main([*args, "--out", str(killed)]) == 130  # stopped, checkpoint saved
    watcher.join()
    stopped = load_checkpoint(killed / "checkpoint.pt")
    assert 0 < stopped["global_step"] < load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["global_step"]
    assert main([*args, "--out", str(killed)]) == 0  # resumes
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    resumed = load_checkpoint(killed / "checkpoint.pt")["model"]
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
