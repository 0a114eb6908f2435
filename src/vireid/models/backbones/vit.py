"""Vision Transformer (Dosovitskiy et al., ICLR 2021) on overlapping patches, timm-compatible names.

Why: transformer re-ID methods (TransReID, CMTR, PMT) start from an ImageNet
ViT whose patches overlap (a 16x16 convolution with stride 12 instead of 16:
211 instead of 128 tokens at 256x128, neighbouring patches share pixels). The
published ImageNet weights are timm's, so the parameter names are timm's
(``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.norm1``,
``blocks.N.attn.qkv``/``proj``, ``blocks.N.norm2``, ``blocks.N.mlp.fc1``/``fc2``,
``norm``) and such a file loads through ``model.pretrained`` without timm.

Layout: patch embedding (conv, kernel = patch size, stride <= patch size),
a class token, learned position embeddings, pre-norm blocks
(x + MHSA(LN(x)), then x + MLP(LN(x)) with GELU; LayerNorm eps 1e-6 as timm),
a final LayerNorm. The position embeddings belong to a grid (the one of
``img_size``); an input with another grid gets them bicubically resized over
the 2-D grid (class position kept), and a checkpoint's ``pos_embed`` is resized
to this model's grid when it is loaded (:meth:`VisionTransformer.adapt_pretrained`).

Names (:func:`vit_config`): ``vit_base`` (768 wide, 12 blocks, 12 heads;
TransReID's and CMTR's ViT-B/16), ``vit_small`` (384/12/6), ``vit_tiny``
(192/12/3) and ``vit_d<dim>_l<depth>_h<heads>`` for any other size (tests use
``vit_d32_l2_h2``). Patch size and stride are settings of their own
(``model.patch_size``, ``model.patch_stride``).

Split points: the re-ID models build a trunk from ``parts`` (see
:mod:`vireid.models.backbones`). A ViT has two: "stem" is the patch embedding
(image -> (B, D, h, w) map, so a two-stream model gets one per modality) and
"layer1".."layer4" together are the transformer (class token, position
embeddings, blocks, final norm: map -> (B, 1 + h*w, D) tokens). Other
splits (IDKL's shared layer1-2 / branched layer3-4) are refused with a clear
error: a ViT has no stages to cut there.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_backbone
from .weights import require_vit_weights

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")
BODY = PARTS[1:]
SIZES = {"vit_base": (768, 12, 12), "vit_small": (384, 12, 6), "vit_tiny": (192, 12, 3)}
CUSTOM = re.compile(r"^vit_d(\d+)_l(\d+)_h(\d+)$")
PREFIX = "vit_"
# timm parameters vireid never builds: the ImageNet head and the pooled-feature norm of some variants.
HEAD_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pre_logits.")
LN_EPS = 1e-6  # timm's ViT LayerNorm eps; the pretrained statistics assume it


def is_vit(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def vit_config(name: str) -> tuple[int, int, int]:
    """(dim, depth, heads) of a ViT backbone name, or a ValueError listing the names that exist."""
    if name in SIZES:
        return SIZES[name]
    match = CUSTOM.match(name)
    if match:
        dim, depth, heads = (int(g) for g in match.groups())
        if dim < 1 or depth < 1 or heads < 1 or dim % heads:
            raise ValueError(f"ViT backbone {name!r}: width {dim} must be a positive multiple of the {heads} heads "
                             f"and depth >= 1")
        return dim, depth, heads
    raise ValueError(f"unknown ViT backbone {name!r}; expected one of {', '.join(SIZES)} or "
                     f"vit_d<dim>_l<depth>_h<heads> (e.g. vit_d32_l2_h2)")


def grid_size(height: int, width: int, patch: int, stride: int) -> tuple[int, int]:
    """Patches per column and row of a (height, width) image: floor((H - P) / S) + 1 (a conv without padding)."""
    if height < patch or width < patch:
        raise ValueError(f"a {height}x{width} input is smaller than one {patch}x{patch} patch")
    return (height - patch) // stride + 1, (width - patch) // stride + 1


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_prefix: int = 1) -> torch.Tensor:
    """(1, prefix + gh*gw, D) position embeddings on ``old_grid`` -> the same on ``new_grid``.

    The first ``num_prefix`` positions (the class token's) are kept as they
    are; the grid positions are resized bicubically as a 2-D image (corners not
    aligned), the way transformer re-ID codes adapt ImageNet 14x14 grids to
    pedestrian crops. Returns ``pos`` itself when the grids agree.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    if pos.dim() != 3 or pos.shape[1] != num_prefix + old_grid[0] * old_grid[1]:
        raise ValueError(f"pos_embed of shape {tuple(pos.shape)} does not hold {num_prefix} prefix + "
                         f"{old_grid[0]}x{old_grid[1]} grid positions")
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    dim = pos.shape[2]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False).to(pos.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid], dim=1)


