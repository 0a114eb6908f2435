"""Rank-list pictures: each query followed by its top-k gallery images, borders green (same identity) or red.

In a cross-modality ranking the modality is what the reader must see at a glance (an infrared query
should be matched to visible images), so each image carries a corner tag: "IR" on purple for
infrared, "RGB" on yellow for visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from vireid.data.records import Sample
from vireid.utils.io import atomic_path

GREEN, RED, GREY = (40, 170, 60), (210, 40, 40), (120, 120, 120)
MODALITY_TAGS = {0: ("RGB", (250, 210, 40), (0, 0, 0)), 1: ("IR", (120, 40, 170), (255, 255, 255))}  # VIS, IR
TAG_HEIGHT = 11


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
        _paste(canvas, query[qi].path, 0, r * cell_h, size, border, GREY)
        if mark_modality:
            _tag(canvas, query[qi].modality, border, r * cell_h + border)
        for c, gi in enumerate(order):
            colour = GREEN if gallery[gi].pid == query[qi].pid else RED
            x = gap + (c + 1) * cell_w
            _paste(canvas, gallery[gi].path, x, r * cell_h, size, border, colour)
            if mark_modality:
                _tag(canvas, gallery[gi].modality, x + border, r * cell_h + border)
    return canvas


def _tag(canvas: Image.Image, modality: int, x: int, y: int) -> None:
    """The modality's label box at (x, y)."""
    if modality not in MODALITY_TAGS:
        raise ValueError(f"unknown modality {modality!r}; expected 0 (visible) or 1 (infrared)")
    text, fill, ink = MODALITY_TAGS[modality]
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([x, y, x + 6 * len(text) + 3, y + TAG_HEIGHT - 1], fill=fill)
    draw.text((x + 2, y), text, fill=ink)


def _paste(canvas: Image.Image, path: str, x: int, y: int, size: tuple[int, int], border: int, colour) -> None:
    h, w = size
    ImageDraw.Draw(canvas).rectangle([x, y, x + w + 2 * border - 1, y + h + 2 * border - 1], fill=colour)
    with Image.open(path) as image:
        canvas.paste(image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), (x + border, y + border))


def save_image(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
