"""The reference <-> vireid name map and `vireid convert` on state dicts written with the reference's names.

The trajectory golden files list every tensor of the reference models (``init_*`` tables); a checkpoint
built from that table by the weight formula stands in for a released one.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from conftest import golden_root
from trajectory_formula import clear_cache, reference_state
from vireid.app.convert import convert
from vireid.app.runs import resolve_config
from vireid.cli.main import main
from vireid.engine.checkpoint import load_checkpoint
from vireid.methods import build_recipe
from vireid.models.reference_names import convert_state, to_vireid
from vireid.synth.generator import generate

SMALL = ["data.height=32", "data.width=16", "data.workers=0", "data.cache=false"]


def _table(kind: str):
    files = sorted((golden_root() / "trajectory").rglob(f"{kind}_*.npz"))
    assert files, f"no {kind} trajectory golden file under {golden_root() / 'trajectory'}"
    return np.load(files[0], allow_pickle=False)


@pytest.fixture(scope="module", autouse=True)
def _release_formula_values():
    yield
    clear_cache()


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "sysu"
    generate(root, "sysu", 8, seed=1, size=(32, 16), images=2, workers=1)
    return root


def test_examples():
    assert to_vireid("idkl", "backbone.shared_module_fr.model_sh_fr.layer2.3.bn3.weight") == "trunk.layer2.3.bn3.weight"
    assert to_vireid("idkl", "backbone.special.special_module.layer4.0.downsample.1.running_var") == \
        "branch_sp.layer4.0.downsample.1.running_var"
    assert to_vireid("idkl", "backbone.shared_module_bh.model_sh_bh.conv1.weight") is None  # never run
    assert to_vireid("idkl", "backbone.mask1.channel_attention.2.weight") == "purifier.gate_r.fc2.weight"
    assert to_vireid("idkl", "D_shared_pseu.bn2.running_mean") == "confusers.0.5.running_mean"
    assert to_vireid("idkl", "C_sp_f.weight") == "classifier_ent.weight"
    assert to_vireid("agw", "NL_3.2.W.1.weight") == "backbone.non_local.layer3.2.out.1.weight"
    assert to_vireid("agw", "NL_2.0.g.0.bias") == "backbone.non_local.layer2.0.g.bias"
    assert to_vireid("agw", "thermal_module.thermal.bn1.running_mean") == "backbone.stems.1.bn1.running_mean"
    assert to_vireid("agw", "visible_module.visible.layer1.0.conv1.weight") is None
    assert to_vireid("agw", "bottleneck.bias") == "bn_neck.bias"
    for kind, name in (("agw", "fc.weight"), ("idkl", "backbone.special.special_module.fc.weight"),
                       ("idkl", "D_special.fc9.weight")):
        with pytest.raises(KeyError):
            to_vireid(kind, name)
    with pytest.raises(ValueError, match="unknown reference"):
        to_vireid("caj", "classifier.weight")


@pytest.mark.parametrize("kind", ["idkl", "agw"])
def test_every_reference_tensor_has_its_place(kind):
    """Every tensor of the reference's table maps into the preset's ResNet-50 model with its shape, exactly
    the parts the README calls unused map to nothing, and every vireid tensor is filled once."""
    d = _table(kind)
    model = build_recipe(resolve_config(f"{kind}_sysu"), int(d["num_classes"])).model
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    filled = []
    for name, part, shape in zip(d["init_name"], d["init_part"], d["init_shape"]):
        target = to_vireid(kind, str(name))
        assert (target is None) == str(part).startswith("unused"), (name, part)
        if target is not None:
            assert shapes[target] == (tuple(int(s) for s in str(shape).split("x")) if str(shape) else ()), name
            filled.append(target)
    assert sorted(filled) == sorted(shapes)


@pytest.mark.parametrize("kind", ["agw", "idkl"])
def test_convert_then_eval(kind, tmp_path, sysu_root, capsys):
    d = _table(kind)
    state = reference_state(d)
    # AGW's layout (numpy CMC and mAP beside the weights), DataParallel names
    wrapped = {"net": {f"module.{k}": v for k, v in state.items()}, "cmc": np.linspace(0.3, 1, 20),
               "mAP": np.float64(0.4), "epoch": 3}
    source = tmp_path / f"{kind}.pth"
    torch.save(wrapped if kind == "agw" else state, source)
    run = tmp_path / "run"
    assert main(["convert", str(source), "--from", kind, "--out", str(run), *SMALL]) == 0
    printed = capsys.readouterr().out
    used = int(sum(not str(p).startswith("unused") for p in d["init_part"]))
    assert f"matched {used} tensors ({int(d['num_classes'])} classes), missing 0, unused reference parts " \
           f"{len(state) - used}, unexpected 0" in printed
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["num_classes"] == int(d["num_classes"]) and (run / "config.yaml").is_file()
    for name, value in state.items():
        target = to_vireid(kind, name)
        if target is not None:
            assert torch.equal(saved["model"][target], value), name
    assert main(["eval", str(run), "--data-root", str(sysu_root), "--protocol", "sysu/all/single/seeded"]) == 0
    assert "sysu/all/single/seeded mean" in capsys.readouterr().out


def test_convert_refuses_pickled_code_and_incomplete_files(tmp_path):
    d = _table("agw")
    state = reference_state(d)
    cfg = resolve_config("agw_sysu", SMALL)
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": state, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(ValueError, match="pickled Python objects"):
        convert("agw", pickled, tmp_path / "out", cfg)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("NL_3.")}, partial)
    with pytest.raises(ValueError, match="does not fill 39 of the agw model's tensors"):
        convert("agw", partial, tmp_path / "out", cfg)
    with pytest.raises(FileNotFoundError):
        convert("agw", tmp_path / "absent.pth", tmp_path / "out", cfg)


def test_convert_report_lists_unknown_names():
    renamed, report = convert_state("agw", {"classifier.weight": 1, "fc.weight": 2, "visible_module.visible.layer4.0"
                                            ".conv1.weight": 3}, ["classifier.weight", "bn_neck.weight"])
    assert renamed == {"classifier.weight": 1}
    assert report["missing"] == ["bn_neck.weight"] and report["unexpected"] == ["fc.weight"]
    assert report["unused"] == ["visible_module.visible.layer4.0.conv1.weight"]
