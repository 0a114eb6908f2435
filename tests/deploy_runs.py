"""Tiny trained-looking runs for the deploy tests: a shipped config shrunk, random weights, a real checkpoint.

Why not train: the deploy code only needs a checkpoint that ``load_run``
reads; training even one tiny epoch per method would cost seconds per test
module. BN running statistics are randomised so eval-mode BN is not the identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vireid.app.runs import resolve_config_path, run_defaults
from vireid.config import load_config
from vireid.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint
from vireid.methods import build_recipe

SIZE = (32, 16)
TINY = {
    "idkl": ["model.depth=18"],
    "agw": ["model.depth=18", "model.non_local=[0,1,1,0]"],
    "mbfvrd": ["model.depth=18", "model.non_local=[0,1,1,0]", "model.ib_widths=[32]"],
    "plain": ["model.width=4"],
}
CONFIGS = {"idkl": "demo_idkl", "agw": "agw_sysu", "mbfvrd": "mbfvrd_sysu", "plain": "demo_baseline"}


def make_run(out: Path, method: str = "idkl", num_classes: int = 4, seed: int = 0, extra=()) -> Path:
    overrides = [f"data.height={SIZE[0]}", f"data.width={SIZE[1]}", "data.workers=0", *TINY[method], *extra]
    cfg = load_config(resolve_config_path(CONFIGS[method]), overrides, defaults=run_defaults)
    torch.manual_seed(seed)
    recipe = build_recipe(cfg, num_classes)
    with torch.no_grad():
        for module in recipe.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / CHECKPOINT_NAME, {"config": cfg, "num_classes": num_classes, "method": method,
                                            "model": recipe.model.state_dict(), "epoch": 1})
    return out


def write_images(folder: Path, count: int, seed: int = 0, size=(40, 20), grey: bool = False) -> list[Path]:
    """Random-texture images (distinct per index) as PNG files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        array = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        image = Image.fromarray(array).convert("L") if grey else Image.fromarray(array)
        path = folder / f"img{i:03d}.png"
        image.save(path)
        paths.append(path)
    return paths
