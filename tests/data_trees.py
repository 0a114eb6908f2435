"""Tiny synthetic dataset trees shared by the data tests (generated once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vireid.synth.generator import generate

TINY = {"ids": 8, "images": 3, "size": (32, 16), "seed": 5}


@pytest.fixture(scope="session")
def tiny_trees(tmp_path_factory) -> dict[str, Path]:
    """Pristine tiny trees per layout; copy one with ``copy_tree`` before changing it."""
    base = tmp_path_factory.mktemp("trees")
    roots = {}
    for layout in ("sysu", "regdb", "llcm"):
        roots[layout] = base / layout
        generate(roots[layout], layout, TINY["ids"], seed=TINY["seed"], size=TINY["size"],
                 images=TINY["images"], workers=1)
    return roots


def copy_tree(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target
