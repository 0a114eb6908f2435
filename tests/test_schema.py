"""One validation helper for every config section: errors name the key, the value and what is accepted."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vireid.app.runs import data_settings, run_defaults
from vireid.schema import DataSettings, TrainSettings, parse_section, section_defaults, setting


@dataclass(frozen=True)
class Example:
    depth: int = setting(50, choices=(18, 34, 50))
    ratio: float = setting(0.5, low=0, high=1)
    name: str | None = setting(None)
    sizes: tuple[int, ...] = setting((1, 2))
    flag: bool = setting(False)


@pytest.mark.parametrize("values, message", [
    ({"depth": 20}, "model.depth must be one of 18, 34, 50, got 20"),
    ({"ratio": 1.5}, r"model.ratio must be a number in \[0, 1\], got 1.5"),
    ({"ratio": True}, r"model.ratio must be a number in \[0, 1\], got True"),
    ({"name": 3}, "model.name must be null or a string, got 3"),
    ({"sizes": [1, "x"]}, r"model.sizes must be a list of integers, got \[1, 'x'\]"),
    ({"flag": "yes"}, "model.flag must be true or false, got 'yes'"),
    ({"dpth": 18}, "unknown model setting.s. dpth; known: depth, flag, name, ratio, sizes"),
])
def test_errors_name_key_value_and_accepted(values, message):
    with pytest.raises(ValueError, match=message):
        parse_section(Example, values, "model")


def test_values_are_converted_losslessly_and_defaults_written_once():
    parsed = parse_section(Example, {"ratio": 1, "sizes": [3, 4]}, "model")
    assert parsed.ratio == 1.0 and isinstance(parsed.ratio, float) and parsed.sizes == (3, 4)
    assert section_defaults(Example) == {"depth": 50, "ratio": 0.5, "name": None, "sizes": [1, 2], "flag": False}
    # the run defaults come from the dataclasses, not from a second table
    defaults = run_defaults()
    assert defaults["data"] == section_defaults(DataSettings)
    assert defaults["train"]["lr"] == TrainSettings.__dataclass_fields__["lr"].default


def test_data_section_checked_with_the_same_messages():
    with pytest.raises(ValueError, match="data.augment must be one of plain, erasing, gray, idkl, caj, got 'strong'"):
        data_settings({"data": {"augment": "strong"}})
    with pytest.raises(ValueError, match="data.height must be an integer >= 8, got 'tall'"):
        data_settings({"data": {"height": "tall"}})
    assert data_settings({"data": {"p": 3}}).p == 3
