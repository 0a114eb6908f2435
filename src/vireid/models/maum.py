"""MAUM's network: per-modality stems, a shared trunk, three classifiers and two FIFO proxy memories.

MAUM (Liu, Sun, Zhu, Pei, Yang, Li, "Learning Memory-Augmented Unidirectional
Metrics for Cross-modality Person Re-identification", CVPR 2022; survey seed
002, section 5):

* ResNet-50 whose first convolution block is one copy per modality (RGB, IR)
  and whose other blocks are shared -- :class:`vireid.models.reid_net.Backbone`
  with ``two_stream=True`` and no non-local blocks;
* global average pooling gives the embedding ``x`` (the survey: "GAP");
* three bias-free classifiers on ``x``: a shared one (all images), an RGB one
  that only ever sees RGB features and an IR one that only sees IR features.
  The rows of the modality-specific weight matrices are the MS-proxies;
* two memory banks: FIFO queues of past MS-proxy matrices, ``(S, C, D)`` per
  modality (S_RGB and S_IR may differ: the paper's handle on modality
  imbalance). They are buffers, so a checkpoint of the model holds them and a
  resumed run continues with the same banks.

vireid's readings where the survey is silent (see ``configs/maum_sysu.yaml``):
``neck: bn`` puts a BN neck (frozen bias) between the pooled feature and the
classifiers, so the proxies, the unidirectional metric and the test feature
all live in the BN feature space (``neck: none`` uses the pooled feature
itself); one memory slot holds the whole ``(C, D)`` proxy matrix of one
iteration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.records import INFRARED, VISIBLE
from .layers import BNNeck, classifier
from .registry import MODELS
from .reid_net import Backbone, init_classifier, make_pool

NECKS = ("bn", "none")


class ProxyMemory(nn.Module):
    """A FIFO queue of ``size`` proxy matrices ``(C, D)``, kept as buffers so checkpoints carry it.

    ``push(w)`` stores an L2-normalised, detached copy of ``w`` in the oldest
    slot; ``filled()`` returns the stored matrices ``(n, C, D)``, n = min(pushes, size),
    in slot order (the loss sums over all of them, so order does not matter).
    """

    def __init__(self, size: int, num_classes: int, dim: int):
        super().__init__()
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"memory size must be an integer >= 1, got {size!r}")
        self.size = size
        self.register_buffer("bank", torch.zeros(size, num_classes, dim))
        self.register_buffer("pushed", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, proxies: torch.Tensor) -> None:
        if proxies.shape != self.bank.shape[1:]:
            raise ValueError(f"proxy matrix must have shape {tuple(self.bank.shape[1:])}, got {tuple(proxies.shape)}")
        slot = int(self.pushed) % self.size
        self.bank[slot] = F.normalize(proxies.detach().to(self.bank.dtype), dim=1)
        self.pushed += 1

    def filled(self) -> torch.Tensor:
        return self.bank[: min(int(self.pushed), self.size)]

    def extra_repr(self) -> str:
        return f"size={self.size}, pushed={int(self.pushed)}"


@MODELS.register("maum")
class MAUMNet(nn.Module):
    """The MAUM network.

    Args:
        num_classes: training identities.
        depth, last_stride, pretrained, frozen_blocks: see :class:`vireid.models.reid_net.Backbone`
            (two-stream stem, shared layer1-4, no non-local blocks).
        pool: "avg" (the paper's GAP) or "gem".
        neck: "bn" (vireid's reading: a BN neck before the classifiers) or "none".
        classifier_std: N(0, std) classifier init (None = PyTorch default).
        memory_visible, memory_infrared: slots S_RGB, S_IR of the two proxy memories.
        test_normalize: L2-normalise the test feature.

    Train mode returns {"pooled": (B, D), "feat": the classifiers' input (B, D), "logits": shared (B, C),
    "logits_specific": (B, C), row i from the classifier of image i's own modality}. Eval mode: the shared
    feature ``feat`` (L2-normalised by default).
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 pool: str = "avg", neck: str = "bn", classifier_std: float | None = 0.001,
                 memory_visible: int = 10, memory_infrared: int = 10, test_normalize: bool = True,
                 backbone: str = "resnet", frozen_blocks: int = 0):
        super().__init__()
        if neck not in NECKS:
            raise ValueError(f"MAUM neck must be one of {NECKS}, got {neck!r}")
        self.backbone = Backbone(depth, last_stride, pretrained, two_stream=True, non_local=(0, 0, 0, 0),
                                 backbone=backbone, frozen_blocks=frozen_blocks)
        self.feature_dim = dim = self.backbone.out_channels
        self.pool = make_pool(pool)
        self.neck = BNNeck(dim) if neck == "bn" else nn.Identity()
        self.classifier = init_classifier(classifier(dim, num_classes), classifier_std)
        self.classifier_visible = init_classifier(classifier(dim, num_classes), classifier_std)
        self.classifier_infrared = init_classifier(classifier(dim, num_classes), classifier_std)
        self.memory_visible = ProxyMemory(memory_visible, num_classes, dim)
        self.memory_infrared = ProxyMemory(memory_infrared, num_classes, dim)
        self.test_normalize = test_normalize

    def head_parameters(self):
        """Parameters outside the backbone (neck and the three classifiers)."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    @torch.no_grad()
    def push_proxies(self) -> None:
        """Enqueue the current MS-proxies (detached, L2-normalised) into their modality's memory."""
        self.memory_visible.push(self.classifier_visible.weight)
        self.memory_infrared.push(self.classifier_infrared.weight)

    def memory(self, modality: int) -> torch.Tensor:
        """The stored proxies ``(n, C, D)`` of ``modality`` (VISIBLE or INFRARED)."""
        if modality == VISIBLE:
            return self.memory_visible.filled()
        if modality == INFRARED:
            return self.memory_infrared.filled()
        raise ValueError(f"modality must be {VISIBLE} (visible) or {INFRARED} (infrared), got {modality!r}")

    def forward(self, images: torch.Tensor, modality: torch.Tensor):
        pooled = self.pool(self.backbone(images, modality))
        feat = self.neck(pooled)
        if not self.training:
            return F.normalize(feat, dim=1) if self.test_normalize else feat
        # Both specific classifiers run on every row and torch.where keeps each row's own modality, so the
        # RGB classifier's gradient comes from RGB rows only (and both are used in every step, as DDP wants).
        own = (modality == VISIBLE)[:, None]
        specific = torch.where(own, self.classifier_visible(feat), self.classifier_infrared(feat))
        return {"pooled": pooled, "feat": feat, "logits": self.classifier(feat), "logits_specific": specific}
