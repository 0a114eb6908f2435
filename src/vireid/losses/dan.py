"""DAN's loss terms and pseudo labels (Fu et al., TCSVT 2022; equation numbers of the paper).

* :func:`domain_adversarial_loss` -- eq. 3: the discriminator's log-loss with
  source = 1 and target = 0. Put behind gradient reversal
  (:func:`vireid.models.layers.grad_reverse`), minimising it trains the
  discriminator and maximises it for the feature extractor (eqs. 2, 4).
* :func:`modality_prototypes` / :func:`hard_pseudo_labels` -- eqs. 5-7: per
  source class a visible and an infrared mean feature; a target sample takes
  the class of its most cosine-similar prototype of its own modality.
* :func:`reliable_neighbours` / :func:`soft_label_loss` -- eqs. 8-9: target
  sample i is class i; its m most cosine-similar other target samples are its
  reliable set; the target distribution is lambda on i and (1 - lambda) / m on
  each reliable neighbour; soft cross-entropy over an N_t-way classifier.
* :func:`cross_modal_alignment` -- eqs. 12-14: per pseudo class with both
  modalities present, d(mu_vis, mu_ir) + eta * d(sigma_vis, sigma_ir).
* :func:`dan_total` -- eq. 15.

Choices the paper leaves open (documented, not recovered): sums over samples
and classes are means here (so the weights do not depend on the batch size);
d is the squared Euclidean distance; sigma is the biased per-dimension
variance of eqs. 12-13.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.data.records import INFRARED, VISIBLE


def domain_adversarial_loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 3: -mean log D(x_s) - mean log(1 - D(x_t)), D = sigmoid of the discriminator's logit."""
    source_logits, target_logits = source_logits.reshape(-1), target_logits.reshape(-1)
    if not len(source_logits) or not len(target_logits):
        raise ValueError(f"the domain loss needs source and target samples, got {len(source_logits)} source "
                         f"and {len(target_logits)} target logits")
    return (F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits))
            + F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits)))


def modality_prototypes(feats: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                        num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: class means per modality.

    Returns (prototypes (2, C, D), present (2, C) bool), index 0 = visible,
    1 = infrared; a class without samples of a modality has a zero prototype
    and ``present`` False there.
    """
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    protos = feats.new_zeros(2, num_classes, feats.shape[1])
    present = torch.zeros(2, num_classes, dtype=torch.bool, device=feats.device)
    for slot, mod in enumerate((VISIBLE, INFRARED)):
        keep = modality == mod
        sums = feats.new_zeros(num_classes, feats.shape[1]).index_add_(0, labels[keep], feats[keep])
        counts = torch.bincount(labels[keep], minlength=num_classes).to(feats.dtype)
        present[slot] = counts > 0
        protos[slot] = sums / counts.clamp(min=1).unsqueeze(1)
    return protos, present


def hard_pseudo_labels(feats: torch.Tensor, modality: torch.Tensor, prototypes: torch.Tensor,
                       present: torch.Tensor) -> torch.Tensor:
    """Eqs. 6-7: argmax_k cos(x, mu_k) over the classes present in the sample's own modality."""
    if not bool(present.any(dim=1).all()):
        raise ValueError("hard pseudo labels need at least one source prototype per modality (visible and infrared)")
    labels = torch.empty(len(feats), dtype=torch.long, device=feats.device)
    x = F.normalize(feats, dim=1)
    for slot, mod in enumerate((VISIBLE, INFRARED)):
        keep = modality == mod
        sim = x[keep] @ F.normalize(prototypes[slot], dim=1).T
        sim[:, ~present[slot]] = float("-inf")
        labels[keep] = sim.argmax(dim=1)
    return labels


def reliable_neighbours(feats: torch.Tensor, m: int) -> torch.Tensor:
    """(N, m) indices of each sample's m most cosine-similar other samples (its reliable set)."""
    n = len(feats)
    if not 1 <= m < n:
        raise ValueError(f"m (reliable neighbours) must be in 1..{n - 1} for {n} target samples, got {m}")
    x = F.normalize(feats, dim=1)
    sim = x @ x.T
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(m, dim=1).indices


def soft_targets(index: torch.Tensor, neighbours: torch.Tensor, num_classes: int, lam: float) -> torch.Tensor:
    """Eq. 8: rows with lambda at the sample's own class and (1 - lambda) / m at each reliable neighbour."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"soft-label lambda must be in [0, 1], got {lam}")
    m = neighbours.shape[1]
    target = torch.zeros(len(index), num_classes, device=neighbours.device)
    target.scatter_add_(1, neighbours, torch.full(neighbours.shape, (1.0 - lam) / m, device=neighbours.device))
    target.scatter_add_(1, index.unsqueeze(1), torch.full((len(index), 1), float(lam), device=neighbours.device))
    return target


def soft_label_loss(logits: torch.Tensor, index: torch.Tensor, neighbours: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 9: mean over the batch of -lambda log p(i) - (1 - lambda)/m sum_n log p(n), p = softmax over N_t."""
    target = soft_targets(index, neighbours, logits.shape[1], lam).to(logits.dtype)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def cross_modal_alignment(feats: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                          eta: float = 1.0) -> torch.Tensor:
    """Eqs. 12-14: mean over pseudo classes with both modalities of
    ||mu_vis - mu_ir||^2 + eta * ||sigma_vis - sigma_ir||^2 (sigma: biased per-dimension variance).

    Zero (with a gradient path) when no class has both modalities in the batch.
    """
    terms = []
    for k in torch.unique(labels):
        vis = feats[(labels == k) & (modality == VISIBLE)]
        ir = feats[(labels == k) & (modality == INFRARED)]
        if not len(vis) or not len(ir):
            continue
        mu_v, mu_i = vis.mean(0), ir.mean(0)
        var_v, var_i = ((vis - mu_v) ** 2).mean(0), ((ir - mu_i) ** 2).mean(0)
        terms.append(((mu_v - mu_i) ** 2).sum() + eta * ((var_v - var_i) ** 2).sum())
    if not terms:
        return feats.sum() * 0.0
    return torch.stack(terms).mean()


def dan_total(cls: torch.Tensor, tri: torch.Tensor, daa: torch.Tensor, soft: torch.Tensor, cma: torch.Tensor,
              lambda1: float, lambda2: float, lambda3: float) -> torch.Tensor:
    """Eq. 15: L_cls + L_tri + lambda1 L_DAA + lambda2 L_soft + lambda3 L_CMA."""
    return cls + tri + lambda1 * daa + lambda2 * soft + lambda3 * cma
