"""DAN's network (Fu et al., TCSVT 2022): the re-ID network plus a target classifier and a domain discriminator.

The recipe (:mod:`vireid.methods.dan`) owns the losses, the pseudo-label
refresh and the config mapping; this module only holds the ``nn.Module``.
Pseudo labels and reliable neighbours are buffers, so a checkpoint carries them.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.models.layers import ModalityHead, grad_reverse
from vireid.models.registry import MODELS
from vireid.models.reid_net import ReIDNet


@MODELS.register("dan")
class DANNet(nn.Module):
    """:class:`ReIDNet` + an N_t-way target classifier + a domain discriminator; pseudo labels as buffers.

    Train mode: ReIDNet's dict plus "target_logits" (B, N_t) and "domain" (B,)
    (discriminator logits behind gradient reversal). Eval mode: the test feature.
    """

    def __init__(self, num_classes: int, num_target: int, m: int, disc_hidden: int = 256,
                 disc_dropout: float = 0.5, grl_coef: float = 1.0, **model):
        super().__init__()
        self.net = ReIDNet(num_classes, **model)
        dim = self.net.feature_dim
        self.target_classifier = nn.Linear(dim, num_target, bias=False)
        nn.init.normal_(self.target_classifier.weight, std=0.001)
        self.discriminator = ModalityHead(dim, disc_hidden, disc_dropout, num_modalities=1)
        self.grl_coef = grl_coef
        self.register_buffer("pseudo_labels", torch.full((num_target,), -1, dtype=torch.long))
        self.register_buffer("neighbours", torch.zeros((num_target, m), dtype=torch.long))

    @property
    def has_labels(self) -> bool:
        return bool((self.pseudo_labels >= 0).all())

    def head_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("net.backbone.")]

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        out = self.net(images, modality)
        if not self.training:
            return out
        out["target_logits"] = self.target_classifier(out["bn"])
        out["domain"] = self.discriminator(grad_reverse(out["pooled"], self.grl_coef)).squeeze(1)
        return out
