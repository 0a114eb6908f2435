"""IDKL's total loss (paper Eq. 21), one function for both the code and the paper variant.

The model returns the tensors (see ``vireid.models.idkl.IDKL.forward``); this
module only combines terms, with explicit weights. The released code switches
its graph and logit weights on the literal batch size 120; ``batch_switch``
(0 = off) reproduces that: at any other batch size the code's small-batch
weights replace the written ones. Weight 0 skips a term (its metric is not
computed), which is how the ablation rows of Table 4 are expressed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ..schema import setting
from .graph import tgsa_reference, tgsa_triplet
from .kl import kl_rows, sm_kl, sym_kl
from .modality import confuser_targets, modality_loss
from .pairs import split_modalities
from .purifier import entropy_margin, modal_centroid
from .reid import id_loss, triplet_hard


@dataclass(frozen=True)
class IDKLLossSettings:
    """Weights and switches of the IDKL loss; defaults are the released SYSU/LLCM config (batch 120).

    Parsed from a config's ``loss`` section with :func:`vireid.schema.parse_section` (the recipe's section adds
    the extra metric losses); a weight of 0 skips its term."""

    # ReID on both branches (Eq. 5); the specific branch uses the purified feature f~_sp.
    id_sh: float = setting(1.0, low=0)
    tri_sh: float = setting(1.0, low=0)
    id_sp: float = setting(1.0, low=0)
    tri_sp: float = setting(1.0, low=0)
    reid_sp_raw: float = setting(0.0, low=0, doc="paper Eq. 5: L_reid on the unpurified f_sp (code: none)")
    triplet_margin: float = setting(1.3, low=0)
    # modality classifiers (Eq. 2-4)
    discriminator: float = setting(1.0, low=0, doc='L_D ("unad")')
    confuser: float = setting(1.0, low=0, doc='L_C ("pse")')
    confuser_targets: str = setting("pseudo", choices=("pseudo", "modality"),
                                    doc="pseudo: the code's half-flipped labels; modality: the paper's (GRL)")
    # Information Purifier (Eq. 10, 11, 13)
    ip_e: float = setting(0.1, low=0, doc="lambda1 * L_e")
    ip_r: float = setting(0.1, low=0, doc="lambda1 * L_r")
    ip_penalty: str = setting("reference", choices=("reference", "softplus"),
                              doc="reference: exp(relu)-1 for L_e, hinge for L_r; softplus: the paper's")
    # feature graph (Eq. 15-17, 20)
    graph: str = setting("reference", choices=("reference", "paper"),
                         doc="reference: the code's symmetric KL of distance rows; paper: Eq. 16")
    tgsa: float = setting(0.6, low=0, doc="lambda2 on shared-vs-specific graph alignment")
    mdr_graph: float = setting(1.0, low=0, doc="graph part of MDR (code: intra1 = V vs I)")
    mdr_graph_mixed: float = setting(1.0, low=0, doc="code only: intra2 + intra3 with the mixed half/half set")
    # logits (Eq. 19, 20)
    kl: str = setting("symmetric", choices=("symmetric", "paper"),
                      doc="symmetric: the code's symKL batchmean; paper: KL(sh || sp) summed")
    csa: float = setting(0.8, low=0, doc="lambda3 on shared-vs-specific logits")
    mdr_logit: float = setting(1.0, low=0, doc="logit part of MDR (shared V vs shared I)")
    bg_kl: float = setting(1.0, low=0, doc="multiplier of the per-sample logit terms (code flag bg_kl)")
    sm_kl: float = setting(1.0, low=0, doc="multiplier of the code's regrouped copy (not in the paper)")
    batch_switch: int = setting(0, low=0, doc="the weights above hold at this batch size only, the code's "
                                              "small-batch ones otherwise (0: off)")

    def as_dict(self) -> dict:
        return asdict(self)

    def for_batch(self, batch_size: int) -> IDKLLossSettings:
        """The weights the released code uses at ``batch_size``: these, or (batch_switch on and another
        size) the small-batch ones in place of each non-zero TGSA/MDR-graph/CSA weight (a term switched
        off stays off)."""
        if not self.batch_switch or batch_size == self.batch_switch:
            return self
        return replace(self, **{k: v for k, v in REFERENCE_SMALL_BATCH.items() if getattr(self, k)})


# The released code's small-batch branch (B != 120, e.g. RegDB's 60): TGSA keeps only
# 0.1 * (intra1 + inter) and the logit distillation weight drops to 0.3.
REFERENCE_SMALL_BATCH = dict(tgsa=0.1, mdr_graph=0.1, mdr_graph_mixed=0.0, csa=0.3)

PAPER = dict(reid_sp_raw=1.0, id_sp=0.1, tri_sp=0.1, confuser_targets="modality", ip_penalty="softplus",
             graph="paper", mdr_graph_mixed=0.0, kl="paper", sm_kl=0.0)


def _check_alternating(modality: torch.Tensor) -> None:
    """The code's pseudo confuser labels only mean "half flipped" for an alternating I,V,I,V batch."""
    t = modality.reshape(-1)
    if t.numel() < 2 or bool((t[1:] == t[:-1]).any()):
        raise ValueError(f"confuser_targets='pseudo' needs modalities alternating sample by sample "
                         f"(the reference sampler's I,V,I,V,... layout), got {t.tolist()[:16]}"
                         f"{' ...' if t.numel() > 16 else ''}; use the cross-modality sampler or the paper's "
                         f"GRL confuser (confuser_targets='modality')")


