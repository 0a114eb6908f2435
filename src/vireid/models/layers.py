"""Small building blocks shared by the method models.

GeM pooling, the BN neck, bias-free classifiers, gradient reversal, the modality
classifier MLP and the two gates of IDKL's Information Purifier. Each is a
plain module (or function) so models read as a list of parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vireid.data.records import INFRARED, VISIBLE


def check_modalities(modality: torch.Tensor) -> None:
    """Every value of a per-sample modality tensor is VISIBLE (0) or INFRARED (1), or a ValueError naming the others."""
    if not bool(((modality == VISIBLE) | (modality == INFRARED)).all()):
        raise ValueError(f"modality values must be {VISIBLE} (visible) or {INFRARED} (infrared), "
                         f"got {sorted(set(modality.tolist()))}")


def exporting() -> bool:
    """True while torch.jit.trace, torch.onnx.export or torch.export records the model (data-dependent checks,
    which a trace would bake in or fail on, are skipped then)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of a (B, C, h, w) map to (B, C).

    Clamps at ``eps`` before the power, so negative activations count as eps
    (this is what IDKL's reference does, also on instance-normalised maps).
    """
    if x.dim() != 4:
        raise ValueError(f"gem expects a (B, C, h, w) map, got shape {tuple(x.shape)}")
    return x.clamp(min=eps).pow(_per_map(p)).mean(dim=(2, 3)).pow(1.0 / p)


def _per_map(p: float | torch.Tensor) -> float | torch.Tensor:
    """A per-channel exponent (C,) as (C, 1, 1), so it broadcasts over a (B, C, h, w) map; a scalar as it is."""
    return p[:, None, None] if isinstance(p, torch.Tensor) and p.dim() == 1 else p


def gem_root_eps(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-12) -> torch.Tensor:
    """AGW's GeM (``model.py:embed_net.forward``): (mean_{h,w} x^p + eps)^(1/p), no clamp.

    The eps sits inside the root, so an all-zero channel pools to eps^(1/p)
    (1e-4 for p = 3), where :func:`gem` gives its clamp value (1e-6); a
    negative mean would be NaN. AGW pools post-ReLU maps, so clamping at 0 changes
    nothing there; it keeps the form usable on backbones whose last map is not
    rectified (OSNet, the plain CNN).
    """
    if x.dim() != 4:
        raise ValueError(f"gem expects a (B, C, h, w) map, got shape {tuple(x.shape)}")
    return (x.clamp_min(0).pow(_per_map(p)).mean(dim=(2, 3)) + eps).pow(1.0 / p)


GEM_FORMS = ("clamp", "root_eps")


class GeM(nn.Module):
    """GeM pooling with a fixed or learnable exponent ``p``.

    ``p_min`` (learnable p only) clamps the exponent in the forward pass, so a
    large learning rate cannot drive it to 0 or below (which gives inf/NaN).
    ``form``: "clamp" (IDKL's: clamp at ``eps`` = 1e-6, then the power) or
    "root_eps" (AGW's: ``eps`` = 1e-12 added inside the root, no clamp);
    ``eps=None`` takes the form's reference value. ``channels`` (learnable p
    only): one exponent per channel, a (channels,) parameter, as GeM's
    per-feature-map p_k (MBFVRD's Eq. 3); None keeps one scalar p.
    """

    def __init__(self, p: float = 3.0, eps: float | None = None, learnable: bool = False,
                 p_min: float | None = None, form: str = "clamp", channels: int | None = None):
        super().__init__()
        if channels is not None and (not learnable or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"GeM channels (one p per channel) needs learnable=True and an integer >= 1, got "
                             f"channels={channels!r}, learnable={learnable}")
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p}")
        if p_min is not None and not 0 < p_min <= p:
            raise ValueError(f"GeM p_min must be in (0, p={p}], got {p_min}")
        if form not in GEM_FORMS:
            raise ValueError(f"GeM form must be one of {', '.join(GEM_FORMS)}, got {form!r}")
        self.form = form
        self.eps = eps if eps is not None else (1e-6 if form == "clamp" else 1e-12)
        self.p_min = p_min
        # a fixed p stays a Python float: x.pow(3.0) is much cheaper than x.pow(tensor)
        shape = () if channels is None else (channels,)
        self.p = nn.Parameter(torch.full(shape, float(p))) if learnable else float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if self.p_min is not None and isinstance(p, nn.Parameter):
            p = p.clamp(min=self.p_min)
        if self.form == "root_eps":
            return gem_root_eps(x, p, self.eps)
        return gem(x, p, self.eps)

    def extra_repr(self) -> str:
        p = torch.as_tensor(self.p).detach()
        p = f"{float(p):.2f}" if p.dim() == 0 else f"per channel ({p.numel()}, mean {float(p.mean()):.2f})"
        return f"p={p}, eps={self.eps}, learnable={isinstance(self.p, nn.Parameter)}, form={self.form}"


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d neck between the pooled feature and the classifier.

    Weight starts at 1 and bias at 0; with ``freeze_bias`` the bias stays 0
    (no gradient), the usual BNNeck choice and IDKL's.
    """

    def __init__(self, dim: int, freeze_bias: bool = True, eps: float = 1e-5):
        super().__init__(dim, eps=eps)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(not freeze_bias)


def classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """Bias-free linear classifier (PyTorch default init)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return nn.Linear(in_dim, num_classes, bias=False)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coef):
        ctx.coef = coef
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coef * grad, None


def grad_reverse(x: torch.Tensor, coef: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``-coef`` backward (Ganin & Lempitsky)."""
    return _ReverseGrad.apply(x, float(coef))


class GradReverse(nn.Module):
    """Module form of :func:`grad_reverse`; ``coef`` may be changed during training."""

    def __init__(self, coef: float = 1.0):
        super().__init__()
        self.coef = coef

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coef)

    def extra_repr(self) -> str:
        return f"coef={self.coef}"


class ModalityHead(nn.Sequential):
    """Modality classifier MLP: D -> hidden -> hidden -> 2, BN + ReLU + dropout between.

    IDKL uses it both as the specific-branch discriminator and as the
    shared-branch confuser (hidden 100, dropout 0.5).
    """

    def __init__(self, in_dim: int, hidden: int = 100, dropout: float = 0.5, num_modalities: int = 2):
        layers = []
        dims = [in_dim, hidden, hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden, num_modalities))
        super().__init__(*layers)


class ChannelGate(nn.Module):
    """Sigmoid gate from two bias-free 1x1 convs with reduction ``r``.

    ``pooled=False`` (IDKL code): the gate is computed at every position, shape
    (B, C, h, w). ``pooled=True`` (paper Eq. 8, SE-Net): the map is pooled
    first by ``pool`` -- "avg" (SE-Net's global average) or "gem" (GeM with
    exponent ``gem_p``, the pooling the paper uses everywhere else) -- so the
    gate is a channel vector (B, C, 1, 1).
    """

    POOLS = ("avg", "gem")

    def __init__(self, channels: int, reduction: int = 16, pooled: bool = False, pool: str = "avg",
                 gem_p: float = 3.0):
        super().__init__()
        hidden = channels // reduction  # as the reference: floor division
        if hidden < 1:
            raise ValueError(f"gate reduction {reduction} leaves no hidden units for {channels} channels")
        if pool not in self.POOLS:
            raise ValueError(f"gate pool={pool!r}; expected one of {self.POOLS}")
        self.pooled = pooled
        self.pool = pool
        self.gem_p = gem_p
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            x = x.mean(dim=(2, 3), keepdim=True) if self.pool == "avg" else gem(x, self.gem_p)[:, :, None, None]
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x))))


