"""Rank lists from vireid eval, t-SNE and Grad-CAM pictures."""

import pytest
import torch
from PIL import Image
from torch import nn

from conftest import optional
from deploy_runs import make_run, write_images
from test_folder_protocol import folder_tree
from vireid.app.runs import load_run
from vireid.cli.main import main
from vireid.deploy.pictures import grad_cam, heat_colours, spread_rows


class RedChannel(nn.Module):
    """Map channel 0 = the red input, channel 1 = green; the feature pools channel 0 only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0

    def forward(self, images, modality=None):
        return self.conv(images)[:, :1].mean(dim=(2, 3))


def test_grad_cam_shows_where_the_used_channel_is_active():
    images = torch.zeros(2, 3, 8, 8)
    images[:, 0, :, :4] = 1.0  # red on the left: the channel the feature uses
    images[:, 1, :, 4:] = 1.0  # green on the right: active, but the feature ignores it
    cams, name = grad_cam(RedChannel(), images, torch.zeros(2, dtype=torch.long))
    assert name == "conv" and cams.shape == (2, 8, 8)
    assert float(cams[:, :, 5:].max()) < 0.05 and float(cams[:, :, :3].min()) > 0.95


@pytest.mark.parametrize("method, layer", [("idkl", "branch_sh"), ("agw", "backbone"), ("mbfvrd", "backbone")])
def test_grad_cam_on_every_method(method, layer, tmp_path):
    recipe, _ = load_run(make_run(tmp_path / "run", method))
    cams, name = grad_cam(recipe.model, torch.randn(2, 3, 32, 16), torch.tensor([0, 1]))
    assert name == layer and cams.shape == (2, 32, 16)
    assert float(cams.min()) >= 0 and float(cams.max()) <= 1 and float(cams.max()) > 0.99
    assert heat_colours(cams[0].numpy()).shape == (32, 16, 3)


def test_spread_rows():
    assert spread_rows(100, 4) == [0, 33, 66, 99] and spread_rows(3, 8) == [0, 1, 2]
    with pytest.raises(ValueError, match="must be >= 1"):
        spread_rows(3, 0)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pics")
    return make_run(base / "run", "agw"), folder_tree(base / "mine", people=4)


def test_cam_command_writes_overlays(folder_run, tmp_path, capsys):
    run, _ = folder_run
    write_images(tmp_path / "imgs", 3)
    out = tmp_path / "cam.png"
    assert main(["visualize", "cam", str(run), "--images", str(tmp_path / "imgs"), "--modality", "visible",
                 "--out", str(out)]) == 0
    assert "Grad-CAM on 'backbone', 3 images" in capsys.readouterr().out
    assert Image.open(out).size == (3 * 2 * 32 + 2 * 4, 64 + 14)


def test_eval_ranklist_on_your_own_folders(folder_run, tmp_path, capsys):
    run, root = folder_run
    out = tmp_path / "ranks.png"
    assert main(["eval", str(run), "--data-root", str(root), "--protocol", "folder/i2v", "--ranklist", "3",
                 "--ranklist-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "folder/i2v mean" in printed and f"wrote {out}" in printed
    assert Image.open(out).size[1] == 3 * (128 + 8)


def test_tsne_picture(folder_run, tmp_path):
    optional("sklearn")
    optional("matplotlib")
    run, root = folder_run
    out = tmp_path / "tsne.png"
    assert main(["visualize", "tsne", str(run), "--data-root", str(root), "--protocol", "folder/i2v",
                 "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 300
