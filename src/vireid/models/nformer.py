"""NFormer (Wang et al., "NFormer: Robust Person Re-identification with Neighbor Transformer", CVPR 2022).

Two parts, trained one after the other (see :mod:`vireid.methods.nformer`):

* the feature extractor (stage 1): a backbone, global average pooling, a
  linear reduction to ``dim`` = 256, a BN neck (frozen bias) and a bias-free
  classifier -- the "bag of tricks" baseline the released code builds on;
* the neighbour transformer (stage 2): ``blocks`` = 4 post-LayerNorm blocks of
  ``heads`` = 2 heads over a sequence of N features, then its own BN neck and
  classifier. Each block's attention is Landmark Agent Attention (LAA) with
  Reciprocal Neighbour Softmax (RNS), as pure functions below:

      q~ = q k_l^T  (N, l),   k~ = k q_l^T  (N, l)             l landmarks drawn from the sequence (LAA)
      A~_ij = q~_i . k~_j / sqrt(d_h)                          low-rank affinity, O(N^2 l) instead of O(N^2 d)
      M^k_ij = [j in topk_k(A~_i,:)],   M = M^k o (M^k)^T       reciprocal top-k neighbours (RNS)
      RNS(A~)_ij = M_ij exp(A~_ij) / sum_t M_it exp(A~_it),   out_i = sum_j RNS(A~)_ij v_j

  The survey (seed 002) prints exp(-A~) in RNS; that would weight the least
  similar of the top-k neighbours most, so vireid follows the paper and the
  released code (a softmax of +A~). vireid's additions where both are silent:
  an image is always its own neighbour (M_ii = 1), so a row without any
  reciprocal neighbour still has a defined softmax; and at test time the
  landmarks are drawn from a fixed-seed generator, so an evaluation repeats
  exactly. The released code takes the top-k from the input features' x x^T
  once for all blocks and does not make it reciprocal; vireid follows the
  paper (top-k of each block's A~, reciprocal).

Only the k (of N) entries of a row can be non-zero, so :func:`rns_aggregate`
computes A~ in row chunks, keeps each row's top-k and never holds an N x N
matrix: a whole test set (SYSU-MM01 all-search: 4104 features; Market-1501:
19281) passes through at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BNNeck, classifier
from .registry import MODELS
from .reid_net import Backbone, init_classifier, make_pool

# ----------------------------------------------------------------------------------------- LAA and RNS


def landmark_features(q: torch.Tensor, k: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LAA's l-dimensional codes: q (..., N, d), k (..., N, d), landmarks (l,) row indices -> q~, k~ (..., N, l).

    q~ = q k_l^T and k~ = k q_l^T, where q_l, k_l are the landmarks' rows of q and k, so
    q~_i . k~_j = (q_i k_l^T)(q_l k_j^T) approximates the N x N product through the l landmark agents.
    """
    if q.shape != k.shape or q.dim() < 2:
        raise ValueError(f"landmark_features needs q and k of one shape (..., N, d), got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    return q @ k[..., landmarks, :].transpose(-1, -2), k @ q[..., landmarks, :].transpose(-1, -2)


def landmark_affinity(q: torch.Tensor, k: torch.Tensor, landmarks: torch.Tensor, scale: float) -> torch.Tensor:
    """The dense A~ = q~ k~^T * scale, (..., N, N) (tests and small N; :func:`rns_aggregate` avoids it)."""
    q_t, k_t = landmark_features(q, k, landmarks)
    return q_t @ k_t.transpose(-1, -2) * scale


def reciprocal_mask(affinity: torch.Tensor, k: int) -> torch.Tensor:
    """M = M^k o (M^k)^T with M_ii = 1: bool (..., N, N) from affinity (..., N, N).

    M^k_ij = 1 when j is among the k largest entries of row i (ties: torch.topk's choice); i and j are
    reciprocal neighbours when each is in the other's top k. The diagonal is always kept (vireid's choice,
    see the module docstring).
    """
    n = affinity.shape[-1]
    top = torch.zeros(affinity.shape, dtype=torch.bool, device=affinity.device)
    top.scatter_(-1, affinity.topk(min(k, n), dim=-1).indices, True)
    eye = torch.eye(n, dtype=torch.bool, device=affinity.device)
    return (top & top.transpose(-1, -2)) | eye


def reciprocal_neighbour_softmax(affinity: torch.Tensor, k: int) -> torch.Tensor:
    """RNS(A~)_ij = M_ij exp(A~_ij) / sum_t M_it exp(A~_it): the dense attention weights, (..., N, N)."""
    return affinity.masked_fill(~reciprocal_mask(affinity, k), float("-inf")).softmax(dim=-1)


def rns_aggregate(q_t: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, k: int, scale: float,
                  chunk: int = 4096) -> torch.Tensor:
    """out = RNS(q~ k~^T * scale) v without an N x N matrix: q_t, k_t (B, N, l), v (B, N, d) -> (B, N, d).

    Equal (values and gradients) to ``reciprocal_neighbour_softmax(landmark affinity, k) @ v``: only a
    row's top-k entries can be reciprocal, so each row keeps its top-k affinities (computed ``chunk`` rows at
    a time), checks which of them list the row in their own top-k, adds the row itself when its top-k
    lacks it, and takes the masked softmax over those k + 1 entries.
    """
    if q_t.dim() != 3 or k_t.shape != q_t.shape or v.shape[:2] != q_t.shape[:2]:
        raise ValueError(f"rns_aggregate needs q~, k~ (B, N, l) and v (B, N, d), got {tuple(q_t.shape)}, "
                         f"{tuple(k_t.shape)} and {tuple(v.shape)}")
    b, n, _ = q_t.shape
    k = min(k, n)
    values, index = [], []
    for start in range(0, n, chunk):
        rows = (q_t[:, start:start + chunk] @ k_t.transpose(1, 2)) * scale  # (B, c, N)
        top = rows.topk(k, dim=-1)
        values.append(top.values)
        index.append(top.indices)
    values, index = torch.cat(values, 1), torch.cat(index, 1)  # (B, N, k)
    rows = torch.arange(n, device=q_t.device).view(1, n, 1)
    their_top = index.gather(1, index.reshape(b, n * k, 1).expand(-1, -1, k)).reshape(b, n, k, k)
    reciprocal = (their_top == rows.unsqueeze(-1)).any(-1)  # (B, N, k): row i is in the top-k of j
    has_self = (index == rows).any(-1, keepdim=True)  # (B, N, 1)
    self_value = (q_t * k_t).sum(-1, keepdim=True) * scale
    values = torch.cat([values, self_value], -1)
    index = torch.cat([index, rows.expand(b, n, 1)], -1)
    keep = torch.cat([reciprocal, ~has_self], -1)
    weights = values.masked_fill(~keep, float("-inf")).softmax(dim=-1)  # (B, N, k + 1)
    neighbours = v.gather(1, index.reshape(b, n * (k + 1), 1).expand(-1, -1, v.shape[-1]))
    return (weights.unsqueeze(-1) * neighbours.reshape(b, n, k + 1, -1)).sum(2)


def draw_landmarks(n: int, count: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(count, n)`` distinct row indices drawn uniformly (from ``generator``, else the global RNG)."""
    return torch.randperm(n, generator=generator)[:min(count, n)].to(device)


# ----------------------------------------------------------------------------------------- the transformer


def _init_linear(layer: nn.Linear) -> nn.Linear:
    """N(0, 0.02) weights and zero bias, the released code's ``Conv1D`` initialisation."""
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class NFormerBlock(nn.Module):
    """One block: n = LN(x + Drop(Proj(LAA-RNS attention(x)))), out = LN(n + Drop(MLP(n))) (post-LN, GELU MLP 4x)."""

    def __init__(self, dim: int = 256, heads: int = 2, landmarks: int = 5, topk: int = 20, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the NFormer width {dim} must be divisible by its number of heads {heads}")
        self.heads, self.landmarks, self.topk = heads, landmarks, topk
        self.qkv = _init_linear(nn.Linear(dim, 3 * dim))
        self.proj = _init_linear(nn.Linear(dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(_init_linear(nn.Linear(dim, 4 * dim)), nn.GELU(approximate="tanh"),
                                 _init_linear(nn.Linear(4 * dim, dim)))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        s, n, d = x.shape
        h = self.heads
        q, k, v = (t.reshape(s, n, h, d // h).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))  # (S,H,N,dh)
        landmarks = draw_landmarks(n, self.landmarks, x.device, generator)  # shared by the heads, as the code
        q_t, k_t = landmark_features(q, k, landmarks)
        out = rns_aggregate(q_t.reshape(s * h, n, -1), k_t.reshape(s * h, n, -1), v.reshape(s * h, n, -1),
                            self.topk, (d // h) ** -0.5)
        return self.drop(self.proj(out.reshape(s, h, n, -1).transpose(1, 2).reshape(s, n, d)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = self.norm1(x + self.attention(x, generator))
        return self.norm2(n + self.drop(self.mlp(n)))


class NeighbourTransformer(nn.Module):
    """``blocks`` NFormer blocks over sequences of features: (S, N, dim) -> (S, N, dim).

    In training the landmarks come from the global RNG (a checkpoint saves its state, so a resumed run
    draws the same ones); in eval mode from a generator seeded with ``eval_seed`` at every call.
    """

    def __init__(self, dim: int = 256, heads: int = 2, blocks: int = 4, landmarks: int = 5, topk: int = 20,
                 dropout: float = 0.1, eval_seed: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(NFormerBlock(dim, heads, landmarks, topk, dropout) for _ in range(blocks))
        self.eval_seed = eval_seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"the neighbour transformer takes sequences of features (S, N, D), got "
                             f"{tuple(x.shape)}")
        generator = None if self.training else torch.Generator().manual_seed(self.eval_seed)
        for block in self.blocks:
            x = block(x, generator)
        return x


@MODELS.register("nformer")
class NFormerNet(nn.Module):
    """Feature extractor + neighbour transformer (see the module docstring).

    Args:
        num_classes: training identities.
        depth, last_stride, pretrained, two_stream, backbone: the backbone (:class:`~vireid.models.reid_net.Backbone`).
        pool: "avg" (the paper's GAP) or "gem".
        dim: the reduced feature width (256).
        classifier_std: N(0, std) init of both bias-free classifiers (the code's 0.001).
        heads, blocks, landmarks, topk, dropout: the transformer (2, 4, 5, 20, 0.1).
        test_normalize: L2-normalise the extractor's test feature.

    ``forward(images, modality)``: train mode {"pooled": reduced pre-BN (B, dim), "bn", "logits"}; eval mode the
    (B, dim) BN-neck test feature. ``forward(features, stage="nformer")`` on (S, N, dim): train mode {"feat":
    the transformer's output (S, N, dim), "bn", "logits" (S, N, C)}; eval mode the BN-neck output (S, N, dim).
    Buffers: ``centres`` and ``nformer_centres`` (the two centre losses' class centres, moved by their own
    SGD rule) and ``nformer_steps`` (stage-2 steps trained so far).
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = False, backbone: str = "resnet", pool: str = "avg", dim: int = 256,
                 classifier_std: float | None = 0.001, heads: int = 2, blocks: int = 4, landmarks: int = 5,
                 topk: int = 20, dropout: float = 0.1, test_normalize: bool = True, frozen_blocks: int = 0):
        super().__init__()
        self.backbone = Backbone(depth, last_stride, pretrained, two_stream, (0, 0, 0, 0), "agw", backbone,
                                 frozen_blocks=frozen_blocks)
        self.pool = make_pool(pool)
        self.reduce = nn.Linear(self.backbone.out_channels, dim)
        self.neck = BNNeck(dim)
        self.classifier = init_classifier(classifier(dim, num_classes), classifier_std)
        self.nformer = NeighbourTransformer(dim, heads, blocks, landmarks, topk, dropout)
        self.nformer_neck = BNNeck(dim)
        self.nformer_classifier = init_classifier(classifier(dim, num_classes), classifier_std)
        self.register_buffer("centres", torch.randn(num_classes, dim))  # the code's CenterLoss: randn init
        self.register_buffer("nformer_centres", torch.randn(num_classes, dim))
        self.register_buffer("nformer_steps", torch.zeros((), dtype=torch.long))
        self.feature_dim = dim
        self.test_normalize = test_normalize

    def is_stage2(self, name: str) -> bool:
        return name.startswith("nformer")

    def stage1_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not self.is_stage2(name)]

    def stage2_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if self.is_stage2(name)]

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None, stage: str = "encoder"):
        if stage == "nformer":
            return self.neighbours(x)
        if stage != "encoder":
            raise ValueError(f"stage must be 'encoder' or 'nformer', got {stage!r}")
        pooled = self.reduce(self.pool(self.backbone(x, modality)))
        bn = self.neck(pooled)
        if not self.training:
            return F.normalize(bn, dim=1) if self.test_normalize else bn
        return {"pooled": pooled, "bn": bn, "logits": self.classifier(bn)}

    def bn_feature(self, images: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        """The extractor's BN-neck feature, never normalised (what the code feeds the NFormer in training)."""
        return self.neck(self.reduce(self.pool(self.backbone(images, modality))))

    def neighbours(self, features: torch.Tensor):
        out = self.nformer(features)
        s, n, d = out.shape
        bn = self.nformer_neck(out.reshape(s * n, d))
        if not self.training:
            return bn.reshape(s, n, d)
        return {"feat": out, "bn": bn.reshape(s, n, d), "logits": self.nformer_classifier(bn).reshape(s, n, -1)}