class InformationPurifier(nn.Module):
    """IDKL's Information Purifier (paper Sec. 3.2, Eq. 7-9 and 12).

    From the specific map F: F_IN = IN(F); gates m_r = gate_r(F_IN) and
    m_e = gate_e(F); F_IN_p = m_r * F_IN (less modality style), F_p = m_e * F
    (more discriminative); output F~ = m_r * F_p + m_e * F_IN_p. Returns all
    four maps because the IP losses need them.
    """

    def __init__(self, channels: int, reduction: int = 16, pooled_gates: bool = False,
                 in_affine: bool = True, gate_pool: str = "gem", gem_p: float = 3.0):
        super().__init__()
        if pooled_gates and gate_pool == "avg":
            # The spatial mean of an instance-normalised map is the IN bias (0 without affine) for every
            # sample, so an average-pooled m_r would be one constant vector that never trains.
            raise ValueError("gate_pool='avg' with pooled (SE) gates makes m_r constant: the spatial mean of "
                             "IN(F) is the same for every sample (0 for plain IN); use gate_pool='gem'")
        # code: affine IN with running stats; paper Eq. 7: plain IN
        self.norm = nn.InstanceNorm2d(channels, affine=in_affine, track_running_stats=in_affine)
        # reference names: mask1 / m_IN and mask2 / m_F; g(.) of Eq. 8 is gate_pool when pooled
        self.gate_r = ChannelGate(channels, reduction, pooled_gates, gate_pool, gem_p)
        self.gate_e = ChannelGate(channels, reduction, pooled_gates, gate_pool, gem_p)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x_in = self.norm(x)
        m_r = self.gate_r(x_in)
        m_e = self.gate_e(x)
        x_in_p = m_r * x_in
        x_p = m_e * x
        out = m_r * x_p + m_e * x_in_p
        return {"out": out, "x_in": x_in, "x_in_p": x_in_p, "x_p": x_p, "m_r": m_r, "m_e": m_e}
