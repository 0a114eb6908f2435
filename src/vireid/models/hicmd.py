"""Hi-CMD's network: ID-PIG (per-modality encoders, an AdaIN decoder, multi-scale discriminators) and HFL.

Hi-CMD (Choi, Lee, Kim, Kim, Kim, "Hi-CMD: Hierarchical Cross-Modality
Disentanglement for Visible-Infrared Person Re-Identification", CVPR 2020;
survey seed 002, section 9). Where the survey is silent vireid follows the
released code (bismex/HiCMD), read for its structure and numbers only:

* per modality (visible, infrared) a *prototype encoder* E^p (7x7 conv, two
  stride-2 4x4 convs, residual blocks with instance norm: a spatial code p,
  ID-discriminative body shape) and an *attribute encoder* E^a (an ImageNet
  CNN trunk, global average pooled: a vector a);
* the attribute code is split by index into style a^s (ID-discriminative),
  illumination a^c and pose a^p (ID-excluded), interleaved per decoder block
  as the released code does (:func:`attribute_indices`), so every AdaIN block
  sees all three kinds;
* one *decoder* G shared by both modalities: residual blocks whose adaptive
  instance norms take their scale and shift from an MLP of their own chunk of
  a, then nearest-neighbour upsampling convolutions back to the image (no
  tanh: images stay in the loader's normalised range, as the released code);
* per modality a *multi-scale discriminator* (LSGAN outputs, one map per scale);
* HFL: the ID feature joins an ID trunk on the prototype code (ResNet layer3,
  the released code's 1024-d ``backbone_pro``) and the style code, each
  L2-normalised and weighted by a learnt w / (1 - w), then a bottleneck
  (test feature), a classifier (CE) and a projection for the triplet loss.

vireid's simplifications (each a documented difference, see
``configs/hicmd_sysu.yaml`` and docs/recipes.md): no ASPP in the prototype
encoder, plain strided convolutions with zero padding in the discriminators,
one MLP per decoder block producing both of its AdaINs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.records import INFRARED, VISIBLE
from .backbones import build_trunk, load_pretrained
from .backbones.weights import pretrained_path
from .registry import MODELS

LRELU = 0.3  # the leaky-ReLU slope of every generator and discriminator layer (released code: w_lrelu 0.3)


def attribute_indices(dim: int, chunks: int, style_ratio: float = 0.5,
                      pose_ratio: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(style, pose, illumination) column indices of a (B, ``dim``) attribute code.

    The code is cut into ``chunks`` equal pieces (one per AdaIN block); in each
    piece the first ``round(style_ratio * piece)`` columns are style, and of the
    rest the first ``round(pose_ratio * rest)`` pose, the remainder
    illumination -- the released code's layout (``att_style_ratio``,
    ``att_pose_ratio`` 0.5). Every part must be non-empty.
    """
    if dim % chunks:
        raise ValueError(f"the attribute code ({dim} values) must split into {chunks} equal chunks, one per "
                         f"decoder block (model.att_dim / model.gen_res)")
    piece = dim // chunks
    n_style = round(piece * style_ratio)
    n_pose = round((piece - n_style) * pose_ratio)
    if not 0 < n_style < piece or not 0 < n_pose < piece - n_style:
        raise ValueError(f"an attribute chunk of {piece} values leaves no room for style ({n_style}), pose "
                         f"({n_pose}) and illumination ({piece - n_style - n_pose}); raise model.att_dim")
    style, pose, illum = [], [], []
    for c in range(chunks):
        start = c * piece
        style += range(start, start + n_style)
        pose += range(start + n_style, start + n_style + n_pose)
        illum += range(start + n_style + n_pose, start + piece)
    return torch.tensor(style), torch.tensor(pose), torch.tensor(illum)


