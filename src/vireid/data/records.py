"""The sample record every dataset and protocol returns.

Modality is stored as a small int so it can go straight into a tensor;
``MODALITY_NAMES`` maps it back for messages and reports.
"""

from __future__ import annotations

from dataclasses import dataclass

VISIBLE = 0
INFRARED = 1
MODALITY_NAMES = {VISIBLE: "visible", INFRARED: "infrared"}
MODALITY_BY_NAME = {name: value for value, name in MODALITY_NAMES.items()}
NO_CAMERA = -1  # folder datasets without camera ids: camera rules are off


@dataclass(frozen=True)
class Sample:
    path: str
    pid: int
    camid: int
    modality: int

    @property
    def modality_name(self) -> str:
        return MODALITY_NAMES[self.modality]


def parse_modality(value: str | int) -> int:
    """Accept 'visible'/'infrared' (or 'vis'/'ir'/'rgb'/'thermal'/'nir') or 0/1."""
    aliases = {"vis": VISIBLE, "rgb": VISIBLE, "ir": INFRARED, "thermal": INFRARED, "nir": INFRARED}
    if isinstance(value, int) and value in MODALITY_NAMES:
        return value
    key = str(value).lower()
    if key in MODALITY_BY_NAME:
        return MODALITY_BY_NAME[key]
    if key in aliases:
        return aliases[key]
    raise ValueError(f"unknown modality {value!r}; expected 'visible' or 'infrared'")
