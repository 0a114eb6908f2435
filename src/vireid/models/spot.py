"""SPOT's network: attended structure representation (ASR), transformer part interaction (TPI), fusion.

SPOT (Chen, Ye, Qi, Wu, Jiang, Lin, "Structure-Aware Positional Transformer
for Visible-Infrared Person Re-Identification", IEEE TIP 2022; survey seed
002, section 4). The equations are the survey's; every size the survey does
not give is a setting (``configs/spot_sysu.yaml`` marks which are vireid's):

* appearance F_I (C_I x H x W): a two-stream ResNet (per-modality stem,
  shared layer1-4; :class:`vireid.models.reid_net.Backbone`);
* structure F_S = N_r(S): the 17 keypoint heat-maps S through a relation
  network of four conv layers and two pooling layers (3x3 conv-BN-ReLU,
  2x2 max pools after the 2nd and 4th), so heat-maps rendered at stride
  ``16 / 4 = 4`` land on the feature map's H x W;
* ASR: F̄_S = phi_2(ReLU(phi_1([F_I, F_S]))) (1x1 conv-BN-ReLU each),
  m_{t,j} = softmax_j(K(F̄_S,t)^T Q(F̄_S,j)), F̄_I,t = sum_j m_{t,j} V(F_I,j),
  F_IS = F̄_I + BN(F_I)  (:func:`structure_attention`). ``attention``: "cosine"
  (default since issue 21) uses cos(K_t, Q_j) / ``attention_temperature`` as
  the logit; "dot" is the survey's K^T Q as written. Why: K^T Q is bilinear
  in the key and query weights, each one's gradient grows with the other, and
  nothing bounds it. On a 24-identity smoke run at lr 0.1 the largest logit
  went 4.6, 17, 81, 295, 1.4e3, 2.9e3 over the first 10 steps: the softmax
  becomes a hard argmax that jumps between positions, the ASR feature jumps
  with it, its triplet term went 3.9 -> 25 -> 1e9 and the run ended with a
  NaN triplet (so did one of three seeds of the CPU ablation, in its last
  pass). Scaling by 1/sqrt(c) only slows the growth (that run NaNed too);
  cosine logits are bounded by 1 / temperature whatever the weights do;
* TPI: p part maps M = sigmoid(W_theta(F_S)) (1x1 conv), part features
  f_i = sum_hw M^i_hw F_I,hw / K^i with K^i = sum_hw M^i_hw (:func:`mask_pool`),
  then F̄_P = Transformer(F_P + PE) with sinusoidal encodings of the part index
  (:func:`sinusoidal_positions`); F_IP = the mean of the p outputs (vireid's
  reading: the fusion weight W_gamma in R^{C x 2C} needs a C-vector);
* fusion: F_IF = W_gamma [F_IS pooled, F_IP] (a bias-free linear layer).

``pose=False`` is vireid's no-keypoint variant (``spot_nopose``): no relation
network, ASR attends over phi(F_I) alone, and the p part maps are fixed
horizontal stripes (:func:`stripe_masks`) instead of learnt from keypoints.

Every branch (baseline F_I, F_IS, F_IP, F_IF) has a BN neck and a classifier.
Train mode returns {"map", "structure" (F_S or None), "masks" (B, p, H, W), and per
branch b in (base, asr, part, fused): b (pre-BN feature), b + "_bn", "logits_" + b}. Eval mode: the
test feature (``test_feature``: "fused" = L2(BN(F_IF)); "cat" = L2 of each BN'd ASR, part and fused
feature side by side).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vireid.data.keypoints import NUM_KEYPOINTS

from .layers import BNNeck, classifier
from .registry import MODELS
from .reid_net import Backbone, init_classifier, make_pool

BRANCHES = ("base", "asr", "part", "fused")
TEST_FEATURES = ("fused", "cat")


# ------------------------------------------------------------------------------------------------ pure parts


def sinusoidal_positions(n: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(n, dim) positional encodings: PE(pos, 2k) = sin(pos / base^(2k/dim)), PE(pos, 2k+1) = cos(same)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    two_k = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = pos / base ** (two_k / dim)  # (n, ceil(dim / 2))
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(angle)
    out[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return out


def mask_pool(masks: torch.Tensor, feat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Part features f_i = sum_hw M^i_hw F_hw / (K^i + eps), K^i = sum_hw M^i_hw.

    masks (B, p, H, W) >= 0, feat (B, C, H, W) -> (B, p, C): a mask-weighted mean of the feature map.
    """
    if masks.shape[0] != feat.shape[0] or masks.shape[2:] != feat.shape[2:]:
        raise ValueError(f"part masks {tuple(masks.shape)} and feature map {tuple(feat.shape)} must share the batch "
                         "and the spatial size")
    weighted = torch.einsum("bphw,bchw->bpc", masks, feat)
    return weighted / (masks.sum(dim=(2, 3))[..., None] + eps)


