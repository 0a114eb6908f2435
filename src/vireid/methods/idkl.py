"""IDKL as a recipe: the model and loss of :mod:`vireid.models.idkl` in the training loop.

``idkl`` and ``idkl_paper`` are the same code; their configs differ (see
``configs/idkl_*.yaml``). The reference's losses need the batch as runs of
alternating infrared, visible samples per identity; the sampler gives P*K
visible then P*K infrared in the same identity order, so the step interleaves
the two halves.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import fields

import torch

from vireid.data.records import INFRARED, VISIBLE
from vireid.losses.idkl import IDKLLossSettings, idkl_total_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, check_keys, eval_flip
from vireid.models.idkl import IDKL


def interleave_halves(modality: torch.Tensor) -> torch.Tensor:
    """Order turning [V_1..V_n, I_1..I_n] into [I_1, V_1, I_2, V_2, ...]."""
    n = modality.numel() // 2
    if modality.numel() != 2 * n or bool((modality[:n] != VISIBLE).any()) or bool((modality[n:] != INFRARED).any()):
        raise ValueError("IDKL training expects batches of n visible then n infrared samples in the same identity "
                         f"order (the cross-modality sampler's layout); got modalities {modality.tolist()[:16]}")
    visible = torch.arange(n, device=modality.device)
    return torch.stack([visible + n, visible], dim=1).reshape(-1)


MODEL_KEYS = tuple(inspect.signature(IDKL.__init__).parameters)[1:]  # the constructor's arguments


# Table 4 of the paper: each component can be switched off; L_b is always on.
TERMS = {"ip": ("ip_e", "ip_r"), "tgsa": ("tgsa",), "csa": ("csa",),
         "mdr": ("mdr_graph", "mdr_graph_mixed", "mdr_logit")}


def apply_terms(loss_cfg: dict, terms: dict | None) -> dict:
    """Zero the weights of the components switched off in ``terms`` (e.g. {"tgsa": False})."""
    terms = terms or {}
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown IDKL terms {unknown}; known: {sorted(TERMS)}")
    out = dict(loss_cfg)
    for term, on in terms.items():
        if not isinstance(on, bool):
            raise ValueError(f"terms.{term} must be true or false, got {on!r}")
        if not on:
            out.update({w: 0.0 for w in TERMS[term]})
    return out


def build_idkl(cfg: dict) -> tuple[IDKL, IDKLLossSettings]:
    """Build (model, loss settings) from a plain dict with ``model``, ``loss`` and ``terms`` sections.

    ``cfg["model"]`` holds :class:`IDKL` constructor arguments, ``cfg["loss"]``
    the fields of :class:`IDKLLossSettings`, ``cfg["terms"]`` the Table 4
    switches (ip, tgsa, csa, mdr: false zeroes that component's weights);
    other sections (data, train, eval) are left to the caller. The confuser's loss targets follow the model's
    ``confuser`` switch ("pseudo" -> pseudo labels, "grl" -> true modality labels) unless
    ``loss.confuser_targets`` says otherwise explicitly.
    """
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError("an IDKL config needs a 'model' section (and usually a 'loss' section)")
    model_cfg = dict(cfg["model"])
    unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(f"unknown IDKL model settings {unknown}; known: {sorted(MODEL_KEYS)}")
    loss_cfg = apply_terms(dict(cfg.get("loss") or {}), cfg.get("terms"))
    loss_cfg.setdefault("confuser_targets", "modality" if model_cfg.get("confuser") == "grl" else "pseudo")
    settings = IDKLLossSettings.from_dict(loss_cfg)
    if (model_cfg.get("confuser", "pseudo") == "grl") != (settings.confuser_targets == "modality"):
        raise ValueError(f"model.confuser={model_cfg.get('confuser', 'pseudo')!r} does not fit "
                         f"loss.confuser_targets={settings.confuser_targets!r} (grl <-> modality, pseudo <-> pseudo)")
    if settings.reid_sp_raw and not model_cfg.get("raw_sp_reid", False):
        raise ValueError("loss.reid_sp_raw > 0 needs model.raw_sp_reid: true")
    return IDKL(**model_cfg), settings


EXTRA_KEYS = tuple(k for k in MetricLosses.KEYS if k not in {f.name for f in fields(IDKLLossSettings)})
RECIPE_KEYS = ("aux_warmup",)


def aux_scale(progress: float, warmup: float) -> float:
    """Weight of IDKL's terms beyond L_b at ``progress`` (0..1): a linear ramp from 0 over ``warmup``.

    Why: from scratch, the purifier, distillation and modality terms compete with the identity loss
    before any identity structure exists; in a short CPU run the full mix kept the ID loss near log(C)
    for hundreds of steps (docs/learning.md). The ramp lets L_b shape the features first.
    """
    return 1.0 if warmup <= 0 else min(max(progress / warmup, 0.0), 1.0)


class IDKLRecipe(Method):
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
        self.flip = eval_flip(cfg)
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