def _confuser_labels(modality: torch.Tensor, s: IDKLLossSettings) -> torch.Tensor:
    if s.confuser_targets == "modality":
        return modality
    _check_alternating(modality)
    return confuser_targets(modality)


def _logit_terms(z_sh, z_sp, labels, modality, s: IDKLLossSettings, metrics) -> torch.Tensor:
    """CSA (Eq. 19) and the logit part of MDR (Eq. 20); code adds a regrouped copy (sm_kl)."""
    sh_v, sh_i = split_modalities(z_sh, modality, labels, "logit terms")
    sp_v, sp_i = split_modalities(z_sp, modality, labels, "logit terms")
    total = z_sh.new_zeros(())
    if s.kl == "paper":
        if s.csa:
            metrics["csa"] = kl_rows(sh_v, sp_v) + kl_rows(sh_i, sp_i)
            total = total + s.csa * metrics["csa"]
        if s.mdr_logit:
            metrics["mdr_logit"] = kl_rows(sh_v, sh_i)
            total = total + s.mdr_logit * metrics["mdr_logit"]
        return total
    if s.bg_kl:
        bg = s.mdr_logit * sym_kl(sh_v, sh_i) + s.csa * (sym_kl(sh_v, sp_v) + sym_kl(sh_i, sp_i))
        metrics["bg_kl"] = bg
        total = total + s.bg_kl * bg
    if s.sm_kl:
        sm = s.mdr_logit * sm_kl(sh_v, sh_i, labels) + s.csa * (sm_kl(sh_v, sp_v, labels) + sm_kl(sh_i, sp_i, labels))
        metrics["sm_kl"] = sm
        total = total + s.sm_kl * sm
    return total


def _graph_terms(f_sh, f_sp, labels, modality, s: IDKLLossSettings, metrics) -> torch.Tensor:
    """TGSA distillation (Eq. 17) and the graph part of MDR (Eq. 20) on pre-BN pooled features."""
    sh_v, sh_i = split_modalities(f_sh, modality, labels, "graph terms")
    sp_v, sp_i = split_modalities(f_sp, modality, labels, "graph terms")
    if s.graph == "paper":
        total = f_sh.new_zeros(())
        if s.tgsa:
            metrics["tgsa"] = tgsa_triplet(sp_v, sh_v) + tgsa_triplet(sp_i, sh_i)
            total = total + s.tgsa * metrics["tgsa"]
        if s.mdr_graph:
            metrics["mdr_graph"] = tgsa_triplet(sh_v, sh_i)
            total = total + s.mdr_graph * metrics["mdr_graph"]
        return total
    t = tgsa_reference(sh_v, sh_i, sp_v, sp_i, mixed=bool(s.mdr_graph_mixed))
    total = s.tgsa * (t["inter_v"] + t["inter_i"]) + s.mdr_graph * t["intra1"]
    if s.mdr_graph_mixed:
        total = total + s.mdr_graph_mixed * (t["intra2"] + t["intra3"])
    metrics["soft_dt"] = total
    return total


