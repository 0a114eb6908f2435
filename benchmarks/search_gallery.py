"""Galleries for the search benchmark: one fitted to a trained run's features, and the isotropic floor.

Approximate search is only as hard as the geometry of the features it searches. Isotropic noise around
random centres (every direction equally spread) is the worst case for IVF and HNSW, and unlike a re-ID
gallery, whose features of one person cluster along a few directions and whose identities fill a
low-dimensional part of the space. So the benchmark fits, from features a trained run actually produced,
what shapes a search problem:

* the mean feature and the spectrum and directions of the identity means' covariance (how identities spread),
* the spectrum and directions of the within-identity covariance (how one person's images spread),
* a mean offset per camera (the camera/modality shift the re-ID model did not remove),
* the empirical distribution of images per identity and of cameras,

and samples a gallery of any size from that Gaussian model: identity centres, then images around them,
then L2 normalisation as ``vireid index`` stores them. Queries are new images of gallery identities.
A model fitted at D dimensions can be sampled at a larger D (``dim``): its directions are placed in a random
D-dimensional orthonormal frame, so the effective dimension stays the trained model's.

    python benchmarks/search_gallery.py fit RUN --data-root DATA --out gallery_model.npz

fits a model (every image of the dataset at ``DATA`` is embedded with the run; the split does not matter,
only the geometry). :func:`realistic` and :func:`isotropic` yield the gallery in chunks, so a 1M x 2048
gallery never has to sit in memory as float32.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 65536


@dataclass
class GalleryModel:
    mean: np.ndarray            # (D,)
    between_dirs: np.ndarray    # (D, r) principal directions of the identity means
    between_scale: np.ndarray   # (r,) their standard deviations
    within_dirs: np.ndarray     # (D, s) principal directions of one identity's images
    within_scale: np.ndarray    # (s,)
    camera_offsets: np.ndarray  # (C, D)
    camera_prob: np.ndarray     # (C,)
    id_sizes: np.ndarray        # images per identity seen in the fitted data (resampled)
    source: dict

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def save(self, path: str | Path) -> None:
        arrays = {k: getattr(self, k) for k in ("mean", "between_dirs", "between_scale", "within_dirs",
                                                "within_scale", "camera_offsets", "camera_prob", "id_sizes")}
        np.savez(path, source=np.array(json.dumps(self.source)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> GalleryModel:
        with np.load(path, allow_pickle=False) as d:
            missing = {"mean", "between_dirs", "within_dirs", "source"} - set(d.files)
            if missing:
                raise ValueError(f"{path} is not a gallery model (missing {', '.join(sorted(missing))}); "
                                 "write one with 'python benchmarks/search_gallery.py fit'")
            fields = {k: d[k] for k in d.files if k != "source"}
            return cls(**fields, source=json.loads(str(d["source"])))


def _principal(x: np.ndarray, keep: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """(directions (D, r), standard deviations (r,)) of the rows of ``x`` (already centred), largest first;
    components with variance below ``keep`` x the largest are dropped."""
    cov = x.T.astype(np.float64) @ x.astype(np.float64) / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    r = int((values > keep * values[0]).sum()) if values[0] > 0 else 0
    return vectors[:, :r].astype(np.float32), np.sqrt(values[:r]).astype(np.float32)


def fit(features: np.ndarray, pids: np.ndarray, cams: np.ndarray, source: dict | None = None) -> GalleryModel:
    """Fit the Gaussian gallery model to L2-normalised ``features`` (N, D) with identity and camera labels."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(pids) or len(features) != len(cams):
        raise ValueError(f"features {features.shape}, {len(pids)} identity labels and {len(cams)} camera labels "
                         "must describe the same images")
    ids, pid_index, id_sizes = np.unique(pids, return_inverse=True, return_counts=True)
    if len(ids) < 3 or (id_sizes < 2).all():
        raise ValueError(f"fitting needs several identities with several images each; got {len(ids)} identities")
    cam_values, cam_index, cam_counts = np.unique(cams, return_inverse=True, return_counts=True)
    # identity means and camera offsets explain each other (an identity seen mostly by one camera carries
    # its offset): estimate them alternately, a few rounds are plenty
    offsets = np.zeros((len(cam_values), features.shape[1]), np.float64)
    for _ in range(5):
        id_means = np.zeros((len(ids), features.shape[1]), np.float64)
        np.add.at(id_means, pid_index, features - offsets[cam_index])
        id_means /= id_sizes[:, None]
        offsets = np.zeros_like(offsets)
        np.add.at(offsets, cam_index, features - id_means[pid_index])
        offsets /= cam_counts[:, None]
        offsets -= offsets.mean(0)  # the shared part belongs to the mean feature
    residual = features - id_means[pid_index] - offsets[cam_index]
    mean = id_means.mean(0)
    between_dirs, between_scale = _principal(id_means - mean)
    within_dirs, within_scale = _principal(residual[id_sizes[pid_index] > 1])
    return GalleryModel(mean.astype(np.float32), between_dirs, between_scale, within_dirs, within_scale,
                        offsets.astype(np.float32), (cam_counts / cam_counts.sum()).astype(np.float32),
                        id_sizes.astype(np.int64), dict(source or {}, images=len(features), identities=len(ids),
                                                        cameras=len(cam_values)))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Sampler:
    """Draws from a :class:`GalleryModel`, optionally placed in a larger ``dim``."""

    def __init__(self, model: GalleryModel, dim: int | None, rng: np.random.Generator):
        self.model, self.rng = model, rng
        frame = None
        if dim is not None and dim != model.dim:
            if dim < model.dim:
                raise ValueError(f"a {model.dim}-d gallery model cannot be sampled at {dim} dimensions")
            frame = np.linalg.qr(rng.standard_normal((dim, model.dim)))[0].astype(np.float32)  # (dim, D)
        self.frame = frame

    def _place(self, x: np.ndarray) -> np.ndarray:
        return x if self.frame is None else x @ self.frame.T

    def centres(self, count: int) -> np.ndarray:
        m = self.model
        z = self.rng.standard_normal((count, len(m.between_scale)), dtype=np.float32)
        return m.mean + (z * m.between_scale) @ m.between_dirs.T

    def images(self, centres: np.ndarray) -> np.ndarray:
        m = self.model
        cams = self.rng.choice(len(m.camera_prob), size=len(centres), p=m.camera_prob / m.camera_prob.sum())
        z = self.rng.standard_normal((len(centres), len(m.within_scale)), dtype=np.float32)
        return _normalise(self._place(centres + m.camera_offsets[cams] + (z * m.within_scale) @ m.within_dirs.T))


