"""See what a run learned: rank lists, a t-SNE of test features, Grad-CAM maps.

* :func:`run_rank_list` - trial 0 of a protocol, N queries spread over the
  query list, each with its top-k gallery images (green = same identity,
  red = another; every image tagged VIS/IR).
* :func:`tsne_picture` - test features of the first identities of a
  protocol's trial 0 in 2-D (colour = identity, marker = modality): whether
  an identity's visible and infrared images land together is the whole
  point of VI-ReID. Needs ``vireid[viz]`` (scikit-learn, matplotlib).
* :func:`grad_cam` - Grad-CAM (Selvaraju et al. 2017) on the model's last
  feature map, for any method: the map is found as the last module output
  with spatial dimensions in the eval forward pass. A re-ID model has no
  class at test time, so the score is the feature's similarity to itself
  (``f . stop_grad(f)``): the map shows the regions the embedding is built from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vireid.data.records import INFRARED, VISIBLE
from vireid.evaluation.visualize import rank_list_image, save_image

log = logging.getLogger(__name__)


def _split_features(run, data_root, protocol: str | None, device: str = "cpu"):
    """(extractor, protocol name, trial-0 split, query features, gallery features)."""
    from vireid.deploy.extractor import Extractor
    from vireid.evaluation.protocols import get_protocol

    extractor = Extractor(run, device=device, workers=0)
    name = protocol or (extractor.config.get("eval") or {}).get("protocol")
    if name is None:
        raise ValueError("no --protocol given and the run's config has no eval.protocol")
    proto = get_protocol(name)
    split = proto.build(data_root, proto.trials[0])
    if not split.query or not split.gallery:
        raise ValueError(f"protocol {name} on {data_root}: {len(split.query)} queries, {len(split.gallery)} "
                         "gallery images; both must be non-empty")
    q = extractor([s.path for s in split.query], modality=[s.modality for s in split.query])
    g = extractor([s.path for s in split.gallery], modality=[s.modality for s in split.gallery])
    return extractor, name, split, q, g


def spread_rows(count: int, wanted: int) -> list[int]:
    """``wanted`` query indices spread evenly over ``count`` (every identity range gets a turn)."""
    if wanted < 1:
        raise ValueError(f"the number of rank-list queries must be >= 1, got {wanted}")
    return sorted({int(i) for i in np.linspace(0, count - 1, min(wanted, count))})


def run_rank_list(run, data_root, out, queries: int = 8, protocol: str | None = None, top_k: int = 10,
                  rerank: bool = False, device: str = "cpu", transductive: bool = False) -> Path:
    """Write the rank-list picture of trial 0 of ``protocol`` (default: the run's) and return its path.

    ``transductive``: rank by the features after the method's transductive step on the trial's query + gallery
    features together (as ``vireid eval --transductive`` scores them).
    """
    from vireid.evaluation.evaluator import cosine_distance, euclidean_distance
    from vireid.evaluation.reranking import rerank as rerank_distances
    from vireid.evaluation.transductive import transductive_step

    extractor, _, split, q, g = _split_features(run, data_root, protocol, device)
    if transductive:
        both = transductive_step(extractor.recipe, extractor.device)(torch.cat([q, g]))
        q, g = both[: len(q)], both[len(q):]
    if rerank:
        dist = rerank_distances(euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g))
    else:
        dist = cosine_distance(q, g)
    rows = spread_rows(len(split.query), queries)
    height, width = extractor.size
    scale = max(1, round(128 / height)) if height < 128 else 1
    image = rank_list_image(dist, split.query, split.gallery, rows, top_k=top_k,
                            size=(height * scale, width * scale))
    save_image(image, out)
    return Path(out)


def tsne_picture(run, data_root, out, protocol: str | None = None, identities: int = 12, seed: int = 0,
                 device: str = "cpu") -> Path:
    """t-SNE of the trial-0 query + gallery features of the first ``identities`` identities."""
    from vireid.utils.optional import require

    manifold = require("sklearn.manifold", "viz", "the t-SNE picture")
    plt = _pyplot()
    extractor, name, split, q, g = _split_features(run, data_root, protocol, device)
    samples = split.query + split.gallery
    feats = torch.nn.functional.normalize(torch.cat([q, g]), dim=1).numpy()
    chosen = sorted({s.pid for s in samples})[:identities]
    keep = [i for i, s in enumerate(samples) if s.pid in set(chosen)]
    if len(keep) < 5:
        raise ValueError(f"only {len(keep)} test images for t-SNE in {data_root} ({name}); need at least 5")
    points = manifold.TSNE(n_components=2, perplexity=min(30.0, (len(keep) - 1) / 3), init="pca",
                           random_state=seed).fit_transform(feats[keep])
    colours = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    for modality, marker, label in ((VISIBLE, "o", "visible"), (INFRARED, "^", "infrared")):
        rows = [j for j, i in enumerate(keep) if samples[i].modality == modality]
        if rows:
            ax.scatter(points[rows, 0], points[rows, 1], marker=marker, s=36, edgecolors="black", linewidths=0.4,
                       c=[colours(chosen.index(samples[keep[j]].pid) % 20) for j in rows], label=label)
    ax.set_title(f"t-SNE of {extractor.method} test features ({name}, trial 0)\n"
                 f"{len(chosen)} identities (colour), modality (marker)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    legend = ax.legend(loc="best", fontsize=8)
    for handle in legend.legend_handles:
        handle.set_facecolor("lightgrey")
    fig.tight_layout()
    _save_figure(fig, out)
    plt.close(fig)
    return Path(out)


def _pyplot():
    from vireid.utils.optional import require

    matplotlib = require("matplotlib", "viz", "the pictures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, out) -> None:
    from vireid.utils.io import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")


# ---------------------------------------------------------------- Grad-CAM


def last_feature_map(model: torch.nn.Module, images: torch.Tensor, modality: torch.Tensor):
    """(name of the module, its output) for the last module output with spatial dimensions in a forward pass.

    Hooks on every module record outputs as they finish; a container
    finishes after its children, so the last 4-D output is the final feature
    map (layer4 / the backbone), before pooling makes it (B, D).
    """
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for name, module in model.named_modules():
        if module is model:
            continue
        hooks.append(module.register_forward_hook(
            lambda m, i, o, name=name: seen.append((name, o))
            if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[2] * o.shape[3] > 1 else None))
    try:
        feature = model(images, modality)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError(f"{type(model).__name__} produced no feature map with spatial dimensions")
    if not isinstance(feature, torch.Tensor) or feature.dim() != 2:
        raise ValueError(f"{type(model).__name__} in eval mode must return (B, D) features for Grad-CAM, "
                         f"got {type(feature).__name__}")
    name, fmap = seen[-1]
    return name, fmap, feature


def grad_cam(model: torch.nn.Module, images: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(maps (B, H, W) in [0, 1] at the input size, feature-map module name). ``model`` in eval mode."""
    model.eval()
    with torch.enable_grad():
        name, fmap, feature = last_feature_map(model, images, modality)
        score = (feature * feature.detach()).sum()  # per image: ||f||^2 with the target held fixed
        grads = torch.autograd.grad(score, fmap)[0]
    weights = grads.mean(dim=(2, 3), keepdim=True)
    # An L2-normalised embedding has a constant norm, so ||f||^2 has no gradient at all (AGW/CAJ test on the
    # normalised BN feature): weigh the channels by the map's own pooled activation instead, i.e. the
    # gradient of ||GAP(fmap)||^2, the energy the pooled feature draws from each position.
    flat = (feature.detach().norm(dim=1) - 1.0).abs() < 1e-4  # unit-norm rows: the gradient is rounding noise
    if bool(flat.any()):
        weights = torch.where(flat.view(-1, 1, 1, 1), fmap.detach().mean(dim=(2, 3), keepdim=True), weights)
    cam = torch.relu((weights * fmap).sum(1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam, size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.flatten(1).min(1).values.view(-1, 1, 1)
    high = cam.flatten(1).max(1).values.view(-1, 1, 1)
    return (cam - low) / (high - low).clamp_min(1e-12), name


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 along black-blue-red-yellow-white (no matplotlib needed)."""
    stops = np.array([[0, 0, 0], [40, 40, 200], [220, 40, 40], [250, 220, 40], [255, 255, 255]], dtype=np.float64)
    pos = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def cam_picture(run, paths: list[str], modalities: list[int], out, device: str = "cpu", alpha: float = 0.5,
                scale: int = 2) -> tuple[Path, str]:
    """Per image: the input and its Grad-CAM overlay side by side; returns (path, feature-map name)."""
    from vireid.deploy.extractor import Extractor, decode_file

    extractor = Extractor(run, device=device, workers=0)
    raw = torch.stack([decode_file(p, extractor.size, **extractor.decoding) for p in paths])
    cams, name = grad_cam(extractor.model, extractor.preprocess(raw), torch.tensor(modalities, device=device))
    height, width = extractor.size
    h, w = height * scale, width * scale
    tiles = Image.new("RGB", (2 * w * len(paths) + 4 * (len(paths) - 1), h + 14), "white")
    draw = ImageDraw.Draw(tiles)
    for i, (image, cam) in enumerate(zip(raw, cams.cpu().numpy())):
        rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
        overlay = (1 - alpha) * rgb + alpha * heat_colours(cam).astype(np.float64)
        x = i * (2 * w + 4)
        tiles.paste(Image.fromarray(rgb.astype(np.uint8)).resize((w, h), Image.BILINEAR), (x, 0))
        tiles.paste(Image.fromarray(overlay.astype(np.uint8)).resize((w, h), Image.BILINEAR), (x + w, 0))
        draw.text((x + 2, h + 1), "IR" if modalities[i] == INFRARED else "VIS", fill=(0, 0, 0))
    save_image(tiles, out)
    return Path(out), name
