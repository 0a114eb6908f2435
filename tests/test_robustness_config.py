"""Issue 25, config values: booleans only true/false, numbers finite, NaN refused by every bound."""

import math

import pytest

from vireid.app.runs import resolve_config, resolve_config_path
from vireid.cli.main import main
from vireid.schema import DataSettings, parse_section


@pytest.mark.parametrize("override, message", [
    ("model.two_stream=flase", "model.two_stream must be true or false, got 'flase'"),
    ("model.two_stream=1", "model.two_stream must be true or false, got 1"),
    ("data.cache=maybe", "data.cache must be true or false, got 'maybe'"),
    ("train.lr=.nan", "train.lr must be a finite number, got nan"),
    ("train.weight_decay=.inf", "train.weight_decay must be a finite number, got inf"),
    ("train.milestones=[10, .nan]", r"train.milestones\[1\] must be a finite number"),
])
def test_bad_override_values_are_refused_by_key(override, message):
    with pytest.raises(ValueError, match=message):
        resolve_config("agw_sysu", [override])


def test_yaml_booleans_still_work():
    cfg = resolve_config("agw_sysu", ["model.two_stream=false", "data.cache=no"])  # YAML 1.1 booleans
    assert cfg["model"]["two_stream"] is False and cfg["data"]["cache"] is False


def test_a_config_file_cannot_turn_a_boolean_into_text(tmp_path):
    (tmp_path / "mine.yaml").write_text(f"_base_: {resolve_config_path('agw_sysu')}\nmodel:\n  two_stream: flase\n")
    with pytest.raises(ValueError, match="model.two_stream must be true or false, got 'flase'"):
        resolve_config(tmp_path / "mine.yaml")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_bound_rejects_non_finite_numbers(value):
    with pytest.raises(ValueError, match="data.random_erasing must be a finite number"):
        parse_section(DataSettings, {"random_erasing": value}, "data")
    with pytest.raises(ValueError, match="data.heatmap_sigma must be a finite number"):
        parse_section(DataSettings, {"heatmap_sigma": value}, "data")


def test_cli_train_stops_on_nan_before_reading_data(tmp_path, capsys):
    assert main(["train", "demo_idkl", "train.lr=.nan", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "train.lr must be a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
