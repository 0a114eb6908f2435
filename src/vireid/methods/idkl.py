"""IDKL as a recipe: the model and loss of :mod:`vireid.models.idkl` in the training loop.

``idkl`` and ``idkl_paper`` are the same code; their configs differ (see
``configs/idkl_*.yaml``). The reference's losses need the batch as runs of
alternating infrared, visible samples per identity; the sampler gives P*K
visible then P*K infrared in the same identity order, so the step interleaves
the two halves.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from vireid.data.records import INFRARED, VISIBLE
from vireid.losses.idkl import IDKLLossSettings, idkl_total_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses
from vireid.models.idkl import CPU_EVAL, IDKL
from vireid.models.trunk import TrunkSettings
from vireid.schema import parse_section, setting, to_dict


def interleave_halves(modality: torch.Tensor) -> torch.Tensor:
    """Order turning [V_1..V_n, I_1..I_n] into [I_1, V_1, I_2, V_2, ...]."""
    n = modality.numel() // 2
    if modality.numel() != 2 * n or bool((modality[:n] != VISIBLE).any()) or bool((modality[n:] != INFRARED).any()):
        raise ValueError("IDKL training expects batches of n visible then n infrared samples in the same identity "
                         f"order (the cross-modality sampler's layout); got modalities {modality.tolist()[:16]}")
    visible = torch.arange(n, device=modality.device)
    return torch.stack([visible + n, visible], dim=1).reshape(-1)


@dataclass(frozen=True)
class ModelSettings(TrunkSettings):
    """``model:`` :class:`IDKL`'s arguments (its docstring says what each one is); defaults are the code's."""

    gem_p: float = setting(3.0, low=1)
    gem_learnable: bool = setting(False)
    gates: str = setting("pixel", choices=("pixel", "se"), doc="pixel: the code's 1x1-conv gates; se: Eq. 8")
    gate_pool: str = setting("gem", choices=("gem", "avg"))
    in_affine: bool = setting(True)
    reduction: int = setting(16, low=1)
    confuser: str = setting("pseudo", choices=("pseudo", "grl"), doc="pseudo: the code; grl: Eq. 2")
    grl_coef: float = setting(1.0, low=0, doc="used only with confuser: grl")
    num_confusers: int = setting(1, low=1, doc="K of Eq. 4")
    num_discriminators: int = setting(1, low=1)
    head_input: str = setting("bnneck", choices=("bnneck", "pooled"))
    entropy_classifier: str = setting("separate", choices=("separate", "specific"))
    raw_sp_reid: bool = setting(False)
    head_hidden: int = setting(100, low=1)
    head_dropout: float = setting(0.5, low=0, high=1)
    test_normalize: bool = setting(False)
    cpu_eval: str = setting("fold", choices=CPU_EVAL, doc="the CPU test path: fold (BN folded, ReLU/add fused "
                                                          "into oneDNN convolutions), exact (same numbers as "
                                                          "eager) or eager")


IDKL_LOSS_KEYS = tuple(f.name for f in fields(IDKLLossSettings))
EXTRA_KEYS = tuple(k for k in MetricLosses.KEYS if k not in IDKL_LOSS_KEYS)  # the extra metric losses' keys


@dataclass(frozen=True)
class LossSettings(IDKLLossSettings, MetricLosses):
    """``loss:`` IDKL's weights (:class:`IDKLLossSettings`) plus the switchable metric losses on the shared feature
    (``loss.hetero_center``, ...; their triplet margin is MetricLosses' 0.3, IDKL's ``triplet_margin`` is its own)."""

    confuser_targets: str | None = setting(None, choices=("pseudo", "modality"),
                                           doc="null: follow model.confuser (grl -> modality, pseudo -> pseudo)")

    def idkl(self, confuser: str) -> IDKLLossSettings:
        """IDKL's own settings, ``confuser_targets`` resolved against the model's ``confuser``."""
        values = {k: getattr(self, k) for k in IDKL_LOSS_KEYS}
        if values["confuser_targets"] is None:
            values["confuser_targets"] = "modality" if confuser == "grl" else "pseudo"
        return IDKLLossSettings(**values)

    def extra(self) -> MetricLosses:
        """The extra metric losses (their own triplet margin: MetricLosses' default)."""
        return MetricLosses(**{k: getattr(self, k) for k in EXTRA_KEYS})


@dataclass(frozen=True)
class TermsSettings:
    """``terms:`` Table 4's components (L_b is always on); false zeroes that component's weights."""

    ip: bool = setting(True, doc="the Information Purifier: ip_e, ip_r")
    tgsa: bool = setting(True, doc="tgsa")
    csa: bool = setting(True, doc="csa")
    mdr: bool = setting(True, doc="mdr_graph, mdr_graph_mixed, mdr_logit")


@dataclass(frozen=True)
class RecipeSettings:
    aux_warmup: float = setting(0.0, low=0, high=1, doc="fraction of training over which the terms beyond L_b "
                                                        "ramp up from 0 (0: off, as published)")


# Table 4 of the paper: each component can be switched off; L_b is always on.
TERMS = {"ip": ("ip_e", "ip_r"), "tgsa": ("tgsa",), "csa": ("csa",),
         "mdr": ("mdr_graph", "mdr_graph_mixed", "mdr_logit")}
SECTIONS = {"model": ModelSettings, "loss": LossSettings, "terms": TermsSettings, "recipe": RecipeSettings}


def apply_terms(loss: IDKLLossSettings, terms: TermsSettings) -> IDKLLossSettings:
    """Zero the weights of the components switched off in ``terms``."""
    off = {w: 0.0 for term, weights in TERMS.items() if not getattr(terms, term) for w in weights}
    return replace(loss, **off)


def build_idkl(cfg: dict, num_classes: int | None = None) -> tuple[IDKL, IDKLLossSettings]:
    """(model, loss settings) from a dict with ``model``, ``loss``, ``terms`` sections (others are ignored).

    The confuser's loss targets follow the model's ``confuser`` switch ("pseudo" -> pseudo labels, "grl" ->
    true modality labels) unless ``loss.confuser_targets`` says otherwise explicitly. ``num_classes`` may
    instead be given as ``model.num_classes``.
    """
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError("an IDKL config needs a 'model' section (and usually a 'loss' section)")
    model_cfg = dict(cfg["model"])
    num_classes = model_cfg.pop("num_classes", num_classes)
    return build_from_settings(parse_section(ModelSettings, model_cfg, "model"),
                               parse_section(LossSettings, cfg.get("loss"), "loss"),
                               parse_section(TermsSettings, cfg.get("terms"), "terms"), num_classes)


def build_from_settings(model: ModelSettings, loss: LossSettings, terms: TermsSettings,
                        num_classes: int) -> tuple[IDKL, IDKLLossSettings]:
    """:func:`build_idkl` from parsed sections (what the recipe already holds)."""
    settings = apply_terms(loss.idkl(model.confuser), terms)
    if (model.confuser == "grl") != (settings.confuser_targets == "modality"):
        raise ValueError(f"model.confuser={model.confuser!r} does not fit "
                         f"loss.confuser_targets={settings.confuser_targets!r} (grl <-> modality, pseudo <-> pseudo)")
    if settings.reid_sp_raw and not model.raw_sp_reid:
        raise ValueError("loss.reid_sp_raw > 0 needs model.raw_sp_reid: true")
    return IDKL(num_classes, **to_dict(model)), settings


def aux_scale(progress: float, warmup: float) -> float:
    """Weight of IDKL's terms beyond L_b at ``progress`` (0..1): a linear ramp from 0 over ``warmup``.

    Why: from scratch, the purifier, distillation and modality terms compete with the identity loss
    before any identity structure exists; in a short CPU run the full mix kept the ID loss near log(C)
    for hundreds of steps (docs/learning.md). The ramp lets L_b shape the features first.
    """
    return 1.0 if warmup <= 0 else min(max(progress / warmup, 0.0), 1.0)


class IDKLRecipe(Method):
    """Config sections: ``model``, ``loss``, ``terms``, ``recipe`` (the dataclasses above; see :func:`build_idkl`)."""

    sections = SECTIONS

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        self.progress = 1.0
        self.extra = self.settings.loss.extra()
        sections = self.settings
        self.model, self.loss_settings = build_from_settings(sections.model, sections.loss, sections.terms,
                                                             num_classes)

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
        total, terms = idkl_total_loss(out, pids, modality, self.loss_settings)
        scale = aux_scale(self.progress, self.settings.recipe.aux_warmup)
        if scale < 1.0:
            s = self.loss_settings
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