def realistic(model: GalleryModel, items: int, queries: int, seed: int = 0, dim: int | None = None,
              chunk: int = CHUNK) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """(gallery chunks, queries (Q, dim)) sampled from ``model``: identity sizes drawn from the fitted ones,
    each query a new image of a random gallery identity."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice(model.id_sizes, size=items // max(int(model.id_sizes.min()), 1) + 1)
    sizes = sizes[:int(np.searchsorted(np.cumsum(sizes), items)) + 1]
    owner = np.repeat(np.arange(len(sizes)), sizes)[:items]
    sampler = _Sampler(model, dim, rng)
    centres = sampler.centres(len(sizes)).astype(np.float32)
    q = sampler.images(centres[rng.integers(0, int(owner[-1]) + 1, queries)]).astype(np.float32)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, items, chunk):
            yield sampler.images(centres[owner[start:start + chunk]]).astype(np.float32)

    return chunks(), q


def isotropic(items: int, queries: int, dim: int, seed: int = 0, per_id: int = 20, noise: float = 1.0,
              chunk: int = CHUNK) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """The floor: ``items / per_id`` random unit centres, images = centre + isotropic noise of relative norm
    ``noise``, L2-normalised; queries are new draws around random centres."""
    rng = np.random.default_rng(seed)
    ids = max(items // per_id, 1)
    centres = _normalise(rng.standard_normal((ids, dim), dtype=np.float32))

    def draw(who: np.ndarray) -> np.ndarray:
        return _normalise(centres[who] + noise * rng.standard_normal((len(who), dim), dtype=np.float32)
                          / dim ** 0.5).astype(np.float32)

    q = draw(rng.integers(0, ids, queries))

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, items, chunk):
            yield draw(np.arange(start, min(start + chunk, items)) % ids)

    return chunks(), q


def describe(model: GalleryModel, variance: float = 0.9) -> dict:
    """How many directions hold ``variance`` of the between- and within-identity spread (the effective
    dimension a search structure sees), and the within/between ratio."""
    def dims(scale):
        v = scale.astype(np.float64) ** 2
        return int(np.searchsorted(np.cumsum(v) / v.sum(), variance) + 1) if v.sum() > 0 else 0

    return {"dim": model.dim, f"between_dims_{int(variance * 100)}": dims(model.between_scale),
            f"within_dims_{int(variance * 100)}": dims(model.within_scale),
            "within_over_between": float((model.within_scale ** 2).sum() / (model.between_scale ** 2).sum()),
            **model.source}


def fit_run(run: str, data_root: str, dataset: str | None = None, device: str = "cpu") -> GalleryModel:
    """Embed every image of the dataset at ``data_root`` with ``run`` and fit a model to the features."""
    from vireid.data.datasets import open_dataset
    from vireid.deploy.extractor import Extractor

    extractor = Extractor(run, device=device)
    name = dataset or (extractor.config.get("data") or {}).get("dataset", "sysu")
    data = open_dataset(name, data_root)
    samples = list(data.train) + list(data.test)
    feats = extractor.embed_files([s.path for s in samples], [s.modality for s in samples], strict=True)
    # training labels may be renumbered: keep the two splits' identities apart
    pids = np.array([s.pid for s in data.train] + [10**7 + s.pid for s in data.test])
    cams = np.array([s.camid for s in samples])
    return fit(feats.features.numpy(), pids, cams, {"run": str(run), "data_root": str(data_root),
                                                     "dataset": name})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a gallery model to a trained run's features on a dataset")
    f.add_argument("run")
    f.add_argument("--data-root", required=True)
    f.add_argument("--dataset", help="dataset kind (default: the run's data.dataset)")
    f.add_argument("--out", required=True)
    d = sub.add_parser("describe", help="print a fitted model's effective dimensions")
    d.add_argument("model")
    args = ap.parse_args(argv)
    if args.command == "fit":
        model = fit_run(args.run, args.data_root, args.dataset)
        model.save(args.out)
        print(json.dumps(describe(model), indent=1))
        print(f"wrote {args.out}")
    else:
        print(json.dumps(describe(GalleryModel.load(args.model)), indent=1))


if __name__ == "__main__":
    main()
