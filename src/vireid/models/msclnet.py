"""MSCLNet's network: the AGW extractor plus the modality-synergy encoder (a Mogrifier LSTM).

MSCLNet (Zhang, Zhao, Kang, Shen, "Modality Synergy Complement Learning with
Cascaded Aggregation for Visible-Infrared Person Re-Identification", ECCV
2022; survey seed 002, section 7). The extractor is AGW's two-stream network
(:class:`vireid.models.reid_net.ReIDNet`, unchanged); the test feature is the
extractor's. Training adds the synergy encoder S (theta_s):

1. Pairing: each visible image is paired with an infrared image of the same
   identity (the paper's "pair x_i^v, x_i^r with label y_i"); the k-th visible
   and the k-th infrared sample of an identity in batch order form a pair.
2. Instance normalisation, one per modality, per channel over H x W with an
   affine (gamma, beta): f^ = (f - E[f]) / sqrt(Var[f] + eps) * gamma + beta.
3. n = 6 horizontal stripes (MPANet's parts): each map is average-pooled to
   (n, C) part vectors b_1..b_n.
4. Synergy: for every pair and stripe j, a Mogrifier LSTM (Melis, Kocisky,
   Blunsom, ICLR 2020) reads the two-step sequence (b^_j^v, b^_j^r) from a zero
   state; its last hidden state, through a linear layer, is the synergy part
   b_j^s. The synergy feature f^s is (b_1^s .. b_n^s); its global form is
   their mean.

The paper names the Mogrifier LSTM but not what sequence it reads; the
two-step visible-then-infrared sequence per stripe, the output linear layer
(the LSTM's hidden state lies in (-1, 1), the infrared feature it is compared
with in the global complement term does not) and the per-stripe pooling are
vireid's reading.

Gradient routing (the paper trains the synergy encoder with the complement
losses only): "synergy_parts", what the complement losses read, is the
encoder's output on *detached* extractor maps, so those losses reach theta_s
only; ``div_visible``/``div_infrared`` (for the divergence loss, which must
update only the extractor) are computed with the instance norms' affine
parameters detached. With ``attached_synergy`` (the recipe's default
``loss.synergy_routing: through_encoder``) the encoder also runs on the
undetached maps ("synergy_attached"): L_sub, written on f^s (seed 002, 3.4),
reads that one, so its gradient passes through theta_s into the extractor and
whatever the complement losses taught theta_s changes what the extractor
learns. Without it (``detached``, the reading before issue 21) nothing flows
from the encoder into the extractor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.pairing import pair_by_identity
from ..data.records import INFRARED, VISIBLE
from .registry import MODELS
from .reid_net import AGW_NON_LOCAL, ReIDNet


def _gate(size: int, rank: int | None) -> nn.Module:
    """A bias-free size x size map, full or factorised through ``rank`` (Melis et al. use low rank for big models)."""
    if rank is None:
        return nn.Linear(size, size, bias=False)
    return nn.Sequential(nn.Linear(size, rank, bias=False), nn.Linear(rank, size, bias=False))


class MogrifierLSTMCell(nn.Module):
    """An LSTM cell whose input and previous hidden state first gate each other for ``rounds`` rounds.

    Melis et al. 2020, eq. 1-2: for i = 1..r, odd i: x <- 2 sigmoid(Q^i h) * x;
    even i: h <- 2 sigmoid(R^i x) * h; then the ordinary LSTM cell on (x, h, c).
    ``rounds = 0`` is a plain LSTM cell.

    ``forward(x (B, I), (h (B, H), c (B, H))) -> (h', c')``; input and hidden size are equal here.
    """

    def __init__(self, size: int, rounds: int = 5, rank: int | None = None):
        super().__init__()
        if not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"mogrifier rounds must be an integer >= 0, got {rounds!r}")
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(f"mogrifier rank must be null (full) or an integer >= 1, got {rank!r}")
        self.rounds = rounds
        self.q = nn.ModuleList(_gate(size, rank) for _ in range((rounds + 1) // 2))  # odd rounds: h gates x
        self.r = nn.ModuleList(_gate(size, rank) for _ in range(rounds // 2))  # even rounds: x gates h
        self.cell = nn.LSTMCell(size, size)

    def mogrify(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i in range(1, self.rounds + 1):
            if i % 2:
                x = 2 * torch.sigmoid(self.q[i // 2](h)) * x
            else:
                h = 2 * torch.sigmoid(self.r[i // 2 - 1](x)) * h
        return x, h

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        x, h = self.mogrify(x, h)
        return self.cell(x, (h, c))


def stripes(maps: torch.Tensor, parts: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, parts, C): the mean of each of ``parts`` horizontal stripes (adaptive pooling)."""
    return F.adaptive_avg_pool2d(maps, (parts, 1)).squeeze(3).transpose(1, 2)


