import numpy as np
import pytest
import torch
from PIL import Image

from vireid.data.augmentations import train_transforms
from vireid.data.channel_aug import (
    CAJ_ERASING_FILL,
    ChannelAdapGray,
    ChannelExchange,
    ChannelRandomErasing,
    train_transform,
)
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    HorizontalFlip,
    Normalize,
    PadCrop,
    RandomErasing,
    RandomGrayscale,
    ToFloat,
    eval_transform,
    load_image,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def image_batch(b=6, h=24, w=12, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), generator=gen(seed), dtype=torch.uint8)


def test_load_image_resizes_with_lanczos_and_makes_grey_rgb(tmp_path):
    grey = np.arange(40 * 20, dtype=np.uint8).reshape(40, 20)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png", (16, 8))
    assert x.shape == (3, 16, 8) and x.dtype == torch.uint8
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    expected = np.asarray(Image.fromarray(grey, "L").convert("RGB").resize((8, 16), Image.LANCZOS))
    assert np.array_equal(x.permute(1, 2, 0).numpy(), expected)


def test_pad_crop_is_a_window_of_the_zero_padded_image():
    x = image_batch()
    out = PadCrop(3)(x, gen(1))
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(len(x)):
        windows = [(t, l) for t in range(7) for l in range(7)
                   if torch.equal(padded[i, :, t:t + 24, l:l + 12], out[i])]
        assert windows, i
    offsets = {tuple(torch.nonzero(out[i].sum(0) != 0)[0].tolist()) for i in range(len(x))}
    assert len(offsets) > 1  # different images, different crops


def test_flip_probability_extremes_and_single_images():
    x = image_batch()
    assert torch.equal(HorizontalFlip(1.0)(x, gen()), x.flip(-1))
    assert torch.equal(HorizontalFlip(0.0)(x, gen()), x)
    assert HorizontalFlip(0.5)(x[0], gen()).shape == (3, 24, 12)
    with pytest.raises(ValueError, match=r"HorizontalFlip expects \(3, H, W\) or \(B, 3, H, W\), got shape \(24, 12\)"):
        HorizontalFlip()(x[0, 0])


def test_normalise_and_to_float():
    x = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = Normalize()(ToFloat()(x))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 0, 0], expected)
    with pytest.raises(ValueError, match="ToFloat expects a uint8 image, got torch.float32"):
        ToFloat()(out)


def test_random_erasing_rectangle_area_and_fill():
    x = torch.zeros(200, 3, 32, 16)
    out = ChannelRandomErasing(p=1.0)(x, gen(2))
    erased = (out != 0).any(1)
    area = erased.float().mean(dim=(1, 2))
    assert torch.all(area > 0) and torch.all(area <= 0.4 + 0.06)
    for i in range(5):
        rows, cols = torch.nonzero(erased[i], as_tuple=True)
        box = erased[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # one solid rectangle
        assert torch.allclose(out[i, :, rows[0], cols[0]], torch.tensor(CAJ_ERASING_FILL))
    skipped = RandomErasing(p=0.0)(x, gen(2))
    assert torch.equal(skipped, x)
    half = ChannelRandomErasing(p=0.5)(x, gen(3))
    assert 0.35 < (half != 0).flatten(1).any(1).float().mean() < 0.65


def test_channel_exchange_never_grays_with_the_reference_setting():
    x = torch.randn(3000, 3, 4, 4, generator=gen(4))
    out = ChannelExchange(gray=2)(x, gen(5))
    copies = [torch.all(out == x[:, c:c + 1], dim=(1, 2, 3)) for c in range(3)]
    assert torch.stack(copies).sum(0).eq(1).all()  # every image is exactly one channel copy
    freq = torch.stack(copies).float().mean(1)
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.04)
    gray = ChannelExchange(gray=3)(x[:1000], gen(6))
    weights = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)
    is_gray = torch.all(torch.isclose(gray, (x[:1000] * weights).sum(1, keepdim=True)), dim=(1, 2, 3))
    assert 0.18 < is_gray.float().mean() < 0.32


def test_channel_adap_gray_probabilities():
    x = torch.randn(8000, 3, 2, 2, generator=gen(7))
    out = ChannelAdapGray(0.5)(x, gen(8))
    weights = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)
    kinds = torch.stack([torch.all(out == x[:, c:c + 1], dim=(1, 2, 3)) for c in range(3)]
                        + [torch.all(torch.isclose(out, (x * weights).sum(1, keepdim=True)), dim=(1, 2, 3)),
                           torch.all(out == x, dim=(1, 2, 3))])
    assert kinds.sum(0).eq(1).all()
    expected = torch.tensor([0.25, 0.25, 0.25, 0.125, 0.125])
    assert torch.allclose(kinds.float().mean(1), expected, atol=0.02)


@pytest.mark.parametrize("view", ["plain", "visible", "visible_exchange", "infrared"])
def test_pipelines_shapes_ranges_and_determinism(view):
    x = image_batch(4, 32, 16)
    pipeline = train_transform(view)
    a, b = pipeline(x, gen(9)), pipeline(x, gen(9))
    assert a.shape == (4, 3, 32, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, pipeline(x, gen(10)))
    low = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD)
    high = (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD)
    assert low - 1e-5 <= a.min() and a.max() <= high + 1e-5
    single = pipeline(x[0], gen(9))
    assert single.shape == (3, 32, 16)


def test_unknown_view_and_eval_transform():
    with pytest.raises(ValueError, match="unknown view 'thermal'; expected one of plain, visible, visible_exchange, infrared"):
        train_transform("thermal")
    x = image_batch(2)
    assert torch.equal(eval_transform()(x), Normalize()(ToFloat()(x)))


def test_random_grayscale_makes_luminance_in_every_channel_for_about_p_of_the_images():
    x = torch.rand(400, 3, 4, 2)
    out = RandomGrayscale(0.5)(x, torch.Generator().manual_seed(0))
    grey = (out[:, 0] == out[:, 1]).all((1, 2)) & (out[:, 1] == out[:, 2]).all((1, 2))
    assert 150 < int(grey.sum()) < 250
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[grey, 0], luma[grey])
    assert torch.equal(out[~grey], x[~grey])  # the others untouched
    assert torch.equal(RandomGrayscale(0.0)(x), x)
    single = RandomGrayscale(1.0)(x[0])
    assert single.shape == (3, 4, 2) and torch.allclose(single[0], single[2])
    with pytest.raises(ValueError, match="float RGB"):
        RandomGrayscale(1.0)(torch.zeros(2, 3, 4, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="probability"):
        RandomGrayscale(1.5)


def test_gray_augmentation_greys_only_visible_images():
    pipes = train_transforms("gray", padding=0, erasing=0.0)
    x = torch.randint(0, 256, (64, 3, 8, 4), dtype=torch.uint8)
    for modality, expect_some_grey in ((VISIBLE, True), (INFRARED, False)):
        out = pipes[modality](x, torch.Generator().manual_seed(1))
        grey = (out[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0] - out[:, 1] * IMAGENET_STD[1] - IMAGENET_MEAN[1]).abs()
        assert bool((grey.amax((1, 2)) < 1e-5).any()) == expect_some_grey
