import numpy as np
import pytest
from PIL import Image

from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.evaluation.visualize import GREEN, MODALITY_TAGS, RED, rank_list_image, save_image


def test_rank_list_borders_follow_identity(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 40), colour).save(p)
        paths.append(str(p))
    query = [Sample(paths[0], 7, 3, INFRARED)]
    gallery = [Sample(paths[1], 8, 1, VISIBLE), Sample(paths[2], 7, 1, VISIBLE)]
    image = rank_list_image(np.array([[0.5, 0.1]]), query, gallery, rows=[0], top_k=2, size=(40, 20),
                            border=3, gap=5)
    assert image.size == (3 * 26 + 5, 46)
    assert image.getpixel((5 + 26 + 1, 1)) == GREEN  # rank 1 is the true match (distance 0.1)
    assert image.getpixel((5 + 52 + 1, 1)) == RED
    assert image.getpixel((5 + 26 + 10, 20)) == (0, 255, 0)  # its pixels are pasted inside the border
    assert image.getpixel((3 + 1, 3 + 10)) == MODALITY_TAGS[INFRARED][1]  # the query is tagged infrared
    assert image.getpixel((5 + 26 + 3 + 1, 3 + 10)) == MODALITY_TAGS[VISIBLE][1]  # the gallery image visible
    plain = rank_list_image(np.array([[0.5, 0.1]]), query, gallery, rows=[0], top_k=2, size=(40, 20),
                            border=3, gap=5, mark_modality=False)
    assert plain.getpixel((3 + 1, 3 + 10)) == (255, 0, 0)
    save_image(image, tmp_path / "out" / "ranks.png")
    assert Image.open(tmp_path / "out" / "ranks.png").size == image.size


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"distmat has shape \(1, 1\), expected \(1, 2\)"):
        rank_list_image(np.zeros((1, 1)), [Sample("q", 1, 3, 1)], [Sample("a", 1, 1, 0)] * 2, rows=[0])
