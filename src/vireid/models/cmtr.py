"""CMTR's network: a ViT on overlapping patches with a learned modality embedding, BN neck, ID classifier.

CMTR (Liang, Jin, Gao, Liu, Feng, Wang, Li, "CMTR: Cross-modality Transformer
for Visible-infrared Person Re-identification"; survey seed 002, section 2):

* input embedding = patch projection (overlapping patches, stride S < P) +
  position embedding + a modality embedding e_m, one learned vector per
  modality (e_vis, e_ir) added to every token of an image of that modality
  (vireid adds it to the class token too, as the brief of the method reads
  "every token"; the survey's equation lists the patch tokens);
* a [cls] token whose final output V is the image's embedding; the matching
  feature is f = BN(V) (a BN neck, frozen bias);
* phi_m: a learned mapping of e_m, subtracted from f for the modality-aware
  enhancement loss ("modality removal", :mod:`vireid.losses.cmtr`). The
  survey does not say what phi_m is; vireid makes it one linear layer
  (D -> D, with bias) per modality (``phi: linear``), or the identity
  (``phi: identity``: f - e_m itself).

Train mode ``forward(images, modality)`` -> {"pooled": V (B, D), "feat":
f = BN(V), "logits": FC_id(f), "removed": f - phi_m(e_m), "logits_removed":
FC_id(f - phi_m(e_m)), "map": the patch tokens as a (B, D, h, w) map}.
Eval mode: f (L2-normalised when ``test_normalize``), the survey's test feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.records import INFRARED, VISIBLE
from .backbones import build_vit, load_pretrained
from .backbones.vit import split_tokens
from .backbones.weights import pretrained_path
from .layers import BNNeck, check_modalities, classifier, exporting
from .registry import MODELS
from .reid_net import init_classifier

PHI = ("linear", "identity")


def remove_modality(feat: torch.Tensor, modality: torch.Tensor, removal: torch.Tensor) -> torch.Tensor:
    """r_i = f_i - phi_{m_i}(e_{m_i}): ``feat`` (B, D), ``modality`` (B,) of 0 / 1, ``removal`` (2, D) -> (B, D).

    ``removal`` holds phi_vis(e_vis) in row VISIBLE (0) and phi_ir(e_ir) in row INFRARED (1).
    """
    if feat.dim() != 2 or modality.shape != feat.shape[:1] or removal.shape != (2, feat.shape[1]):
        raise ValueError(f"modality removal needs feat (B, D), modality (B,) and removal (2, D), got "
                         f"{tuple(feat.shape)}, {tuple(modality.shape)} and {tuple(removal.shape)}")
    check_modalities(modality)
    return feat - removal[modality.long()]


@MODELS.register("cmtr")
class CMTR(nn.Module):
    """The CMTR network.

    Args:
        num_classes: training identities.
        backbone: a ViT name ("vit_base" = TransReID's ViT-B/16, "vit_small", "vit_tiny", "vit_d32_l2_h2").
        patch_size, patch_stride: the patch convolution (16 / 12: TransReID's overlapping patches).
        img_size: (H, W) the position embeddings are stored for (the training input size).
        pretrained: a timm-named ImageNet ViT checkpoint (its pos_embed is resized to this grid), or None.
        drop_path: stochastic-depth rate of the last block.
        phi: "linear" (one D x D linear layer per modality) or "identity".
        me_std: the modality embeddings start N(0, me_std) truncated at 2 std (as the position embeddings).
        classifier_std: bias-free ID classifier N(0, std); None = PyTorch's default.
        test_normalize: L2-normalise the test feature.
    """

    def __init__(self, num_classes: int, backbone: str = "vit_base", patch_size: int = 16, patch_stride: int = 12,
                 img_size: tuple[int, int] = (256, 128), pretrained: str | None = None, drop_path: float = 0.1,
                 phi: str = "linear", me_std: float = 0.02, classifier_std: float | None = 0.001,
                 test_normalize: bool = True):
        super().__init__()
        if phi not in PHI:
            raise ValueError(f"phi must be one of {', '.join(PHI)}, got {phi!r}")
        self.vit = build_vit(backbone, patch_size=patch_size, patch_stride=patch_stride, img_size=tuple(img_size),
                             drop_path=drop_path)
        weights = pretrained_path(pretrained, backbone)
        if weights:
            load_pretrained(self.vit, weights)
        self.feature_dim = dim = self.vit.dim
        self.modality_embed = nn.Parameter(torch.zeros(2, dim))  # row VISIBLE = e_vis, row INFRARED = e_ir
        nn.init.trunc_normal_(self.modality_embed, std=me_std)
        self.phi_kind = phi
        self.phi = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2)) if phi == "linear" else None
        self.bn_neck = BNNeck(dim)
        self.classifier = init_classifier(classifier(dim, num_classes), classifier_std)
        self.test_normalize = test_normalize

    def head_parameters(self):
        """Everything but the ViT: modality embeddings, phi, BN neck, classifier (new, not pretrained)."""
        return [p for name, p in self.named_parameters() if not name.startswith("vit.")]

    def removal(self) -> torch.Tensor:
        """(2, D): phi_vis(e_vis) in row VISIBLE, phi_ir(e_ir) in row INFRARED."""
        e = self.modality_embed
        if self.phi is None:
            return e
        return torch.stack([self.phi[VISIBLE](e[VISIBLE]), self.phi[INFRARED](e[INFRARED])])

    def forward(self, images: torch.Tensor, modality: torch.Tensor):
        if modality is None or modality.shape != images.shape[:1]:
            got = None if modality is None else tuple(modality.shape)
            raise ValueError(f"CMTR needs a per-sample modality tensor of shape ({images.shape[0]},), got {got}")
        if not exporting():
            check_modalities(modality)
        patches = self.vit.patch_embed(images)
        tokens = self.vit.encode(patches, token_bias=self.modality_embed[modality.long()])
        pooled, fmap = split_tokens(tokens, tuple(patches.shape[2:]))
        feat = self.bn_neck(pooled)
        if not self.training:
            return F.normalize(feat, dim=1) if self.test_normalize else feat
        removed = remove_modality(feat, modality, self.removal())
        return {"pooled": pooled, "feat": feat, "logits": self.classifier(feat), "removed": removed,
                "logits_removed": self.classifier(removed), "map": fmap}