def checkpoint_grid(positions: int, model_grid: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """(grid, prefix positions) of a checkpoint's pos_embed of ``positions`` rows.

    Recognised: this model's own grid (a re-ID checkpoint of the same
    geometry) and square grids (ImageNet: 14x14 at 224/16), each with one
    class position or none (timm's ``no_embed_class`` variants). Anything else
    is ambiguous (a non-square grid of other size) and raises.
    """
    for prefix in (1, 0):
        n = positions - prefix
        if n == model_grid[0] * model_grid[1]:
            return tuple(model_grid), prefix
        side = math.isqrt(max(n, 0))
        if n > 0 and side * side == n:
            return (side, side), prefix
    raise ValueError(f"cannot tell the grid of a checkpoint pos_embed with {positions} positions (neither "
                     f"this model's {model_grid[0]}x{model_grid[1]} grid nor a square one, with or without a "
                     f"class position)")


class PatchEmbed(nn.Module):
    """Image -> (B, D, h, w) map of patch embeddings (a conv, kernel = patch, stride <= patch)."""

    def __init__(self, dim: int, patch: int, stride: int, in_chans: int = 3):
        super().__init__()
        self.patch, self.stride = patch, stride
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        grid_size(images.shape[2], images.shape[3], self.patch, self.stride)  # a clear error when too small
        return self.proj(images)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's layout: q, k, v stacked in qkv)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v, per head
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch for a random ``rate`` of the samples, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class VisionTransformer(nn.Module):
    """A ViT trunk, or its "stem" (patch embedding) or body (the rest); see the module docstring.

    Args:
        dim, depth, heads: width, number of blocks, attention heads.
        patch_size, patch_stride: the patch convolution (stride < patch size: overlapping patches).
        img_size: (H, W) whose grid the position embeddings are stored on (other inputs resize them).
        parts: PARTS (all), ("stem",) or ("layer1", ..., "layer4").
        drop_path: stochastic-depth rate of the last block (linearly from 0 at the first, as timm).
        last_stride: accepted for symmetry with the ResNet; ignored (a ViT has no strided stage).

    ``forward(x, token_bias=None)``: images (or, for the body, the stem's
    map) -> the stem's (B, D, h, w) map, or (B, 1 + h*w, D) tokens after the
    final norm (token 0 = class token). ``token_bias`` (B, D), if given, is
    added to every token after the position embeddings (CMTR's modality
    embedding).
    """

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, patch_size: int = 16,
                 patch_stride: int = 12, img_size: tuple[int, int] = (256, 128), parts: tuple[str, ...] = PARTS,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0, last_stride: int = 1):
        super().__init__()
        for key, value in (("patch_size", patch_size), ("patch_stride", patch_stride)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ViT {key} must be an integer >= 1, got {value!r}")
        if patch_stride > patch_size:
            raise ValueError(f"ViT patch_stride ({patch_stride}) must not exceed patch_size ({patch_size}): "
                             f"pixels between patches would be skipped")
        if dim % heads:
            raise ValueError(f"ViT width {dim} is not divisible by its {heads} heads")
        parts = tuple(parts)
        if parts not in (PARTS, ("stem",), BODY):
            raise ValueError(f"a ViT splits only into its patch embedding ('stem') and the transformer "
                             f"({', '.join(BODY)} together), got parts {parts}; this method cuts the trunk "
                             f"between stages, which a ViT does not have")
        self.parts, self.dim, self.depth, self.heads = parts, dim, depth, heads
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.img_size = tuple(img_size)
        self.grid = grid_size(*self.img_size, patch_size, patch_stride)
        self.out_channels = dim
        self.stage_channels = (dim, dim, dim, dim)
        self.has_stem, self.has_body = "stem" in parts, "layer1" in parts
        if self.has_stem:
            self.patch_embed = PatchEmbed(dim, patch_size, patch_stride)
        if self.has_body:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
            rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
            self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias, r) for r in rates)
            self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT init: truncated N(0, 0.02) for linear layers and embeddings, zero biases, unit LayerNorms."""
        if self.has_body:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stage(self, part: str) -> nn.Module:
        raise ValueError(f"a ViT has no {part!r} stage to attach blocks to (e.g. non-local blocks); its "
                         f"transformer is one part")

    def unbuilt_prefixes(self) -> tuple[str, ...]:
        """Checkpoint keys of the parts this slice does not build (and timm's ImageNet head)."""
        if not self.has_body:
            return ("cls_token", "pos_embed", "blocks.", "norm.", "dist_token", "reg_token", *HEAD_PREFIXES)
        return (() if self.has_stem else ("patch_embed.",)) + HEAD_PREFIXES

    def adapt_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's tensors with ``pos_embed`` resized to this model's grid (called by ``load_pretrained``).

        A pos_embed without a class position (timm ``no_embed_class``) gets the
        class position from this model's own initialisation, so the shapes match.
        """
        if not self.has_body or "pos_embed" not in state:
            return state
        pos = state["pos_embed"]
        if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != self.dim:
            return state  # a different width: load_pretrained reports the shape mismatch
        old_grid, prefix = checkpoint_grid(pos.shape[1], self.grid)
        pos = resize_pos_embed(pos, old_grid, self.grid, num_prefix=prefix)
        if prefix == 0:
            pos = torch.cat([self.pos_embed.detach()[:, :1].to(pos.dtype), pos], dim=1)
        return {**state, "pos_embed": pos}

    def grid_of(self, height: int, width: int) -> tuple[int, int]:
        return grid_size(height, width, self.patch_size, self.patch_stride)

    def encode(self, patches: torch.Tensor, token_bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D, h, w) patch map -> (B, 1 + h*w, D) tokens after the blocks and the final norm."""
        b, d, h, w = patches.shape
        x = patches.flatten(2).transpose(1, 2)  # (B, h*w, D), row-major over the grid as timm
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.grid, (h, w))
        if token_bias is not None:
            if token_bias.shape != (b, d):
                raise ValueError(f"token_bias must have shape ({b}, {d}), got {tuple(token_bias.shape)}")
            x = x + token_bias[:, None, :]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor, token_bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.has_stem:
            x = self.patch_embed(x)
        if self.has_body:
            if x.dim() != 4 or x.shape[1] != self.dim:
                raise ValueError(f"the ViT body expects a (B, {self.dim}, h, w) patch map, got {tuple(x.shape)}")
            x = self.encode(x, token_bias)
        return x


