"""Issue 25, a run's settings are its contract: a re-run with other settings is refused before anything is
written, unless the changed keys are allowed (``--allow-change``) or a new run is asked for (``--restart``)."""

import os

import pytest
import yaml

from robust_helpers import TINY
from vireid.app.contract import SettingsChanged, changed_settings, check_run_settings
from vireid.cli.main import main
from vireid.engine.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def sysu_root(tiny_trees):
    return tiny_trees["sysu"]  # read only: training with data.cache=false writes nothing there


def train(root, out, *extra):
    return main(["train", "demo_idkl", *TINY, *extra, "--data-root", str(root), "--out", str(out)])


def test_changed_settings_lists_every_leaf():
    old = {"train": {"lr": 0.1, "epochs": 1, "milestones": [1]}, "model": {"width": 8}}
    new = {"train": {"lr": 0.5, "epochs": 2, "milestones": (1,)}, "model": {"width": 8, "extra": True}}
    assert changed_settings(old, new) == [("model.extra", "(absent)", True), ("train.epochs", 1, 2),
                                          ("train.lr", 0.1, 0.5)]


def test_settings_added_since_the_run_started_are_no_change_at_their_default():
    old = {"data": {"height": 32}}
    defaults = {"data": {"depth_rule": "minmax", "height": 288}}
    assert changed_settings(old, {"data": {"height": 32, "depth_rule": "minmax"}}, defaults) == []
    assert changed_settings(old, {"data": {"height": 32, "depth_rule": "fixed"}}, defaults) == [
        ("data.depth_rule", "(absent)", "fixed")]


def test_rerun_with_other_settings_is_refused_and_config_untouched(sysu_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(sysu_root, out) == 0
    config = (out / "config.yaml").read_text()
    checkpoint = (out / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert train(sysu_root, out, "train.lr=0.5", "train.epochs=2") == 2
    err = capsys.readouterr().err
    assert "changed: train.epochs: 1 -> 2; train.lr: 0.001 -> 0.5" in err and "--allow-change" in err
    assert train(sysu_root, out, "model.depth=34") == 2  # was: config overwritten, then a size-mismatch traceback
    assert "changed: model.depth: 18 -> 34." in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == config
    assert (out / "checkpoint.pt").stat().st_mtime_ns == checkpoint
    # the optimiser state fixes the LR: allowing it is refused too, naming the key
    assert main(["train", "demo_idkl", *TINY, "train.lr=0.5", "--allow-change", "train.lr", "--data-root",
                 str(sysu_root), "--out", str(out)]) == 2
    assert "train.lr cannot change when resuming" in capsys.readouterr().err

    # extending a run: train.epochs allowed -> it trains the second epoch and records the new setting
    assert main(["train", "demo_idkl", *TINY, "train.epochs=2", "--allow-change", "train.epochs", "--data-root",
                 str(sysu_root), "--out", str(out)]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2


def test_restart_moves_the_old_run_aside(sysu_root, tmp_path):
    out = tmp_path / "run"
    assert train(sysu_root, out) == 0
    old_state = load_checkpoint(out / "checkpoint.pt")
    assert main(["train", "demo_idkl", *TINY, "model.gem_p=4.0", "--restart", "--data-root", str(sysu_root),
                 "--out", str(out)]) == 0
    kept = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    assert len(kept) == 1 and {p.name for p in kept[0].iterdir()} >= {"checkpoint.pt", "config.yaml",
                                                                       "metrics.jsonl"}
    assert load_checkpoint(kept[0] / "checkpoint.pt")["epoch"] == old_state["epoch"]
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["gem_p"] == 4.0


def test_a_checkpoint_without_its_config_is_not_resumed_blindly(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"config": {"a": 1}})
    check_run_settings(tmp_path, {"a": 1})  # config.yaml lost: the checkpoint's own config is the contract
    with pytest.raises(SettingsChanged, match="changed: a: 1 -> 2"):
        check_run_settings(tmp_path, {"a": 2})
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    with pytest.raises(SettingsChanged, match="no config.yaml and the checkpoint carries no config"):
        check_run_settings(tmp_path, {"a": 1})


def test_stale_temp_files_are_removed_on_the_next_start(sysu_root, tmp_path):
    out = tmp_path / "run"
    assert train(sysu_root, out) == 0
    left = out / ".checkpoint.pt.abc123.tmp"  # what a kill -9 during a save leaves
    left.write_bytes(b"half")
    assert train(sysu_root, out) == 0
    assert not left.exists()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
