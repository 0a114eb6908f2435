"""Variational self-distillation (VSD; Tian et al., CVPR 2021), as MBFVRD's VRD uses it (seed 003, Eq. 8).

The observation v (a BN-neck feature) is the teacher, its information-bottleneck
representation z = IB(v) the student:

    L_VSD = mean over samples of KL(p(y|v) || p(y|z)),  p = softmax(logits / T)

with the teacher's logits detached (the VSD code detaches them; it also feeds
probabilities where ``kl_div`` expects log-probabilities, which is not a KL;
this is the true divergence).
"""

from __future__ import annotations

import torch

from .kl import kl_rows

VSD_FORMS = ("kl", "reference")


def vsd_loss(obs_logits: torch.Tensor, rep_logits: torch.Tensor, temperature: float = 1.0,
             form: str = "kl") -> torch.Tensor:
    """KL(softmax(obs / T) || softmax(rep / T)) averaged over rows; gradient only to ``rep_logits``.

    ``obs_logits``, ``rep_logits``: (B, C) logits of the observation's and the
    representation's classifiers. ``form="reference"`` computes what the VSD
    code does instead (probabilities in ``kl_div``'s log slot, mean over all
    entries; see :mod:`vireid.losses.vsd_code`).
    """
    if form not in VSD_FORMS:
        raise ValueError(f"vsd_loss form must be one of {', '.join(VSD_FORMS)}, got {form!r}")
    if temperature <= 0:
        raise ValueError(f"vsd_loss temperature must be > 0, got {temperature}")
    if obs_logits.shape != rep_logits.shape or obs_logits.dim() != 2:
        raise ValueError(f"vsd_loss needs two (B, C) logit tensors of equal shape, got {tuple(obs_logits.shape)} "
                         f"and {tuple(rep_logits.shape)}")
    if form == "reference":
        from .vsd_code import vsd_code_distill
        return vsd_code_distill(obs_logits, rep_logits, temperature)
    return kl_rows(obs_logits.detach() / temperature, rep_logits / temperature, reduction="mean")