def build_vit(name: str, patch_size: int = 16, patch_stride: int = 12, **kwargs) -> VisionTransformer:
    """A ViT (or slice) from its backbone name (``vit_base``, ``vit_small``, ``vit_tiny``, ``vit_dD_lL_hH``)."""
    dim, depth, heads = vit_config(name)
    return VisionTransformer(dim, depth, heads, patch_size=patch_size, patch_stride=patch_stride, **kwargs)


# Every "vit_" name goes to the ViT family, so a wrong size gets vit_config's error (which lists the sizes).
@register_backbone(*SIZES, "vit_d<dim>_l<depth>_h<heads>", pattern=PREFIX + ".*", require_weights=require_vit_weights,
                   imagenet={"vit_base": "vit_base_patch16_224.augreg_in21k"})
def vit_trunk(name: str, depth: int = 50, **kwargs) -> VisionTransformer:
    """``backbone: vit_base`` (and the other ViT names): the size is in the name; ``depth`` (a ResNet setting)
    is not used."""
    return build_vit(name, **kwargs)


def split_tokens(tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1 + h*w, D) tokens -> class token (B, D) and the patch tokens as a (B, D, h, w) map."""
    b, n, d = tokens.shape
    if n != 1 + grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not hold a class token and a {grid[0]}x{grid[1]} grid")
    return tokens[:, 0], tokens[:, 1:].transpose(1, 2).reshape(b, d, grid[0], grid[1])
