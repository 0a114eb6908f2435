"""docs/adding-a-method.md stays true: its four files, dropped into vireid's packages, make a working method.

The files are written to a temporary directory that is appended to the
``vireid.models``/``losses``/``methods`` package paths, so they are found by the
same discovery (``pkgutil`` over the package) that finds the shipped methods;
no list of modules is edited. The method then trains on a tiny synthetic tree
through ``vireid.train`` and is evaluated through ``vireid.evaluate_run``.
"""

import importlib
import json
import re
import sys

import pytest
import torch
import yaml

import vireid
from conftest import REPO
from vireid.synth.generator import generate

DOC = REPO / "docs" / "adding-a-method.md"
PACKAGES = ("models", "models.backbones", "losses", "methods", "data")


def doc_files() -> dict[str, str]:
    """Path -> content of every ```python/```yaml block introduced by a `src/vireid/...` path."""
    text = DOC.read_text()
    blocks = re.findall(r"`(src/vireid/[\w/]+\.(?:py|yaml))`[^\n]*\n+```(?:python|yaml)\n(.*?)```", text, re.S)
    return dict(blocks)


@pytest.fixture
def example_method(tmp_path):
    files = doc_files()
    added = []
    for rel, content in files.items():
        target = tmp_path / "pkg" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for package in PACKAGES:
        module = importlib.import_module(f"vireid.{package}")
        path = str(tmp_path / "pkg" / "src" / "vireid" / package.replace(".", "/"))
        module.__path__.append(path)
        added.append((module, path))
    yield files, tmp_path / "pkg" / "src" / "vireid" / "configs" / "tiny_two_stem_sysu.yaml"
    from vireid.data.samplers import unregister_sampler
    from vireid.methods import METHODS
    from vireid.models import MODELS
    from vireid.models.backbones import unregister_backbone

    METHODS.unregister("tiny_two_stem")
    MODELS.unregister("tiny_two_stem")
    unregister_backbone("tiny_blocks_w<width>")
    unregister_sampler("random_pairs")
    for module, path in added:
        module.__path__.remove(path)
    for name in [n for n in sys.modules if n.endswith(("tiny_two_stem", "cross_modal_centre", "tiny_blocks",
                                                       "random_pairs"))]:
        del sys.modules[name]


def test_doc_names_one_file_of_each_kind():
    files = doc_files()
    kinds = sorted("/".join(rel.split("/")[2:-1]) for rel in files)
    assert kinds == ["configs", "data", "losses", "methods", "models", "models/backbones"], sorted(files)


def test_example_method_is_discovered_trains_and_evaluates(example_method, tmp_path):
    files, preset = example_method
    from vireid.methods import METHODS, check_method
    from vireid.models import model_names

    assert check_method({"method": "tiny_two_stem"}).__name__ == "TinyTwoStemRecipe"  # found, not listed
    assert "tiny_two_stem" in model_names() and "tiny_two_stem" in METHODS.names()
    assert yaml.safe_load(preset.read_text())["method"] == "tiny_two_stem"

    root = tmp_path / "sysu"
    generate(root, "sysu", 8, seed=3, size=(32, 16), images=2, workers=1)
    out = tmp_path / "run"
    overrides = ["data.height=32", "data.width=16", "data.p=2", "data.k=2", "data.workers=0", "data.cache=false",
                 "model.width=8", "train.epochs=1", "train.milestones=[]", "train.log_every=1"]
    vireid.train(preset, root, out, overrides, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"id", "centre"} <= set(records[-1])
    result = vireid.evaluate_run(out, root, "sysu/all/single/seeded", device="cpu", trials=[0])
    assert 0.0 <= result.mean["mAP"] <= 1.0


def test_guide_backbone_and_sampler_work_in_another_method(example_method, tmp_path):
    """The guide's backbone and sampler files, dropped into vireid and named in a config, train AGW: the backbone
    is the one built and the sampler's batches are the ones trained on."""
    from vireid.app.runs import load_run
    from vireid.data.samplers import sampler_names
    from vireid.models.backbones import backbone_names

    assert "random_pairs" in sampler_names() and "tiny_blocks_w<width>" in backbone_names()
    root = tmp_path / "sysu"
    generate(root, "sysu", 8, seed=4, size=(32, 16), images=2, workers=1)
    out = tmp_path / "agw"
    overrides = ["data.height=32", "data.width=16", "data.p=2", "data.k=2", "data.workers=0", "data.cache=false",
                 "data.sampler=random_pairs", "model.backbone=tiny_blocks_w8", "model.non_local=[0,0,0,0]",
                 "train.epochs=1", "train.milestones=[]", "train.warmup_epochs=0", "train.log_every=1"]
    vireid.train("agw_sysu", root, out, overrides, device="cpu", progress=False)
    recipe, cfg = load_run(out)
    assert type(recipe.model.backbone.layers).__name__ == "TinyBlocks"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == recipe.num_classes // 2  # random_pairs' epoch: identities // P batches (P = 2)
    result = vireid.evaluate_run(out, root, "sysu/all/single/seeded", device="cpu", trials=[0])
    assert 0.0 <= result.mean["mAP"] <= 1.0


def test_example_losses_and_settings_errors(example_method):
    from vireid.losses.cross_modal_centre import cross_modal_centre
    from vireid.methods import build_recipe

    feat = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0]], requires_grad=True)
    labels, modality = torch.tensor([1, 1, 2, 2]), torch.tensor([0, 1, 0, 1])
    loss = cross_modal_centre(feat, labels, modality)
    assert loss.item() == pytest.approx((4.0 + 4.0) / 2)  # |(0,0)-(2,0)|^2 and |(1,1)-(1,3)|^2
    loss.backward()
    assert feat.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="model.width must be an integer >= 8, got 'wide'"):
        build_recipe({"method": "tiny_two_stem", "model": {"width": "wide"}}, 4)
    with pytest.raises(ValueError, match="unknown loss setting.s. centr; known: centre, centre_ramp, id"):
        build_recipe({"method": "tiny_two_stem", "loss": {"centr": 1.0}}, 4)


def doc_hooks() -> list[str]:
    """The first column of the guide's hook table (``| hook | signature | ...``)."""
    table = re.search(r"^\| hook \|.*?\n\| ---.*?\n((?:\|.*\n)+)", DOC.read_text(), re.M)
    assert table, f"{DOC} has no '| hook | ...' table"
    return [re.match(r"\| `(\w+)` \|", row).group(1) for row in table.group(1).splitlines()]


def test_doc_lists_exactly_the_base_class_hooks():
    from vireid.methods.base import Method

    base_api = {"offers", "parse_settings", "defaults"}  # the base's own helpers, not hooks a recipe overrides
    hooks = [name for name in vars(Method) if not name.startswith("_") and name not in base_api]
    listed = doc_hooks()
    assert len(listed) == len(set(listed)), listed
    assert sorted(listed) == sorted(hooks)


def test_every_registered_recipe_is_a_method():
    from vireid.methods import METHODS, check_method
    from vireid.methods.base import Method

    check_method({"method": "plain"})  # imports every recipe module
    names = METHODS.names()
    assert len(names) >= 14, names
    assert [n for n in names if not issubclass(METHODS.get(n), Method)] == []
    assert METHODS.get("dan").offers("attach") and not METHODS.get("plain").offers("attach")
    assert METHODS.get("nformer").offers("transductive") and not METHODS.get("idkl").offers("transductive")
    assert METHODS.get("hicmd")({"method": "hicmd", "model": {"depth": 18}}, 4).optimizers()
