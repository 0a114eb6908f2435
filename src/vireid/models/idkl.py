"""IDKL (Ren & Zhang, CVPR 2024): dual-stream VI-ReID with an Information Purifier.

A shared trunk (ResNet stem + layer1 + layer2) feeds two layer3 + layer4
branches: the modality-shared branch (the test feature) and the
modality-specific branch, whose map goes through the Information Purifier.
Modality heads: discriminators on the specific side, confusers on the shared
side. The losses live in :mod:`vireid.losses.idkl`; this module returns the
tensors they need and maps a plain config dict to (model, loss settings).

Variants are switches, not copies: ``idkl`` (the released code) and
``idkl_paper`` (the paper's equations) differ only in constructor arguments
and loss settings; see ``configs/idkl_*.yaml``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.idkl import IDKLLossSettings
from .backbones import build_trunk, load_pretrained
from .layers import BNNeck, GeM, InformationPurifier, ModalityHead, classifier, grad_reverse
from .registry import MODELS

TRUNK = ("stem", "layer1", "layer2")
BRANCH = ("layer3", "layer4")


def _choice(name: str, value, allowed):
    if value not in allowed:
        raise ValueError(f"IDKL {name}={value!r}; expected one of {allowed}")
    return value


@MODELS.register("idkl")
class IDKL(nn.Module):
    """The IDKL network.

    Args:
        num_classes: training identities.
        depth: ResNet depth (50 as published; 18/34 for small runs and tests).
        last_stride: stride of layer4 (1 as published).
        pretrained: path to a torchvision-named ImageNet checkpoint (.pth/.pt/.safetensors),
            loaded into the trunk and both branches with a printed report.
        gem_p, gem_learnable: GeM exponent (3, fixed, as published).
        gates: "pixel" (code: 1x1-conv gates at every position) or "se" (paper Eq. 8: pooled SE masks).
        in_affine: affine IN with running stats (code) or plain IN (paper Eq. 7).
        reduction: gate reduction ratio r (16).
        confuser: "pseudo" (code: no gradient reversal; the loss uses flipped pseudo labels)
            or "grl" (paper Eq. 2: gradient reversal, true labels).
        grl_coef: gradient reversal coefficient (a plain attribute, may be scheduled).
        num_confusers, num_discriminators: K of Eq. 4 (1 in the code).
        head_input: "bnneck" (code: heads see the BN-neck features, specific one purified)
            or "pooled" (paper Eq. 2-3: pooled F_sh and the unpurified pooled F_sp).
        entropy_classifier: "separate" (code: a third classifier trained only by L_e)
            or "specific" (paper Eq. 10: the specific ID classifier C_sp).
        raw_sp_reid: also return the unpurified specific feature and logits (paper Eq. 5).
        test_normalize: L2-normalise the test feature.
        backbone: "resnet" (``depth``) or an OSNet width ("osnet_x1_0", ..., "osnet_x0_25"): the trunk is
            stem + layer1 + layer2 (OSNet: conv1-conv3), each branch layer3 + layer4 (OSNet: conv4, conv5).
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 gem_p: float = 3.0, gem_learnable: bool = False, gates: str = "pixel", in_affine: bool = True,
                 reduction: int = 16, confuser: str = "pseudo", grl_coef: float = 1.0, num_confusers: int = 1,
                 num_discriminators: int = 1, head_input: str = "bnneck", entropy_classifier: str = "separate",
                 raw_sp_reid: bool = False, head_hidden: int = 100, head_dropout: float = 0.5,
                 test_normalize: bool = False, backbone: str = "resnet"):
        super().__init__()
        _choice("gates", gates, ("pixel", "se"))
        self.confuser = _choice("confuser", confuser, ("pseudo", "grl"))
        self.head_input = _choice("head_input", head_input, ("bnneck", "pooled"))
        _choice("entropy_classifier", entropy_classifier, ("separate", "specific"))
        if num_confusers < 1 or num_discriminators < 1:
            raise ValueError(f"need at least one confuser and one discriminator, got {num_confusers} "
                             f"and {num_discriminators}")
        self.trunk = build_trunk(backbone, depth, parts=TRUNK)
        self.branch_sh = build_trunk(backbone, depth, parts=BRANCH, last_stride=last_stride)
        self.branch_sp = build_trunk(backbone, depth, parts=BRANCH, last_stride=last_stride)
        if pretrained:
            for part in (self.trunk, self.branch_sh, self.branch_sp):
                load_pretrained(part, pretrained)
        dim = self.branch_sh.out_channels
        self.feature_dim = dim
        self.pool = GeM(gem_p, learnable=gem_learnable)
        self.purifier = InformationPurifier(dim, reduction, pooled_gates=gates == "se", in_affine=in_affine)
        self.bn_neck = BNNeck(dim)
        self.bn_neck_sp = BNNeck(dim)
        self.classifier = classifier(dim, num_classes)
        self.classifier_sp = classifier(dim, num_classes)
        self.classifier_ent = classifier(dim, num_classes) if entropy_classifier == "separate" else None
        self.discriminators = nn.ModuleList(ModalityHead(dim, head_hidden, head_dropout)
                                            for _ in range(num_discriminators))
        self.confusers = nn.ModuleList(ModalityHead(dim, head_hidden, head_dropout) for _ in range(num_confusers))
        self.grl_coef = grl_coef
        self.raw_sp_reid = raw_sp_reid
        self.test_normalize = test_normalize

    # -- test path: shared branch only ------------------------------------------------------------
    def extract(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Test feature: BN-neck output of the shared branch (eval-mode BN), optionally
        averaged with the horizontally flipped image and L2-normalised. Works in
        either memory format (``torch.channels_last`` for GPU bf16 inference)."""
        feat = self.bn_neck(self.pool(self.branch_sh(self.trunk(images))))
        if flip:
            feat = 0.5 * (feat + self.bn_neck(self.pool(self.branch_sh(self.trunk(images.flip(3))))))
        return F.normalize(feat, dim=1) if self.test_normalize else feat

    # -- training path ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        """Eval mode: the test feature (B, D). Train mode: a dict of named tensors for
        :func:`vireid.losses.idkl_total_loss` (``modality`` (B,) of 0/1 is required)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"IDKL expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not self.training:
            return self.extract(images)
        if modality is None or modality.shape != images.shape[:1]:
            got = None if modality is None else tuple(modality.shape)
            raise ValueError(f"IDKL training needs a per-sample modality tensor of shape ({images.shape[0]},), "
                             f"got {got}")
        x = self.trunk(images)
        x_sh = self.branch_sh(x)
        x_sp = self.branch_sp(x)
        ip = self.purifier(x_sp)
        f_sh, f_sp = self.pool(x_sh), self.pool(ip["out"])
        b_sh, b_sp = self.bn_neck(f_sh), self.bn_neck_sp(f_sp)
        f_raw = self.pool(x_sp)
        ent = self.classifier_ent if self.classifier_ent is not None else self.classifier_sp
        out = {
            "feat_sh": f_sh, "feat_sp": f_sp, "bn_sh": b_sh, "bn_sp": b_sp,
            "logits_sh": self.classifier(b_sh), "logits_sp": self.classifier_sp(b_sp),
            "ent_logits": ent(f_raw), "ent_logits_p": ent(self.pool(ip["x_p"])),
            "pool_in": self.pool(ip["x_in"]), "pool_in_p": self.pool(ip["x_in_p"]),
        }
        if self.raw_sp_reid:
            out["feat_sp_raw"] = f_raw
            out["logits_sp_raw"] = self.classifier_sp(self.bn_neck_sp(f_raw))
        head_sh, head_sp = (b_sh, b_sp) if self.head_input == "bnneck" else (f_sh, f_raw)
        if self.confuser == "grl":
            head_sh = grad_reverse(head_sh, self.grl_coef)
        out["d_sp_logits"] = [d(head_sp) for d in self.discriminators]
        out["d_sh_logits"] = [c(head_sh) for c in self.confusers]
        return out


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