def mix_codes(base: torch.Tensor, other: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``base`` (B, D) with the given columns taken from ``other`` (B, D): how codes are swapped.

    E.g. G(p_2, a_2^s, a_1^ex) decodes p_2 with ``mix_codes(a_1, a_2, style)``.
    """
    if base.shape != other.shape:
        raise ValueError(f"codes to mix must have equal shapes, got {tuple(base.shape)} and {tuple(other.shape)}")
    out = base.clone()
    out[:, columns] = other[:, columns]
    return out


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance norm: gamma * (x - mean) / std + beta, statistics per sample and channel.

    x (B, C, H, W); gamma, beta (B, C) from the attribute code.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return gamma[:, :, None, None] * (x - mean) / torch.sqrt(var + eps) + beta[:, :, None, None]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding_mode: str = "reflect") -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2 if kernel % 2 else 1,
                     padding_mode=padding_mode)


class ResBlock(nn.Module):
    """Two 3x3 convs with instance norm and a skip (the prototype encoder's residual blocks)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), nn.InstanceNorm2d(channels), nn.LeakyReLU(LRELU),
                                  _conv(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PrototypeEncoder(nn.Module):
    """E^p: image (B, 3, H, W) -> prototype code (B, dim * 2^down, H / 2^down, W / 2^down)."""

    def __init__(self, dim: int = 32, down: int = 2, res: int = 4):
        super().__init__()
        layers = [_conv(3, dim, 7), nn.InstanceNorm2d(dim), nn.LeakyReLU(LRELU)]
        for _ in range(down):
            layers += [_conv(dim, 2 * dim, 4, 2), nn.InstanceNorm2d(2 * dim), nn.LeakyReLU(LRELU)]
            dim *= 2
        layers += [ResBlock(dim) for _ in range(res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttributeEncoder(nn.Module):
    """E^a: image -> attribute code (B, D): a CNN trunk, global average pooling, an optional linear map to D."""

    def __init__(self, backbone: str = "resnet", depth: int = 50, att_dim: int = 0):
        super().__init__()
        self.trunk = build_trunk(backbone, depth)
        width = self.trunk.out_channels
        self.proj = nn.Linear(width, att_dim) if att_dim else None
        self.out_dim = att_dim or width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.trunk(x).mean(dim=(2, 3))
        return self.proj(code) if self.proj is not None else code


class AdaINBlock(nn.Module):
    """conv-AdaIN-lrelu-conv-AdaIN + skip; its 4C AdaIN parameters come from an MLP of its attribute chunk."""

    def __init__(self, channels: int, code_dim: int, mlp_dim: int, mlp_layers: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(channels, channels, 3), _conv(channels, channels, 3)
        layers, width = [], code_dim
        for _ in range(mlp_layers - 1):
            layers += [nn.Linear(width, mlp_dim), nn.LeakyReLU(LRELU)]
            width = mlp_dim
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 4 * channels))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        g1, b1, g2, b2 = self.mlp(code).chunk(4, dim=1)
        h = F.leaky_relu(adain(self.conv1(x), 1 + g1, b1), LRELU)  # 1 + g: the identity map at a zero code
        return x + adain(self.conv2(h), 1 + g2, b2)


class Decoder(nn.Module):
    """G: prototype code (B, C, h, w) and attribute code (B, D) -> image (B, 3, h * 2^up, w * 2^up)."""

    def __init__(self, channels: int, code_dim: int, up: int = 2, res: int = 4, mlp_dim: int = 512,
                 mlp_layers: int = 3):
        super().__init__()
        self.chunks = res
        self.blocks = nn.ModuleList([AdaINBlock(channels, code_dim // res, mlp_dim, mlp_layers) for _ in range(res)])
        layers = []
        for _ in range(up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(channels, channels // 2, 5),
                       nn.GroupNorm(1, channels // 2), nn.LeakyReLU(LRELU)]  # GroupNorm(1): layer norm
            channels //= 2
        layers.append(_conv(channels, 3, 7))
        self.up = nn.Sequential(*layers)

    def forward(self, prototype: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        x = prototype
        for block, chunk in zip(self.blocks, code.chunk(self.chunks, dim=1)):
            x = block(x, chunk)
        return self.up(x)


class MultiScaleDiscriminator(nn.Module):
    """D: image -> one (B, 1, h_k, w_k) LSGAN output map per scale; scale k sees the image pooled k times."""

    def __init__(self, dim: int = 32, layers: int = 2, scales: int = 3):
        super().__init__()
        self.nets = nn.ModuleList()
        for _ in range(scales):
            convs, width = [], 3
            for i in range(layers):
                convs += [_conv(width, dim * 2 ** i, 4, 2, padding_mode="zeros"), nn.LeakyReLU(LRELU)]
                width = dim * 2 ** i
            self.nets.append(nn.Sequential(*convs, nn.Conv2d(width, 1, 1)))
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for k, net in enumerate(self.nets):
            if k:
                x = self.pool(x)
            outputs.append(net(x))
        return outputs


class IDHead(nn.Module):
    """HFL: ID trunk on the prototype code + style code -> bottleneck (test feature), logits, triplet feature."""

    def __init__(self, num_classes: int, proto_channels: int, style_dim: int, backbone: str = "resnet",
                 depth: int = 50, layers: tuple[str, ...] = ("layer3",), fc1: int = 2048, fc2: int = 1024,
                 dropout: float = 0.5):
        super().__init__()
        self.trunk = build_trunk(backbone, depth, parts=tuple(layers))
        first = ("layer1", "layer2", "layer3", "layer4").index(layers[0])
        cin = self.trunk.stage_channels[first - 1] if first else 64 if backbone == "resnet" else None
        if cin is None:
            raise ValueError("model.id_layers must start at layer2 or later for a non-ResNet backbone")
        self.adapt = nn.Sequential(nn.Conv2d(proto_channels, cin, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU())
        self.weight = nn.Parameter(torch.tensor(0.5))  # w: prototype vs style share of the ID feature
        self.bottleneck = nn.Sequential(nn.Linear(self.trunk.out_channels + style_dim, fc1), nn.BatchNorm1d(fc1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fc1, num_classes)
        self.triplet = nn.Linear(fc1, fc2)

    def forward(self, prototype: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
        proto = self.trunk(self.adapt(prototype)).mean(dim=(2, 3))
        w = self.weight
        joint = torch.cat([F.normalize(proto, dim=1) * w.clamp(max=1.0),
                           F.normalize(style, dim=1) * (1.0 - w).clamp(min=0.0)], dim=1)
        feat = self.bottleneck(joint)
        return {"feat": feat, "logits": self.classifier(self.dropout(feat)), "triplet": self.triplet(feat)}


@MODELS.register("hicmd")
class HiCMDNet(nn.Module):
    """The whole Hi-CMD model; ``forward(images, modality)`` is the test path (ID feature in ``feat``).

    Parts by optimiser: :meth:`generator_parameters` (both modalities' encoders
    and the decoder), :meth:`discriminator_parameters`, :meth:`id_parameters`.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet", depth: int = 50, pretrained: str | None = None,
                 gen_dim: int = 32, gen_down: int = 2, gen_res: int = 4, mlp_dim: int = 512, mlp_layers: int = 3,
                 att_dim: int = 0, style_ratio: float = 0.5, pose_ratio: float = 0.5, dis_dim: int = 32,
                 dis_layers: int = 2, dis_scales: int = 3, id_layers: tuple[str, ...] = ("layer3",),
                 fc1: int = 2048, fc2: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.prototype = nn.ModuleList([PrototypeEncoder(gen_dim, gen_down, gen_res) for _ in range(2)])
        self.attribute = nn.ModuleList([AttributeEncoder(backbone, depth, att_dim) for _ in range(2)])
        channels, code_dim = self.prototype[0].out_channels, self.attribute[0].out_dim
        style, pose, illum = attribute_indices(code_dim, gen_res, style_ratio, pose_ratio)
        self.register_buffer("style_idx", style, persistent=False)
        self.register_buffer("pose_idx", pose, persistent=False)
        self.register_buffer("illum_idx", illum, persistent=False)
        self.register_buffer("ex_idx", torch.cat([pose, illum]).sort().values, persistent=False)
        self.decoder = Decoder(channels, code_dim, gen_down, gen_res, mlp_dim, mlp_layers)
        self.discriminator = nn.ModuleList([MultiScaleDiscriminator(dis_dim, dis_layers, dis_scales)
                                            for _ in range(2)])
        self.id_head = IDHead(num_classes, channels, len(style), backbone, depth, tuple(id_layers), fc1, fc2,
                              dropout)
        weights = pretrained_path(pretrained, backbone, depth)
        if weights:
            for trunk in (self.attribute[VISIBLE].trunk, self.attribute[INFRARED].trunk, self.id_head.trunk):
                load_pretrained(trunk, weights)

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.prototype.parameters(), *self.attribute.parameters(), *self.decoder.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def id_parameters(self) -> list[nn.Parameter]:
        return list(self.id_head.parameters())

    def encode(self, images: torch.Tensor, modality: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prototype code, attribute code) of images that are all of ``modality`` (0 visible, 1 infrared)."""
        return self.prototype[modality](images), self.attribute[modality](images)

    def decode(self, prototype: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(prototype, code)

    def discriminate(self, images: torch.Tensor, modality: int) -> list[torch.Tensor]:
        return self.discriminator[modality](images)

    def identify(self, prototype: torch.Tensor, code: torch.Tensor) -> dict[str, torch.Tensor]:
        """HFL on codes: the style part of ``code`` joins the prototype (the ID-excluded part is dropped)."""
        return self.id_head(prototype, code[:, self.style_idx])

    def forward(self, images: torch.Tensor, modality: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each row through its own modality's encoders, then HFL: ``feat`` (B, fc1), ``logits``, ``triplet``."""
        out: dict[str, torch.Tensor] = {}
        for value in (VISIBLE, INFRARED):
            rows = (modality == value).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            part = self.identify(*self.encode(images[rows], value))
            for key, value_out in part.items():
                if key not in out:
                    out[key] = value_out.new_zeros((images.shape[0], *value_out.shape[1:]))
                out[key] = out[key].index_copy(0, rows, value_out)
        return out
