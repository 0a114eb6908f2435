import pytest
import yaml

from vireid.config import apply_override, get, load_config


def write(path, text):
    path.write_text(text)
    return path


def test_base_merge_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "optim:\n  lr: 0.1\n  name: sgd\nepochs: 10\n")
    cfg = load_config(write(tmp_path / "child.yaml", "_base_: base.yaml\noptim:\n  lr: 0.01\n"),
                      ["epochs=3", "optim.name=adam"])
    assert cfg == {"optim": {"lr": 0.01, "name": "adam"}, "epochs": 3}


def test_unknown_override_key_lists_known_keys():
    cfg = {"optim": {"lr": 0.1, "name": "sgd"}}
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'.*keys under optim: lr, name"):
        apply_override(cfg, "optim.lrr=3")


def test_bad_override_syntax():
    with pytest.raises(ValueError, match=r"bad override 'epochs'; expected key=value"):
        apply_override({"epochs": 1}, "epochs")


def test_missing_key_and_file(tmp_path):
    with pytest.raises(ValueError, match=r"config key 'data.root' is missing in x.yaml"):
        get({"data": {}}, "data.root", "x.yaml")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_and_self_include(tmp_path):
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "a: [1, 2\n"))
    with pytest.raises(ValueError, match="includes itself"):
        load_config(write(tmp_path / "loop.yaml", "_base_: loop.yaml\n"))


def test_exponent_without_a_dot_is_a_number(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", "lr: 1e-3\nname: 2e5x\nwd: 0\n"), ["wd=5e-4"])
    assert cfg == {"lr": 1e-3, "name": "2e5x", "wd": 5e-4}


def test_replace_marker_replaces_an_inherited_section(tmp_path):
    write(tmp_path / "base.yaml", "loss:\n  wrt: 1.0\n  adp: 0.5\nmodel:\n  depth: 50\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nloss:\n  _replace_: true\n  triplet: 1.0\n"
                                           "model:\n  _replace_: false\n  last_stride: 1\n")
    cfg = load_config(child)
    assert cfg["loss"] == {"triplet": 1.0}  # wrt/adp dropped, marker gone
    assert cfg["model"] == {"depth": 50, "last_stride": 1}  # false: an ordinary merge
    bad = write(tmp_path / "bad.yaml", "_base_: base.yaml\nloss:\n  _replace_: yes please\n")
    with pytest.raises(ValueError, match="_replace_ in section 'loss' must be true or false"):
        load_config(bad)


def test_configs_lists_every_preset_and_config_show_resolves(capsys):
    from vireid.cli.main import main

    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert "idkl_sysu " in listing and "demo_idkl " in listing and "agw_sysu " in listing
    assert main(["config", "show", "demo_idkl", "train.epochs=3", "data.p=2"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 3 and shown["data"]["p"] == 2
    assert shown["method"] == "idkl" and shown["model"]["depth"] == 18  # demo's own value over its base
    assert main(["config", "show", "demo_idkl", "train.epoch=3"]) == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err
