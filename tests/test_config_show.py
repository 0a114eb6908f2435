"""`vireid config show` prints the complete config a run would use, and issue 22's refactor changed no preset.

``data/presets_resolved_300259c.json`` holds every shipped preset as `vireid config show` resolved it at commit
300259c, before the methods' sections became typed. A preset may now show more keys (the defaults of its
method's model/loss/recipe sections) but every value it showed then is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vireid.app.runs import resolve_config, run_defaults, shipped_configs
from vireid.config import merge
from vireid.methods import check_method

BEFORE = json.loads((Path(__file__).parent / "data" / "presets_resolved_300259c.json").read_text())

# Presets changed on purpose since the snapshot (each with the issue that changed it); nothing else may differ.
CHANGED_SINCE = {
    # issue 24: ImageNet round 2 (frozen blocks, LR), the test feature (round 3), grey visible images and blocks
    # 0-4 frozen (round 4), each chosen on the tuning set
    "demo_imagenet": {"model": {"frozen_blocks": 5, "test_feature": "pooled"}, "train": {"lr": 4.0e-3},
                      "data": {"augment": "gray"}},
}


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_preset_resolves_as_before_with_its_defaults_added(name):
    now = resolve_config(name)
    assert now == merge(merge(run_defaults(now), BEFORE[name]), CHANGED_SINCE.get(name, {}))


def test_every_shipped_preset_is_in_the_snapshot():
    assert sorted(shipped_configs()) == sorted(BEFORE)


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_config_shows_every_default_of_the_method_sections(name):
    cfg = resolve_config(name)
    for section, defaults in check_method(cfg).defaults().items():
        assert set(defaults) <= set(cfg[section]), f"{name}: {section} lacks {set(defaults) - set(cfg[section])}"


@pytest.mark.parametrize("name", ["agw_sysu", "baseline_sysu", "idkl_sysu", "mbfvrd_sysu", "dan_sysu", "cmtr_sysu",
                                  "msclnet_sysu", "nformer_sysu"])
def test_every_key_shown_can_be_overridden(name):
    """A key `config show` prints takes an override (here: its own value, so the result is unchanged); a key a
    preset leaves out was refused before issue 22."""
    shown = resolve_config(name)
    for key, value in _leaves(shown):
        if key == "method":
            continue
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        assert resolve_config(name, [f"{key}={text}"]) == shown, key


def test_one_trunk_schema():
    """Every method section with a trunk key takes all of them from TrunkSettings (one spelling, one check).
    Not CMTR (a ViT only: no depth or last stride) nor Hi-CMD (its encoders and its layer-3 ID trunk have no
    last stride; it spells backbone/depth/pretrained the same way)."""
    from vireid.methods import METHODS
    from vireid.models.trunk import TrunkSettings, TwoStreamSettings

    check_method({"method": "plain"})  # imports every recipe
    trunk_keys = set(TrunkSettings.__dataclass_fields__)
    two_stream_keys = set(TwoStreamSettings.__dataclass_fields__) - trunk_keys
    embedding = []
    for name in METHODS.names():
        model = METHODS.get(name).sections.get("model")
        keys = set(model.__dataclass_fields__) if model else set()
        if keys & {"depth", "last_stride"} and name != "hicmd":
            assert issubclass(model, TrunkSettings), name
            embedding.append(name)
        if keys >= two_stream_keys:
            assert issubclass(model, TwoStreamSettings), name
    assert {"agw", "caj", "mbfvrd", "idkl", "msclnet", "maum", "cmlsp", "spot", "nformer", "dan"} <= set(embedding)


@pytest.mark.parametrize("method, network", [("agw", "baseline"), ("plain", "plain_cnn"), ("mbfvrd", "mbfvrd"),
                                             ("idkl", "idkl"), ("msclnet", "msclnet"), ("maum", "maum"),
                                             ("cmlsp", "cmlsp"), ("spot", "spot"), ("nformer", "nformer"),
                                             ("hicmd", "hicmd"), ("cmtr", "cmtr")])
def test_a_networks_python_defaults_are_its_model_sections(method, network):
    """A network built in Python (``ReIDNet(5, depth=18)``) gets the defaults a config gets: every key of the
    recipe's model section is a keyword of the network with the same default."""
    import dataclasses
    import inspect

    from vireid.methods import METHODS
    from vireid.models import MODELS, model_names

    assert network in model_names()  # imports every network module
    check_method({"method": method})
    section = METHODS.get(method).sections["model"]
    keywords = inspect.signature(MODELS.get(network).__init__).parameters
    for field in dataclasses.fields(section):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert field.name in keywords, f"{network} takes no {field.name}"
        given = keywords[field.name].default
        given = tuple(given) if isinstance(given, list) else given
        assert given == default, f"{network}.{field.name}: {given!r} in Python, {default!r} in model section"


def test_a_bad_method_setting_fails_before_any_data_is_read(tmp_path):
    import vireid

    with pytest.raises(ValueError, match="loss.id must be a number >= 0, got -1"):
        vireid.train("agw_sysu", tmp_path / "no-such-root", tmp_path / "run", ["loss.id=-1"], device="cpu",
                     progress=False)
    assert not (tmp_path / "run").exists()
