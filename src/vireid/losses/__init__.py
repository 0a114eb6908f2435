"""Losses as small functions with plain tensor contracts."""

from .center import hetero_center_triplet, modality_centers
from .distill import vsd_loss
from .graph import offdiag_pairwise_dist, pairwise_dist, tgsa_reference, tgsa_triplet
from .idkl import IDKLLossSettings, idkl_total_loss
from .kl import kl_batchmean, kl_rows, regroup_by_identity, sm_kl, sym_kl
from .modality import confuser_targets, modality_loss
from .pairs import split_modalities
from .purifier import entropy, entropy_margin, modal_centroid, modal_centroid_dist
from .reid import id_loss, pairwise_sq_dist, triplet_hard
from .weighted import adp_loss, weighted_distances, wrt_loss

__all__ = [
    "IDKLLossSettings", "adp_loss", "confuser_targets", "entropy", "entropy_margin", "hetero_center_triplet",
    "id_loss", "idkl_total_loss",
    "kl_batchmean", "kl_rows", "modal_centroid", "modal_centroid_dist", "modality_centers", "modality_loss",
    "offdiag_pairwise_dist", "pairwise_dist", "pairwise_sq_dist", "regroup_by_identity", "sm_kl",
    "split_modalities", "sym_kl", "tgsa_reference", "tgsa_triplet", "triplet_hard", "vsd_loss",
    "weighted_distances", "wrt_loss",
]