class SynergyEncoder(nn.Module):
    """theta_s: per-modality instance norms, a Mogrifier LSTM over (visible, infrared) stripes, a linear output."""

    def __init__(self, channels: int, parts: int = 6, rounds: int = 5, rank: int | None = None):
        super().__init__()
        if not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts must be an integer >= 1, got {parts!r}")
        self.parts = parts
        self.norms = nn.ModuleList(nn.InstanceNorm2d(channels, affine=True) for _ in (VISIBLE, INFRARED))
        self.lstm = MogrifierLSTMCell(channels, rounds, rank)
        self.out = nn.Linear(channels, channels)

    def normalise(self, maps: torch.Tensor, modality: int, detach_affine: bool = False) -> torch.Tensor:
        """Instance normalisation of one modality's maps (B, C, H, W); ``detach_affine`` keeps gamma, beta out."""
        norm = self.norms[modality]
        weight, bias = (norm.weight.detach(), norm.bias.detach()) if detach_affine else (norm.weight, norm.bias)
        return F.instance_norm(maps, weight=weight, bias=bias, eps=norm.eps)

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        """Normalised stripes (P, n, C) of the paired visible and infrared images -> synergy parts (P, n, C)."""
        p, n, c = visible.shape
        x_v, x_r = visible.reshape(p * n, c), infrared.reshape(p * n, c)
        zero = x_v.new_zeros(p * n, c)
        state = self.lstm(x_v, (zero, zero))
        h, _ = self.lstm(x_r, state)
        return self.out(h).reshape(p, n, c)


@MODELS.register("msclnet")
class MSCLNet(nn.Module):
    """AGW's ReIDNet (the extractor) + :class:`SynergyEncoder`.

    Args: ``num_classes`` and the :class:`ReIDNet` arguments (AGW defaults),
    ``parts`` (stripes, 6), ``mogrifier_rounds`` (5), ``mogrifier_rank``
    (None = full-rank gates).

    Train mode, ``forward(images, modality, labels)`` -> the extractor's
    {"map", "pooled", "bn", "logits"} plus, for the P pairs of the batch
    (:func:`pair_by_identity`): "pair_visible", "pair_infrared" (batch rows,
    (P,)), "visible_parts" (P, n, C: stripes of the raw visible maps),
    "synergy_parts" (P, n, C), "div_visible", "div_infrared" (P, n * C:
    instance-normalised stripes, affine detached) and, with
    ``attached_synergy``, "synergy_attached" (P, n, C: the encoder on the
    undetached maps). Without ``labels`` only the extractor's outputs. Eval
    mode: the extractor's test feature.
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = True, non_local=AGW_NON_LOCAL, non_local_width: str | int = "agw",
                 pool: str = "gem", gem_p: float = 3.0, classifier_std: float | None = 0.001,
                 test_feature: str = "bn", test_normalize: bool = True, parts: int = 6,
                 mogrifier_rounds: int = 5, mogrifier_rank: int | None = None, backbone: str = "resnet",
                 attached_synergy: bool = False, frozen_blocks: int = 0):
        super().__init__()
        self.attached_synergy = attached_synergy
        self.extractor = ReIDNet(num_classes, depth=depth, last_stride=last_stride, pretrained=pretrained,
                                 two_stream=two_stream, non_local=non_local, non_local_width=non_local_width,
                                 pool=pool, gem_p=gem_p, classifier_std=classifier_std,
                                 test_feature=test_feature, test_normalize=test_normalize, backbone=backbone,
                                 frozen_blocks=frozen_blocks)
        self.feature_dim = self.extractor.feature_dim
        self.synergy = SynergyEncoder(self.feature_dim, parts, mogrifier_rounds, mogrifier_rank)

    def backbone_parameters(self):
        return list(self.extractor.backbone.parameters())

    def head_parameters(self):
        """Everything outside the extractor's ResNet: BN neck, classifier and the synergy encoder."""
        return self.extractor.head_parameters() + list(self.synergy.parameters())

    def extractor_parameters(self):
        """theta_v, theta_r: the parameters the synergy (divergence + CE) and aggregation losses train."""
        return list(self.extractor.parameters())

    def forward(self, images: torch.Tensor, modality: torch.Tensor, labels: torch.Tensor | None = None):
        out = self.extractor(images, modality)
        if not self.training or labels is None:
            return out
        vis, ir = pair_by_identity(labels, modality)
        maps, parts = out["map"], self.synergy.parts
        map_v, map_r = maps[vis], maps[ir]
        out["pair_visible"], out["pair_infrared"] = vis, ir
        out["visible_parts"] = stripes(map_v, parts)
        out["div_visible"] = stripes(self.synergy.normalise(map_v, VISIBLE, detach_affine=True), parts).flatten(1)
        out["div_infrared"] = stripes(self.synergy.normalise(map_r, INFRARED, detach_affine=True), parts).flatten(1)
        out["synergy_parts"] = self.synergise(map_v.detach(), map_r.detach())
        if self.attached_synergy:
            out["synergy_attached"] = self.synergise(map_v, map_r)
        return out

    def synergise(self, map_v: torch.Tensor, map_r: torch.Tensor) -> torch.Tensor:
        """Paired visible and infrared maps (P, C, H, W) -> synergy parts (P, n, C): S(f^_v, f^_r)."""
        parts = self.synergy.parts
        norm_v = stripes(self.synergy.normalise(map_v, VISIBLE), parts)
        norm_r = stripes(self.synergy.normalise(map_r, INFRARED), parts)
        return self.synergy(norm_v, norm_r)
