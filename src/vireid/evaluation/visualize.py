"""Rank-list pictures: each query followed by its top-k gallery images, borders green (same identity) or red.

Each image carries a modality tag in its bottom-left corner ("VIS" on white,
"IR" on black), so a cross-modality rank list shows which side each image is
from; search results without labels get a neutral blue border.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vireid.data.image_file import read_rgb
from vireid.data.records import Sample
from vireid.utils.io import atomic_path

GREEN, RED, GREY, BLUE = (40, 170, 60), (210, 40, 40), (120, 120, 120), (60, 110, 200)
TAGS = {0: ("VIS", (255, 255, 255), (0, 0, 0)), 1: ("IR", (0, 0, 0), (255, 255, 255))}


def rank_list_image(distmat, query: Sequence[Sample], gallery: Sequence[Sample], rows: Sequence[int],
                    top_k: int = 10, size: tuple[int, int] = (128, 64), border: int = 4, gap: int = 12,
                    mark_modality: bool = True) -> Image.Image:
    """One row per query index in ``rows``: the query (grey border), a gap, then its top_k gallery images.

    Ranking is by ascending distance with ties by gallery index, the order the metrics use. With
    ``mark_modality`` each image gets its modality tag (:data:`MODALITY_TAGS`) in its top-left corner.
    """
    dist = torch.as_tensor(np.asarray(distmat) if not isinstance(distmat, torch.Tensor) else distmat).cpu()
    if dist.shape != (len(query), len(gallery)):
        raise ValueError(f"distmat has shape {tuple(dist.shape)}, expected ({len(query)}, {len(gallery)})")
    top_k = min(top_k, len(gallery))
    h, w = size
    cell_w, cell_h = w + 2 * border, h + 2 * border
    canvas = Image.new("RGB", (cell_w * (top_k + 1) + gap, cell_h * len(rows)), "white")
    for r, qi in enumerate(rows):
        order = torch.sort(dist[qi], stable=True).indices[:top_k].tolist()
        tag = (lambda s: s.modality) if mark_modality else (lambda s: None)  # noqa: E731
        _paste(canvas, query[qi].path, 0, r * cell_h, size, border, GREY, tag(query[qi]))
        for c, gi in enumerate(order):
            colour = GREEN if gallery[gi].pid == query[qi].pid else RED
            _paste(canvas, gallery[gi].path, gap + (c + 1) * cell_w, r * cell_h, size, border, colour,
                   tag(gallery[gi]))
    return canvas


def search_grid_image(rows: Sequence[tuple[str, int, Sequence[tuple[str, int]]]], size: tuple[int, int] = (128, 64),
                      border: int = 4, gap: int = 12) -> Image.Image:
    """Search results without labels: per row (query path, query modality, [(result path, modality), ...]).

    The query has a grey border, results a blue one (no identity to judge
    them by); every image is tagged with its modality.
    """
    top_k = max((len(results) for _, _, results in rows), default=0)
    h, w = size
    cell_w, cell_h = w + 2 * border, h + 2 * border
    canvas = Image.new("RGB", (cell_w * (top_k + 1) + gap, cell_h * max(len(rows), 1)), "white")
    for r, (qpath, qmod, results) in enumerate(rows):
        _paste(canvas, qpath, 0, r * cell_h, size, border, GREY, qmod)
        for c, (path, mod) in enumerate(results):
            _paste(canvas, path, gap + (c + 1) * cell_w, r * cell_h, size, border, BLUE, mod)
    return canvas


def _paste(canvas: Image.Image, path: str, x: int, y: int, size: tuple[int, int], border: int, colour,
           modality: int | None = None) -> None:
    h, w = size
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([x, y, x + w + 2 * border - 1, y + h + 2 * border - 1], fill=colour)
    try:
        image = read_rgb(path)  # the one file policy: a FIFO is never opened, a bomb is refused
    except ValueError:  # shown as a grey tile: the picture still tells the other results apart
        image = Image.new("RGB", (w, h), (128, 128, 128))
    canvas.paste(image.resize((w, h), Image.Resampling.BILINEAR), (x + border, y + border))
    if modality in TAGS:
        text, fill, ink = TAGS[modality]
        left, bottom = x + border, y + border + h
        box = draw.textbbox((0, 0), text)
        tw, th = box[2] - box[0], box[3] - box[1]
        draw.rectangle([left, bottom - th - 4, left + tw + 3, bottom - 1], fill=fill)
        draw.text((left + 2 - box[0], bottom - th - 2 - box[1]), text, fill=ink)


def save_image(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
