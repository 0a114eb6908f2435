"""The shared re-ID network: ResNet trunk, optional two-stream stem and non-local blocks, pooling, BN neck.

Every non-IDKL method composes these parts (AGW, CAJ, MBFVRD; DAN builds on
them too):

* :class:`Backbone` -- ResNet-18/34/50 whose stem (conv1, bn1, relu, maxpool)
  is either shared or one copy per modality (AGW's two-stream layout), shared
  layer1-4, and non-local blocks after the last ``n`` blocks of each stage
  (AGW: ``non_local=(0, 2, 3, 0)``). Images are routed to their stem per
  sample from a modality tensor, so a batch may mix modalities in any order.
* :class:`NonLocal` -- the embedded dot-product non-local block (Wang et al.,
  CVPR 2018) as AGW writes it: affinity = theta^T phi / N (no softmax), zero-
  initialised output BN, residual add. AGW's code sets the inner width to 1
  channel (``width="agw"``); ``width="half"`` is the textbook C/2.
* :class:`ReIDNet` -- Backbone + pooling (GeM p=3 or average) + BN neck
  (frozen bias) + bias-free classifier, registered as ``baseline``. In train
  mode ``forward`` returns {"map", "pooled", "bn", "logits"}; in eval mode
  the test feature (AGW: L2-normalised BN feature).

Reference: AGW, Ye et al., TPAMI 2021 (``Cross-Modal-Re-ID-baseline`` model.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.records import INFRARED, VISIBLE
from .backbones import build_trunk, freeze_blocks, is_vit, load_pretrained
from .backbones.vit import split_tokens
from .backbones.weights import pretrained_path
from .layers import BNNeck, GeM, check_modalities, classifier, exporting
from .registry import MODELS
from .trunk import AGW_NON_LOCAL

STAGES = ("layer1", "layer2", "layer3", "layer4")


class NonLocal(nn.Module):
    """Embedded dot-product non-local block: z = x + BN(W(f(x) g(x))), f = theta(x)^T phi(x) / N.

    ``width``: "agw" (1 inner channel, the official AGW code's quirk), "half"
    (channels // 2, the paper's block) or an int. The output BN's weight and
    bias start at 0, so a new block is the identity.
    """

    def __init__(self, channels: int, width: str | int = "agw"):
        super().__init__()
        if width == "agw":
            inner = 1
        elif width == "half":
            inner = max(channels // 2, 1)
        elif isinstance(width, int) and not isinstance(width, bool) and width >= 1:
            inner = width
        else:
            raise ValueError(f"non-local width must be 'agw', 'half' or a positive int, got {width!r}")
        self.inner = inner
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (B, c, N)
        phi = self.phi(x).flatten(2)
        g = self.g(x).flatten(2)
        affinity = theta.transpose(1, 2) @ phi / (h * w)  # (B, N, N)
        y = (g @ affinity.transpose(1, 2)).reshape(b, self.inner, h, w)  # y_i = sum_j f_ij g_j
        return x + self.out(y)


# AGW's model.py:Non_local names its parts g (a Sequential holding one conv), theta, phi and W (conv, BN).
_AGW_NON_LOCAL_PREFIXES = (("g.0.", "g."), ("W.0.", "out.0."), ("W.1.", "out.1."))


def non_local_state_from_agw(state: dict) -> dict:
    """A state dict of AGW's ``Non_local`` block with :class:`NonLocal`'s key names (values untouched).

    Lets an AGW checkpoint's blocks (or the golden vectors) load into vireid's block.
    """
    out = {}
    for key, value in state.items():
        for old, new in _AGW_NON_LOCAL_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def stage_blocks(stage: nn.Module) -> list[nn.Module]:
    """The blocks of a stage (a ResNet layer, an OSNet conv2-4), or the stage itself (OSNet's conv5)."""
    return list(stage) if isinstance(stage, nn.Sequential) else [stage]


def _check_non_local(non_local, blocks: tuple[int, ...]) -> tuple[int, ...]:
    counts = tuple(non_local or (0, 0, 0, 0))
    if len(counts) != 4 or any(not isinstance(n, int) or n < 0 for n in counts):
        raise ValueError(f"non_local must be 4 non-negative counts (one per ResNet stage), got {non_local!r}")
    for stage, n, have in zip(STAGES, counts, blocks):
        if n > have:
            raise ValueError(f"non_local asks for {n} blocks after {stage}, which has only {have} blocks "
                             f"(AGW's (0, 2, 3, 0) needs ResNet-50; try (0, 2, 2, 0) with ResNet-18)")
    return counts


class Backbone(nn.Module):
    """ResNet trunk with an optional per-modality stem and AGW-style non-local blocks.

    Args:
        depth: 18, 34 or 50 (ResNet).
        last_stride: stride of layer4 (1 for re-ID).
        pretrained: torchvision-named ImageNet checkpoint, loaded into each stem and the shared layers.
        two_stream: one stem per modality (AGW) instead of a shared one.
        non_local: per stage, how many of its last blocks are followed by a non-local block.
        non_local_width: inner width of the non-local blocks ("agw" = 1 channel, "half" = C/2, or an int).
        backbone: "resnet" (``depth``), an OSNet width ("osnet_x1_0", ..., "osnet_x0_25"), the plain CNN
            ("plain_w32") or a ViT ("vit_base", "vit_small", "vit_tiny", "vit_d32_l2_h2"); see
            :func:`vireid.models.backbones.build_trunk`.
        patch_size, patch_stride: a ViT's patch convolution (TransReID's 16 / 12: overlapping patches);
            unused by CNNs.
        frozen_blocks: EfficientNet-Lite0 only: keep the stem conv and its first N blocks fixed (no
            gradients, BN on running statistics; see ``EfficientNetLite.freeze``); 0 trains everything.

    ``forward(images, modality)`` -> the layer4 map; ``modality`` (B,) holds
    VISIBLE (0) / INFRARED (1) per sample and is required when two_stream.

    A ViT backbone: the stem is the patch embedding (one per modality when
    two_stream), the rest is the transformer; ``features`` returns its class
    token and the patch tokens as a (B, D, h, w) map, and ``forward`` the map,
    so pooling layers and map-based heads work on the patch tokens. Non-local
    blocks are refused (a ViT has no stages, and its attention is non-local).
    """

    def __init__(self, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = True, non_local=(0, 0, 0, 0), non_local_width: str | int = "agw",
                 backbone: str = "resnet", patch_size: int = 16, patch_stride: int = 12, frozen_blocks: int = 0):
        super().__init__()
        self.two_stream = bool(two_stream)
        self.is_vit = is_vit(backbone)
        extra = {"patch_size": patch_size, "patch_stride": patch_stride} if self.is_vit else {}
        stems = 2 if self.two_stream else 1
        self.stems = nn.ModuleList(build_trunk(backbone, depth, parts=("stem",), **extra) for _ in range(stems))
        self.layers = build_trunk(backbone, depth, parts=STAGES, last_stride=last_stride, **extra)
        weights = pretrained_path(pretrained, backbone, depth)
        if weights:
            for part in (*self.stems, self.layers):
                load_pretrained(part, weights)
        freeze_blocks((*self.stems, self.layers), frozen_blocks, backbone)
        if self.is_vit and any(tuple(non_local or ())):
            raise ValueError(f"non_local={list(non_local)} asks for non-local blocks between the stages of the ViT "
                             f"backbone {backbone!r}, which has none (and whose self-attention is non-local "
                             f"already): set model.non_local=[0, 0, 0, 0]")
        blocks = (0, 0, 0, 0) if self.is_vit else tuple(len(stage_blocks(self.layers.stage(s))) for s in STAGES)
        self.non_local_counts = _check_non_local(non_local, blocks)
        self.non_local = nn.ModuleDict()
        for i, (stage, n) in enumerate(zip(STAGES, self.non_local_counts)):
            if n:
                channels = self.layers.stage_channels[i]
                self.non_local[stage] = nn.ModuleList(NonLocal(channels, non_local_width) for _ in range(n))
        self.out_channels = self.layers.out_channels
        # a ViT's routed patch embeddings pass a module, so hooks (Grad-CAM) see the whole batch's map: the class
        # token does not depend on the final patch tokens (the last norm is per token), only on these
        self.patch_map = nn.Identity()

    def stem(self, images: torch.Tensor, modality: torch.Tensor | None) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not self.two_stream:
            return self.stems[0](images)
        if exporting():
            return self._stem_select(images, modality)
        if modality is None or modality.shape != images.shape[:1]:
            got = None if modality is None else tuple(modality.shape)
            raise ValueError(f"a two-stream backbone needs a per-sample modality tensor of shape "
                             f"({images.shape[0]},), got {got}")
        check_modalities(modality)
        parts, order = [], []
        for value, stem in zip((VISIBLE, INFRARED), self.stems):
            idx = (modality == value).nonzero(as_tuple=True)[0]
            if idx.numel():
                parts.append(stem(images[idx]))
                order.append(idx)
        x = torch.cat(parts)
        if len(parts) == 1:
            return x
        inverse = torch.empty(images.shape[0], dtype=torch.long, device=images.device)
        inverse[torch.cat(order)] = torch.arange(images.shape[0], device=images.device)
        return x[inverse]

    def _stem_select(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Export path: both stems on every image, then a per-sample choice (no data-dependent shapes).

        Same result per image as the routing above (eval-mode BN is per sample),
        at the cost of a second stem pass; ONNX and TorchScript graphs cannot
        hold the nonzero/gather routing with a dynamic batch.
        """
        if modality is None:
            raise ValueError("a two-stream backbone needs the modality input when exported")
        infrared = (modality == INFRARED).view(-1, 1, 1, 1)
        return torch.where(infrared, self.stems[1](images), self.stems[0](images))

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(images, modality)[1]

    def features(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        """(class token (B, D) of a ViT, None for a CNN; the last map (B, C, h, w): layer4 or the patch tokens)."""
        x = self.stem(images, modality)
        if self.is_vit:
            x = self.patch_map(x)
            return split_tokens(self.layers(x), tuple(x.shape[2:]))
        for stage in STAGES:
            layer = stage_blocks(self.layers.stage(stage))
            blocks = self.non_local[stage] if stage in self.non_local else ()
            first = len(layer) - len(blocks)  # non-local blocks follow the last len(blocks) blocks
            for i, block in enumerate(layer):
                x = block(x)
                if i >= first:
                    x = blocks[i - first](x)
        return None, x


def make_pool(kind: str, gem_p: float = 3.0, learnable: bool = False, gem_form: str = "clamp") -> nn.Module:
    """GeM (p=3 fixed by default; learnable for MBFVRD) or global average pooling, (B, C, h, w) -> (B, C).

    ``gem_form``: "clamp" (eps 1e-6 clamp) or "root_eps" (AGW's eps 1e-12 inside the root), see :class:`GeM`.
    """
    if kind == "gem":
        return GeM(gem_p, learnable=learnable, form=gem_form)
    if kind == "avg":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    raise ValueError(f"pool must be 'gem' or 'avg' (or, with a ViT backbone, 'cls'), got {kind!r}")


def init_classifier(layer: nn.Linear, std: float | None) -> nn.Linear:
    """AGW initialises its classifier with N(0, 0.001); None keeps PyTorch's default."""
    if std is not None:
        nn.init.normal_(layer.weight, 0.0, std)
    return layer


TEST_FEATURES = ("bn", "pooled")


@MODELS.register("baseline")
class ReIDNet(nn.Module):
    """Backbone + pooling + BN neck + bias-free classifier (AGW with the defaults of ``configs/agw_sysu.yaml``).

    Args:
        num_classes: training identities.
        depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone: see :class:`Backbone`.
        pool: "gem" or "avg" over the last map, or "cls": a ViT's class token (with a ViT, "gem"/"avg" pool its
            patch tokens as an h x w map); gem_p, gem_learnable: the GeM exponent (3, fixed in AGW);
            gem_form: "root_eps" is AGW's eps placement, "clamp" IDKL's (see :class:`~vireid.models.layers.GeM`).
        classifier_std: N(0, std) classifier init (AGW: 0.001; None = PyTorch default).
        test_feature: "bn" (AGW's "FC" feature) or "pooled".
        test_normalize: L2-normalise the test feature (AGW does).
        bn_neck_std: BN-neck weight initialised N(1, std) (AGW's code: 0.01); 0 = all ones.
        patch_size, patch_stride: a ViT backbone's patch convolution (unused by CNNs).
        frozen_blocks: see :class:`Backbone`.

    Train mode: ``forward(images, modality)`` -> {"map": layer4 map, "pooled": (B, D)
    for metric losses, "bn": BN-neck feature, "logits": (B, num_classes)}. Eval mode:
    the (B, D) test feature.

    Example::

        net = ReIDNet(num_classes=395, depth=50, non_local=(0, 2, 3, 0))
        out = net(images, modality)   # modality: (B,) tensor of 0 (visible) / 1 (infrared)
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = True, non_local=AGW_NON_LOCAL, non_local_width: str | int = "agw",
                 pool: str = "gem", gem_p: float = 3.0, gem_learnable: bool = False, gem_form: str = "clamp",
                 classifier_std: float | None = 0.001, test_feature: str = "bn", test_normalize: bool = True,
                 bn_neck_std: float = 0.0, backbone: str = "resnet", patch_size: int = 16, patch_stride: int = 12,
                 frozen_blocks: int = 0):
        super().__init__()
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"test_feature must be one of {TEST_FEATURES}, got {test_feature!r}")
        if pool == "cls" and not is_vit(backbone):
            raise ValueError(f"pool 'cls' is a ViT's class token; the {backbone!r} backbone has none (use gem or avg)")
        self.backbone = Backbone(depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone,
                                 patch_size, patch_stride, frozen_blocks)
        self.feature_dim = dim = self.backbone.out_channels
        self.pool = None if pool == "cls" else make_pool(pool, gem_p, gem_learnable, gem_form)
        self.bn_neck = BNNeck(dim)
        if not isinstance(bn_neck_std, (int, float)) or bn_neck_std < 0:
            raise ValueError(f"bn_neck_std must be a number >= 0, got {bn_neck_std!r}")
        if bn_neck_std:  # AGW's weights_init_kaiming: BN-neck weight N(1, 0.01) instead of 1
            nn.init.normal_(self.bn_neck.weight, 1.0, bn_neck_std)
        self.classifier = init_classifier(classifier(dim, num_classes), classifier_std)
        self.test_feature = test_feature
        self.test_normalize = test_normalize

    def head_parameters(self):
        """Parameters outside the backbone (AGW trains them at 10x the backbone's learning rate)."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        if self.backbone.is_vit:
            cls, x = self.backbone.features(images, modality)
        else:  # through the module call, so hooks (Grad-CAM) see the map as the backbone's output
            cls, x = None, self.backbone(images, modality)
        pooled = cls if self.pool is None else self.pool(x)
        bn = self.bn_neck(pooled)
        if not self.training:
            feat = bn if self.test_feature == "bn" else pooled
            return F.normalize(feat, dim=1) if self.test_normalize else feat
        return {"map": x, "pooled": pooled, "bn": bn, "logits": self.classifier(bn)}
