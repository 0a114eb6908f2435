"""IDKL (Ren & Zhang, CVPR 2024): dual-stream VI-ReID with an Information Purifier.

A shared trunk (ResNet stem + layer1 + layer2) feeds two layer3 + layer4
branches: the modality-shared branch (the test feature) and the
modality-specific branch, whose map goes through the Information Purifier.
Modality heads: discriminators on the specific side, confusers on the shared
side. The losses live in :mod:`vireid.losses.idkl` and the config-to-model
mapping in :mod:`vireid.methods.idkl`; this module returns the tensors the
losses need.

Variants are switches, not copies: ``idkl`` (the released code) and
``idkl_paper`` (the paper's equations) differ only in constructor arguments
and loss settings; see ``configs/idkl_*.yaml``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import optimize_for_inference

from .backbones import build_trunk, freeze_blocks, load_pretrained
from .backbones.resnet import ResNet
from .backbones.weights import pretrained_path
from .fused_eval import FusedResNetEval
from .layers import BNNeck, GeM, InformationPurifier, ModalityHead, classifier, exporting, grad_reverse
from .registry import MODELS

TRUNK = ("stem", "layer1", "layer2")
BRANCH = ("layer3", "layer4")
CPU_EVAL = ("fold", "exact", "eager")


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
        gate_pool: g(.) of Eq. 8 for "se" gates: "gem" (GeM with ``gem_p``, the paper's pooling; the
            only choice that lets m_r depend on the sample, since an instance-normalised map has the
            same spatial mean for every sample) or "avg" (refused with "se" gates for that reason).
        in_affine: affine IN with running stats (code) or plain IN (paper Eq. 7).
        reduction: gate reduction ratio r (16).
        confuser: "pseudo" (code: no gradient reversal; the loss uses flipped pseudo labels)
            or "grl" (paper Eq. 2: gradient reversal, true labels).
        grl_coef: gradient reversal coefficient (a plain attribute, may be scheduled).
        num_confusers, num_discriminators: K of Eq. 4 (1 in the code).
        head_input: "bnneck" (code: heads see the BN-neck features, specific one purified)
            or "pooled" (paper Eq. 2-3: pooled F_sh and the unpurified pooled F_sp).
        entropy_classifier: "separate" (code: a third classifier trained only by L_e, on pooled
            features) or "specific" (paper Eq. 10: the specific ID classifier C_sp, which reads the
            specific BN-neck output as in Eq. 5 and 18).
        raw_sp_reid: also return the unpurified specific feature and logits (paper Eq. 5).
        test_normalize: L2-normalise the test feature.
        backbone: "resnet" (``depth``) or an OSNet width ("osnet_x1_0", ..., "osnet_x0_25"): the trunk is
            stem + layer1 + layer2 (OSNet: conv1-conv3), each branch layer3 + layer4 (OSNet: conv4, conv5).
        cpu_eval: how the test path runs on the CPU without autograd (see ``test_maps``): "fold" (each BN
            folded into its convolution, ReLU and residual add fused into it: fastest, features differ from
            "eager" by rounding), "exact" (oneDNN layouts, BN kept: the same numbers as "eager") or "eager".
        frozen_blocks: efficientnet_lite0 only: its stem conv and first N blocks stay at their loaded weights
            in the trunk and in both branches (``freeze_blocks``); with 11, both branches keep blocks 5-10 as
            loaded, so the shared/specific split is learnt in blocks 11-15 and the head conv.
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 gem_p: float = 3.0, gem_learnable: bool = False, gates: str = "pixel", gate_pool: str = "gem",
                 in_affine: bool = True,
                 reduction: int = 16, confuser: str = "pseudo", grl_coef: float = 1.0, num_confusers: int = 1,
                 num_discriminators: int = 1, head_input: str = "bnneck", entropy_classifier: str = "separate",
                 raw_sp_reid: bool = False, head_hidden: int = 100, head_dropout: float = 0.5,
                 test_normalize: bool = False, backbone: str = "resnet", cpu_eval: str = "fold",
                 frozen_blocks: int = 0):
        super().__init__()
        self.cpu_eval = _choice("cpu_eval", cpu_eval, CPU_EVAL)
        self._cpu_test_path = None  # (key of the weights it was built from, module): see test_maps
        _choice("gates", gates, ("pixel", "se"))
        _choice("gate_pool", gate_pool, ("gem", "avg"))
        self.confuser = _choice("confuser", confuser, ("pseudo", "grl"))
        self.head_input = _choice("head_input", head_input, ("bnneck", "pooled"))
        self.entropy_classifier = _choice("entropy_classifier", entropy_classifier, ("separate", "specific"))
        if num_confusers < 1 or num_discriminators < 1:
            raise ValueError(f"need at least one confuser and one discriminator, got {num_confusers} "
                             f"and {num_discriminators}")
        self.trunk = build_trunk(backbone, depth, parts=TRUNK)
        self.branch_sh = build_trunk(backbone, depth, parts=BRANCH, last_stride=last_stride)
        self.branch_sp = build_trunk(backbone, depth, parts=BRANCH, last_stride=last_stride)
        weights = pretrained_path(pretrained, backbone, depth)
        if weights:
            for part in (self.trunk, self.branch_sh, self.branch_sp):
                load_pretrained(part, weights)
        freeze_blocks((self.trunk, self.branch_sh, self.branch_sp), frozen_blocks, backbone)
        dim = self.branch_sh.out_channels
        self.feature_dim = dim
        self.pool = GeM(gem_p, learnable=gem_learnable)
        self.purifier = InformationPurifier(dim, reduction, pooled_gates=gates == "se", in_affine=in_affine,
                                            gate_pool=gate_pool, gem_p=gem_p)
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
        feat = self.bn_neck(self.pool(self.test_maps(images)))
        if flip:
            feat = 0.5 * (feat + self.bn_neck(self.pool(self.test_maps(images.flip(3)))))
        return F.normalize(feat, dim=1) if self.test_normalize else feat

    def test_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Shared layer-4 maps of eval-mode images.

        On the CPU without autograd (and not while an exporter records the model), with a ResNet backbone
        (OSNet's broadcast gates do not run in oneDNN layouts) and unless ``cpu_eval`` is "eager", they
        come from a runner built from trunk + shared branch: with "fold",
        :class:`~vireid.models.fused_eval.FusedResNetEval` (BN folded, ReLU and residual add fused into
        oneDNN's convolutions); with "exact" (or "fold" on a torch without those ops), a copy passed through
        torch.fx's ``optimize_for_inference`` (activations kept in oneDNN's blocked layout instead of being
        reordered around every convolution; "fold" also folds BN). Why: about 1.25x ("exact") and 2x
        ("fold") the eager rate at batch 32 (benchmarks/README.md). The runner (one more set of trunk +
        branch weights in memory) is rebuilt whenever a weight or buffer was replaced or changed in place
        (the optimiser, ``load_state_dict``, ``.to()``), so it never runs stale weights; an edit through
        ``.data``, which bypasses version counters, is not seen. Forward hooks on the trunk or branch
        (e.g. the non-finite layer search of :mod:`vireid.evaluation.finite`) get the eager modules.
        """
        weights = [*self.trunk.parameters(), *self.branch_sh.parameters()]
        if (self.cpu_eval == "eager" or not isinstance(self.trunk, ResNet) or self.training
                or torch.is_grad_enabled() or images.device.type != "cpu"
                or images.dtype != torch.float32 or any(w.dtype != torch.float32 for w in weights) or _recording()
                or _hooked(self.trunk, self.branch_sh)):
            return self.branch_sh(self.trunk(images))
        state = weights + [*self.trunk.buffers(), *self.branch_sh.buffers()]
        key = (self.cpu_eval, tuple((t.data_ptr(), t._version) for t in state))
        if self._cpu_test_path is None or self._cpu_test_path[0] != key:
            try:
                self._cpu_test_path = (key, self._cpu_runner(images[:1]))
            except Exception as err:  # torch.fx's pass is experimental: a torch that breaks it still evaluates
                warnings.warn(f"IDKL cpu_eval={self.cpu_eval!r}: no CPU test-path runner works here ({err!r}); "
                              "running the eager test path", RuntimeWarning, stacklevel=2)
                self.cpu_eval = "eager"
                return self.branch_sh(self.trunk(images))
        return self._cpu_test_path[1](images)

    def _cpu_runner(self, sample: torch.Tensor):
        """The test-path runner ``cpu_eval`` asks for (see ``test_maps``), tried once on ``sample`` (one image):
        a backbone or torch it does not support fails here, not in the middle of an evaluation."""
        if self.cpu_eval == "fold":
            try:
                runner = FusedResNetEval(self.trunk, self.branch_sh)
                runner(sample)
                return runner
            except (TypeError, RuntimeError, AttributeError):  # another backbone, or a torch without the ops
                pass
        path = nn.Sequential(self.trunk, self.branch_sh).eval()
        runner = optimize_for_inference(path, {"conv_bn_fuse": self.cpu_eval == "fold"})
        runner(sample)
        return runner

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
        f_raw, f_p = self.pool(x_sp), self.pool(ip["x_p"])
        b_raw = self.bn_neck_sp(f_raw) if self.raw_sp_reid or self.classifier_ent is None else None
        if self.classifier_ent is not None:  # code: C_sp_f on the pooled maps, no BN neck
            ent_logits, ent_logits_p = self.classifier_ent(f_raw), self.classifier_ent(f_p)
        else:  # paper Eq. 10 with Eq. 18's C_sp: the classifier reads the specific BN-neck output
            ent_logits, ent_logits_p = self.classifier_sp(b_raw), self.classifier_sp(self.bn_neck_sp(f_p))
        out = {
            "feat_sh": f_sh, "feat_sp": f_sp, "bn_sh": b_sh, "bn_sp": b_sp,
            "logits_sh": self.classifier(b_sh), "logits_sp": self.classifier_sp(b_sp),
            "ent_logits": ent_logits, "ent_logits_p": ent_logits_p,
            "pool_in": self.pool(ip["x_in"]), "pool_in_p": self.pool(ip["x_in_p"]),
        }
        if self.raw_sp_reid:
            out["feat_sp_raw"] = f_raw
            out["logits_sp_raw"] = self.classifier_sp(b_raw)
        head_sh, head_sp = (b_sh, b_sp) if self.head_input == "bnneck" else (f_sh, f_raw)
        if self.confuser == "grl":
            head_sh = grad_reverse(head_sh, self.grl_coef)
        out["d_sp_logits"] = [d(head_sp) for d in self.discriminators]
        out["d_sh_logits"] = [c(head_sh) for c in self.confusers]
        return out


def _recording() -> bool:
    """True while an exporter (:func:`~vireid.models.layers.exporting`) or torch.compile records the model (the
    recorded graph must be the eager one)."""
    return exporting() or torch.compiler.is_compiling()


def _hooked(*modules: nn.Module) -> bool:
    """True when any submodule has forward (pre-)hooks: they must see the eager modules run."""
    return any(m._forward_hooks or m._forward_pre_hooks for root in modules for m in root.modules())
