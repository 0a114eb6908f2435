"""IDKL as a recipe: the model and loss of :mod:`vireid.models.idkl` in the training loop.

``idkl`` and ``idkl_paper`` are the same code; their configs differ (see
``configs/idkl_*.yaml``). The reference's losses need the batch as runs of
alternating infrared, visible samples per identity; the sampler gives P*K
visible then P*K infrared in the same identity order, so the step interleaves
the two halves.
"""

from __future__ import annotations

import copy
from dataclasses import fields

import torch

from vireid.data.records import INFRARED, VISIBLE
from vireid.losses.idkl import IDKLLossSettings, idkl_total_loss
from vireid.methods import METHODS
from vireid.methods.common import MetricLosses, check_keys
from vireid.models.idkl import build_idkl


def interleave_halves(modality: torch.Tensor) -> torch.Tensor:
    """Order turning [V_1..V_n, I_1..I_n] into [I_1, V_1, I_2, V_2, ...]."""
    n = modality.numel() // 2
    if modality.numel() != 2 * n or bool((modality[:n] != VISIBLE).any()) or bool((modality[n:] != INFRARED).any()):
        raise ValueError("IDKL training expects batches of n visible then n infrared samples in the same identity "
                         f"order (the cross-modality sampler's layout); got modalities {modality.tolist()[:16]}")
    visible = torch.arange(n, device=modality.device)
    return torch.stack([visible + n, visible], dim=1).reshape(-1)


EXTRA_KEYS = tuple(k for k in MetricLosses.KEYS if k not in {f.name for f in fields(IDKLLossSettings)})
RECIPE_KEYS = ("aux_warmup",)


def aux_scale(progress: float, warmup: float) -> float:
    """Weight of IDKL's terms beyond L_b at ``progress`` (0..1): a linear ramp from 0 over ``warmup``.

    Why: from scratch, the purifier, distillation and modality terms compete with the identity loss
    before any identity structure exists; in a short CPU run the full mix kept the ID loss near log(C)
    for hundreds of steps (docs/learning.md). The ramp lets L_b shape the features first.
    """
    return 1.0 if warmup <= 0 else min(max(progress / warmup, 0.0), 1.0)


class IDKLRecipe:
    """Config sections: ``model``, ``loss``, ``terms`` (see :func:`vireid.models.idkl.build_idkl`), ``recipe``
    (``aux_warmup``: fraction of the training over which the terms beyond L_b ramp up from 0; 0 = off,
    as published), ``eval.flip``."""

    def __init__(self, cfg: dict, num_classes: int):
        cfg = copy.deepcopy(cfg)
        cfg.setdefault("model", {})["num_classes"] = num_classes
        self.name = cfg["method"]
        recipe = check_keys(cfg.get("recipe"), RECIPE_KEYS, "recipe")
        self.aux_warmup = recipe.get("aux_warmup", 0.0)
        if isinstance(self.aux_warmup, bool) or not isinstance(self.aux_warmup, (int, float)) \
                or not 0 <= self.aux_warmup <= 1:
            raise ValueError(f"recipe.aux_warmup must be a number in [0, 1], got {self.aux_warmup!r}")
        self.progress = 1.0
        loss = cfg.get("loss") or {}
        # IDKL's own loss keys (triplet_margin) stay with IDKL; the rest of MetricLosses' keys are extras
        self.extra = MetricLosses.from_dict({k: loss.pop(k) for k in EXTRA_KEYS if k in loss})
        self.model, self.settings = build_idkl(cfg)
        self.flip = bool(cfg.get("eval", {}).get("flip", False))
        self.num_classes = num_classes

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def set_progress(self, fraction: float) -> None:
        self.progress = float(fraction)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch
        order = interleave_halves(modality)
        images, pids, modality = images[order], pids[order], modality[order]
        if int(pids.max()) >= self.num_classes:
            raise ValueError(f"label {int(pids.max())} does not fit {self.num_classes} classes")
        out = model(images, modality)
        total, terms = idkl_total_loss(out, pids, modality, self.settings)
        scale = aux_scale(self.progress, self.aux_warmup)
        if scale < 1.0:
            s = self.settings
            base = sum(w * terms[k] for k, w in (("ce", s.id_sh), ("id_pl", s.id_sp), ("reid_sp_raw", s.reid_sp_raw))
                       if w and k in terms) + terms.get("tri", 0.0)
            total = base + scale * (total - base)
            terms["aux_scale"] = total.new_tensor(scale)
        extra = self.extra.terms(out["feat_sh"], pids, modality, suffix="_sh")
        return {"loss": total + sum(extra.values()), **terms, **extra}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return self.model.extract(images, flip=self.flip)


METHODS.register("idkl")(IDKLRecipe)
METHODS.register("idkl_paper")(IDKLRecipe)
