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
from vireid.methods.common import MetricLosses
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


class IDKLRecipe:
    def __init__(self, cfg: dict, num_classes: int):
        cfg = copy.deepcopy(cfg)
        cfg.setdefault("model", {})["num_classes"] = num_classes
        self.name = cfg["method"]
        loss = cfg.get("loss") or {}
        # IDKL's own loss keys (triplet_margin) stay with IDKL; the rest of MetricLosses' keys are extras
        self.extra = MetricLosses.from_dict({k: loss.pop(k) for k in EXTRA_KEYS if k in loss})
        self.model, self.settings = build_idkl(cfg)
        self.flip = bool(cfg.get("eval", {}).get("flip", False))
        self.num_classes = num_classes

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch
        order = interleave_halves(modality)
        images, pids, modality = images[order], pids[order], modality[order]
        if int(pids.max()) >= self.num_classes:
            raise ValueError(f"label {int(pids.max())} does not fit {self.num_classes} classes")
        out = model(images, modality)
        total, terms = idkl_total_loss(out, pids, modality, self.settings)
        extra = self.extra.terms(out["feat_sh"], pids, modality, suffix="_sh")
        return {"loss": total + sum(extra.values()), **terms, **extra}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return self.model.extract(images, flip=self.flip)


METHODS.register("idkl")(IDKLRecipe)
METHODS.register("idkl_paper")(IDKLRecipe)