def stripe_masks(parts: int, height: int, width: int) -> torch.Tensor:
    """(parts, height, width) fixed horizontal stripes: row r belongs to stripe floor(r * parts / height).

    The no-keypoint stand-in for SPOT's learnt part maps (``spot_nopose``): uniform partition, the kind of
    part feature the paper argues is sensitive to misalignment.
    """
    if parts > height:
        raise ValueError(f"the feature map is {height} rows high, fewer than the {parts} stripes (model.parts); "
                         "use taller images or fewer parts")
    stripe = torch.arange(height) * parts // height  # (H,)
    masks = (stripe[None, :] == torch.arange(parts)[:, None]).float()  # (p, H)
    return masks[:, :, None].expand(parts, height, width).contiguous()


ATTENTIONS = ("cosine", "dot")


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along dim 1, divided by the largest entry first so that entries beyond 1e19 (whose squares
    overflow float32) still normalise; a zero vector stays zero."""
    return F.normalize(x / x.abs().amax(dim=1, keepdim=True).clamp_min(1e-30), dim=1)


def structure_attention(keys: torch.Tensor, queries: torch.Tensor, values: torch.Tensor,
                        temperature: float | None = None) -> torch.Tensor:
    """F̄_I,t = sum_j m_{t,j} V_j with m_{t,j} = softmax_j(logit_{t,j}) over the H W positions.

    keys, queries (B, c, H, W), values (B, C, H, W) -> (B, C, H, W). ``temperature`` None: logit = K_t . Q_j,
    as the survey writes it (no 1/sqrt(c) scaling, unbounded); a number tau: logit = cos(K_t, Q_j) / tau,
    within [-1/tau, 1/tau] whatever the scale of K and Q.
    """
    b, c, h, w = values.shape
    keys, queries = keys.flatten(2), queries.flatten(2)
    if temperature is not None:
        keys, queries = _unit(keys) / temperature, _unit(queries)
    affinity = keys.transpose(1, 2) @ queries  # (B, N, N): [t, j] = logit of position j for position t
    attention = affinity.softmax(dim=2)
    return (values.flatten(2) @ attention.transpose(1, 2)).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------------ modules


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class RelationNet(nn.Module):
    """N_r: 17 heat-maps -> structure features, four 3x3 conv-BN-ReLU layers and two 2x2 max pools (/4)."""

    def __init__(self, out_channels: int = 256, width: int = 64, keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        self.net = nn.Sequential(_conv_bn_relu(keypoints, width, 3), _conv_bn_relu(width, width, 3), nn.MaxPool2d(2),
                                 _conv_bn_relu(width, 2 * width, 3), _conv_bn_relu(2 * width, out_channels, 3),
                                 nn.MaxPool2d(2))
        self.keypoints = keypoints

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        if heatmaps.dim() != 4 or heatmaps.shape[1] != self.keypoints:
            raise ValueError(f"expected keypoint heat-maps of shape (B, {self.keypoints}, h, w), "
                             f"got {tuple(heatmaps.shape)}")
        return self.net(heatmaps)


class AttendedStructure(nn.Module):
    """ASR: structure-guided attention over positions, F_IS = F̄_I + BN(F_I)."""

    def __init__(self, channels: int, structure_channels: int, reduction: int = 8, temperature: float | None = None):
        super().__init__()
        if temperature is not None and not temperature > 0:
            raise ValueError(f"the ASR attention temperature must be > 0, got {temperature!r}")
        self.temperature = temperature
        joint = channels + structure_channels
        inner = max(channels // reduction, 1)
        self.phi = nn.Sequential(_conv_bn_relu(joint, joint, 1), _conv_bn_relu(joint, channels, 1))
        self.key = nn.Conv2d(channels, inner, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.structure_channels = structure_channels

    def forward(self, appearance: torch.Tensor, structure: torch.Tensor | None) -> torch.Tensor:
        joint = appearance if structure is None else torch.cat([appearance, structure], dim=1)
        fused = self.phi(joint)
        attended = structure_attention(self.key(fused), self.query(fused), self.value(appearance), self.temperature)
        return attended + self.bn(appearance)


class PartInteraction(nn.Module):
    """TPI: p parts mask-pooled from F_I, + sinusoidal part positions, through a transformer encoder."""

    def __init__(self, channels: int, structure_channels: int | None, parts: int = 6, heads: int = 8,
                 layers: int = 1, ffn: int | None = None, dropout: float = 0.1, pe_base: float = 10000.0):
        super().__init__()
        if channels % heads:
            raise ValueError(f"model.heads ({heads}) must divide the feature width {channels}")
        self.parts = parts
        self.theta = nn.Conv2d(structure_channels, parts, 1) if structure_channels else None
        layer = nn.TransformerEncoderLayer(channels, heads, ffn or channels, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.register_buffer("positions", sinusoidal_positions(parts, channels, pe_base), persistent=False)

    def masks(self, structure: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """(B, p, H, W) part maps: sigmoid(W_theta F_S), or fixed stripes without structure."""
        if self.theta is None:
            b, _, h, w = like.shape
            return stripe_masks(self.parts, h, w).to(like).expand(b, -1, -1, -1)
        return torch.sigmoid(self.theta(structure))

    def forward(self, appearance: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        parts = mask_pool(masks, appearance)  # (B, p, C)
        return self.encoder(parts + self.positions.to(parts.dtype)).mean(dim=1)


@MODELS.register("spot")
class SPOTNet(nn.Module):
    """The SPOT network (``pose=True``) or vireid's stripe variant without keypoints (``pose=False``).

    Args:
        num_classes: training identities.
        depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone: see
            :class:`vireid.models.reid_net.Backbone`.
        pose: learn structure from keypoint heat-maps (SPOT) or use fixed stripes (``spot_nopose``).
        structure_channels: C_S; relation_width: the relation network's first width.
        reduction: K/Q width = C_I / reduction. attention, attention_temperature: the ASR's logits,
            "cosine" (cos(K, Q) / temperature, the default) or "dot" (the survey's K^T Q).
        parts: p. heads, transformer_layers, transformer_ffn (None = C_I), dropout, pe_base (Q of the
            encodings): the part transformer.
        pool, gem_p: pooling of F_I and F_IS. classifier_std: N(0, std) classifier init.
        test_feature: "fused" or "cat"; test_normalize: L2-normalise (each part, for "cat").
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = True, non_local=(0, 0, 0, 0), non_local_width: str | int = "agw",
                 backbone: str = "resnet", pose: bool = True, structure_channels: int = 256,
                 relation_width: int = 64, reduction: int = 8, attention: str = "cosine",
                 attention_temperature: float = 0.1, parts: int = 6, heads: int = 8,
                 transformer_layers: int = 1, transformer_ffn: int | None = None, dropout: float = 0.1,
                 pe_base: float = 10000.0, pool: str = "avg", gem_p: float = 3.0,
                 classifier_std: float | None = 0.001, test_feature: str = "fused", test_normalize: bool = True,
                 frozen_blocks: int = 0):
        super().__init__()
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"SPOT test_feature must be one of {TEST_FEATURES}, got {test_feature!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"SPOT attention must be one of {ATTENTIONS}, got {attention!r}")
        self.backbone = Backbone(depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone,
                                 frozen_blocks=frozen_blocks)
        dim = self.backbone.out_channels
        self.pose = bool(pose)
        self.relation = RelationNet(structure_channels, relation_width) if self.pose else None
        self.asr = AttendedStructure(dim, structure_channels if self.pose else 0, reduction,
                                     attention_temperature if attention == "cosine" else None)
        self.tpi = PartInteraction(dim, structure_channels if self.pose else None, parts, heads, transformer_layers,
                                   transformer_ffn, dropout, pe_base)
        self.fuse = nn.Linear(2 * dim, dim, bias=False)
        self.pool = make_pool(pool, gem_p)
        self.necks = nn.ModuleDict({b: BNNeck(dim) for b in BRANCHES})
        self.classifiers = nn.ModuleDict({b: init_classifier(classifier(dim, num_classes), classifier_std)
                                          for b in BRANCHES})
        self.test_feature, self.test_normalize = test_feature, test_normalize
        self.feature_dim = 3 * dim if test_feature == "cat" else dim

    def head_parameters(self):
        """Parameters outside the backbone (relation network, ASR, TPI, fusion, necks, classifiers)."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def structure(self, heatmaps: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
        """F_S at the feature map's size, or None for the stripe variant."""
        if not self.pose:
            return None
        if heatmaps is None:
            raise ValueError("SPOT needs keypoint heat-maps for every image (data.keypoints; see "
                             "docs/keypoints.md); method spot_nopose works without them")
        structure = self.relation(heatmaps)
        if tuple(structure.shape[2:]) != tuple(size):
            raise ValueError(f"heat-maps of {tuple(heatmaps.shape[2:])} cells give a {tuple(structure.shape[2:])} "
                             f"structure map after the relation network's two 2x2 pools, but the feature map is "
                             f"{tuple(size)}: render heat-maps at 4x the feature map (data.heatmap_stride = "
                             f"backbone stride / 4, i.e. 4 for ResNet with last_stride 1)")
        return structure

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None,
                heatmaps: torch.Tensor | None = None):
        appearance = self.backbone(images, modality)
        structure = self.structure(heatmaps, appearance.shape[2:])
        attended = self.asr(appearance, structure)
        masks = self.tpi.masks(structure, appearance)
        feats = {"base": self.pool(appearance), "asr": self.pool(attended), "part": self.tpi(appearance, masks)}
        feats["fused"] = self.fuse(torch.cat([feats["asr"], feats["part"]], dim=1))
        bn = {b: self.necks[b](feats[b]) for b in BRANCHES}
        if not self.training:
            return self._test_feature(bn)
        out = {"map": appearance, "structure": structure, "masks": masks}
        for b in BRANCHES:
            out[b], out[b + "_bn"], out["logits_" + b] = feats[b], bn[b], self.classifiers[b](bn[b])
        return out

    def _test_feature(self, bn: dict) -> torch.Tensor:
        norm = (lambda t: F.normalize(t, dim=1)) if self.test_normalize else (lambda t: t)
        if self.test_feature == "fused":
            return norm(bn["fused"])
        return torch.cat([norm(bn[b]) for b in ("asr", "part", "fused")], dim=1)
