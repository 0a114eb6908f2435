"""A gallery index: L2-normalised features, paths, modalities, the run's identity and its weights hash.

Why the hash: features from two models live in unrelated spaces, so
querying an index with another model (another run, or the same run trained
further) gives confident nonsense. ``GalleryIndex.check_run`` refuses it with
the two hashes and runs named; a different feature width is refused too.

An optional approximate-search structure (faiss flat, IVF or HNSW) is stored
in the same file as serialised bytes, so a million-image HNSW graph is built
once, not per search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vireid.data.records import MODALITY_NAMES
from vireid.deploy.store import load_checked, pack_strings, save_checked, unpack_strings

log = logging.getLogger(__name__)
INDEX_KIND = "vireid-index"


class IndexMismatch(ValueError):
    """An index queried or extended with another model, or features of another width."""


@dataclass
class GalleryIndex:
    features: torch.Tensor  # (N, D) float32, L2-normalised rows
    paths: list[str]
    modalities: torch.Tensor  # (N,) long
    run: dict  # RunIdentity.as_dict() of the model that made the features
    ann: dict = field(default_factory=dict)  # {"kind", "params", "blob": uint8 tensor} or empty
    source: str = ""  # the file it was loaded from (named in errors)

    def __post_init__(self):
        if self.features.dim() != 2:
            raise ValueError(f"index features must be (N, D), got shape {tuple(self.features.shape)}")
        if not len(self.features) == len(self.paths) == len(self.modalities):
            raise ValueError(f"index has {len(self.features)} features, {len(self.paths)} paths and "
                             f"{len(self.modalities)} modalities; they must match")

    @classmethod
    def create(cls, features: torch.Tensor, paths, modalities, run: dict) -> GalleryIndex:
        return cls(F.normalize(features.float(), dim=1), list(paths), torch.as_tensor(list(modalities)).long(),
                   dict(run))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def summary(self) -> str:
        counts = {MODALITY_NAMES[m]: int((self.modalities == m).sum()) for m in MODALITY_NAMES}
        parts = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        ann = f", {self.ann['kind']} faiss index" if self.ann else ""
        return f"{len(self)} images ({parts}), {self.dim}-d {self.run.get('method')} features{ann}"

    # -- consistency ------------------------------------------------------------------------------
    def check_run(self, run: dict, where: str = "the index") -> None:
        """Refuse features from another model or of another width than this index's."""
        if int(run.get("feature_dim", -1)) != self.dim:
            raise IndexMismatch(f"{where} holds {self.dim}-d features but the model/features given are "
                                f"{run.get('feature_dim')}-d ({run.get('checkpoint')}); they come from different "
                                "models")
        if run.get("weights_sha256") != self.run.get("weights_sha256"):
            raise IndexMismatch(
                f"{where} was built with another model: weights sha256 {str(self.run.get('weights_sha256'))[:12]} "
                f"({self.run.get('checkpoint')}) vs {str(run.get('weights_sha256'))[:12]} ({run.get('checkpoint')}); "
                "rebuild the index with this model or search with the model it was built with")
        if bool(run.get("flip")) != bool(self.run.get("flip")):
            raise IndexMismatch(f"{where} was built with flip={self.run.get('flip')} but the queries use "
                                f"flip={run.get('flip')}; use the same setting")

    def check_width(self, queries: torch.Tensor) -> None:
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise IndexMismatch(f"queries have shape {tuple(queries.shape)} but the index holds {self.dim}-d "
                                "features; they come from different models")

    # -- growing ----------------------------------------------------------------------------------
    def add(self, features: torch.Tensor, paths, modalities, run: dict) -> int:
        """Append new images (paths already indexed are skipped); returns how many were added."""
        self.check_run(run, "the index being extended")
        known = set(self.paths)
        keep = [i for i, p in enumerate(paths) if p not in known]
        if not keep:
            return 0
        index = torch.tensor(keep)
        new = F.normalize(features[index].float(), dim=1)
        if self.ann:
            from vireid.deploy.search import ann_add

            self.ann = ann_add(self.ann, new, len(self), f"index {self.source}" if self.source else "the index")
        self.features = torch.cat([self.features, new])
        self.paths += [paths[i] for i in keep]
        self.modalities = torch.cat([self.modalities, torch.as_tensor(list(modalities)).long()[index]])
        return len(keep)

    # -- disk -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        data, offsets = pack_strings(self.paths)
        tensors = {"features": self.features.contiguous(), "modality": self.modalities.to(torch.uint8),
                   "paths_utf8": data, "paths_offsets": offsets}
        meta = {"run": self.run}
        if self.ann:
            tensors["ann_blob"] = self.ann["blob"]
            meta["ann"] = {"kind": self.ann["kind"], "params": self.ann["params"]}
        save_checked(path, INDEX_KIND, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        tensors, meta = load_checked(path, INDEX_KIND, "index")
        try:
            ann = {**meta["ann"], "blob": tensors["ann_blob"]} if "ann" in meta else {}
            paths = unpack_strings(tensors["paths_utf8"], tensors["paths_offsets"])
            return cls(tensors["features"], paths, tensors["modality"].long(), meta["run"], ann, str(path))
        except (KeyError, TypeError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a consistent vireid index ({type(exc).__name__}: {exc}); "
                             "rebuild it") from None