def idkl_total_loss(out: dict, labels: torch.Tensor, modality: torch.Tensor,
                    settings: IDKLLossSettings = IDKLLossSettings()) -> tuple[torch.Tensor, dict]:
    """Sum every IDKL term (Eq. 21) as weighted by ``settings``.

    ``out`` holds (B = batch, D = feature width, C = classes):
    ``feat_sh``, ``feat_sp`` (B, D) pre-BN pooled features (f_sh, f~_sp);
    ``logits_sh``, ``logits_sp`` (B, C) classifier outputs on the BN-neck features;
    ``ent_logits``, ``ent_logits_p`` (B, C) entropy classifier on GeM(F), GeM(m_e*F);
    ``pool_in``, ``pool_in_p`` (B, D) GeM(IN(F)), GeM(m_r*IN(F));
    ``d_sp_logits``, ``d_sh_logits`` (B, 2) or lists of K of them;
    optionally ``feat_sp_raw``, ``logits_sp_raw`` for the paper's L_reid(f_sp).
    Returns (total, metrics); metric keys follow the released code
    (tri, soft_dt, IN_p, F_p, unad, id_pl, pse, bg_kl, sm_kl, ce, acc) plus the
    paper variant's (tgsa, mdr_graph, csa, mdr_logit, reid_sp_raw).
    """
    s = settings.for_batch(labels.numel())
    m: dict[str, torch.Tensor] = {}
    total = out["feat_sh"].new_zeros(())

    def add(key, weight, fn):
        nonlocal total
        if weight:
            m[key] = fn()
            total = total + weight * m[key]

    add("ce", s.id_sh, lambda: id_loss(out["logits_sh"], labels))
    add("id_pl", s.id_sp, lambda: id_loss(out["logits_sp"], labels))
    if s.tri_sh or s.tri_sp:
        m["tri"] = (s.tri_sh * triplet_hard(out["feat_sh"], labels, s.triplet_margin)
                    + s.tri_sp * triplet_hard(out["feat_sp"], labels, s.triplet_margin))
        total = total + m["tri"]
    add("reid_sp_raw", s.reid_sp_raw, lambda: id_loss(out["logits_sp_raw"], labels)
        + triplet_hard(out["feat_sp_raw"], labels, s.triplet_margin))
    add("unad", s.discriminator, lambda: modality_loss(out["d_sp_logits"], modality))
    add("pse", s.confuser, lambda: modality_loss(out["d_sh_logits"], _confuser_labels(modality, s)))
    pen_e, pen_r = ("exp_relu", "hinge") if s.ip_penalty == "reference" else ("softplus", "softplus")
    add("F_p", s.ip_e, lambda: entropy_margin(out["ent_logits"], out["ent_logits_p"], 0.0, pen_e))
    add("IN_p", s.ip_r, lambda: modal_centroid(out["pool_in"], out["pool_in_p"], labels, modality, 0.0, pen_r))
    if s.tgsa or s.mdr_graph or s.mdr_graph_mixed:
        total = total + _graph_terms(out["feat_sh"], out["feat_sp"], labels, modality, s, m)
    if s.csa or s.mdr_logit:
        total = total + _logit_terms(out["logits_sh"], out["logits_sp"], labels, modality, s, m)
    with torch.no_grad():
        m["acc"] = (out["logits_sh"].argmax(dim=1) == labels).float().mean()
    return total, m
