"""Synthetic target domains: shifted copies of a dataset (DAN's protocol) and robustness tests for any model.

Four kinds, each a pure function of (image, random generator); a dataset copy
seeds every image from (seed, its relative path), so the result does not
depend on the order or number of images processed:

* ``noise`` -- additive random noise, x' = x + r, r ~ N(0, sigma^2) per pixel and channel.
* ``lighting`` -- x' = Gamma(HSV(GaussianFilter(x))): a Gaussian blur, then the
  HSV value channel V is mapped to gain * V^gamma with hue and saturation kept.
  Scaling R, G and B of a pixel by the same factor keeps H and S and scales V,
  so the HSV round trip is done exactly as ``rgb * V' / V``.
* ``color`` -- background-colour change in the DCT domain (per channel,
  orthonormal 2-D DCT): x' = IDCT(w1 * DCT(x) * H + m) with the Gaussian
  high-pass H(u, v) = 1 - exp(-(u^2 + v^2) / (2 R^2)) (u, v: frequency
  indices) and m a random colour placed on the DC coefficient (H(0, 0) = 0
  removes the old mean colour, m puts a new one). RGB (visible) images only:
  the paper writes it for x_r; infrared images are copied unchanged.
* ``occlusion`` -- one rectangle of random size (a fraction of the area),
  aspect, position and colour painted over the image.

Images are uint8 (H, W, 3). A grey image (R = G = B, e.g. infrared) stays grey
under every kind (one noise value or colour for the three channels). Reference: DAN, Fu et al., TCSVT 2022
(synthetic target domains); the parameter ranges are ours (the paper gives none).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.utils.io import atomic_path

KINDS = ("noise", "lighting", "color", "occlusion")
VISIBLE_ONLY_KINDS = ("color",)  # the paper's colour shift is written for RGB images x_r
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# First folder of an image's relative path -> is it infrared, in every layout vireid reads
# (SYSU cam1-6, RegDB Visible/Thermal, LLCM train_/test_ vis/nir, folder visible/infrared).
TOP_FOLDER_INFRARED = {"cam3": True, "cam6": True, "Thermal": True, "train_nir": True, "test_nir": True,
                       "infrared": True, "cam1": False, "cam2": False, "cam4": False, "cam5": False,
                       "Visible": False, "train_vis": False, "test_vis": False, "visible": False}


def is_infrared_path(relpath: str) -> bool:
    """Whether an image path (relative to a dataset root) is infrared, from its top folder."""
    top = Path(relpath).parts[0] if Path(relpath).parts else ""
    if top not in TOP_FOLDER_INFRARED:
        raise ValueError(f"cannot tell the modality of {relpath!r}: its top folder {top!r} is none of "
                         f"{', '.join(sorted(TOP_FOLDER_INFRARED))} (SYSU-MM01, RegDB, LLCM or folder layout)")
    return TOP_FOLDER_INFRARED[top]


@dataclass(frozen=True)
class DomainParams:
    """Ranges the random shifts are drawn from (one draw per image)."""

    noise_sigma: float = 25.0           # noise: standard deviation in grey levels (0-255)
    blur_sigma: float = 1.0             # lighting: Gaussian filter sigma in pixels
    gamma: tuple = (1.5, 2.5)           # lighting: V' = gain * V^gamma (V in [0, 1]); darker, lower contrast
    gain: tuple = (0.6, 1.0)
    radius: float = 2.0                 # color: R of the Gaussian high-pass, in DCT frequency indices
    w1: float = 1.0                     # color: weight of the kept (high-passed) content
    mean_color: tuple = (40.0, 215.0)   # color: range of the new mean colour per channel (grey levels)
    occlusion_area: tuple = (0.1, 0.3)  # occlusion: rectangle area as a fraction of the image
    occlusion_aspect: tuple = (0.5, 2.0)  # occlusion: height / width of the rectangle (relative to the image's)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{getattr(image, 'dtype', type(image).__name__)} of shape {getattr(image, 'shape', None)}"
        raise ValueError(f"image must be a uint8 array of shape (H, W, 3), got {got}")
    return image


def is_grey(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 25.0) -> np.ndarray:
    """x + r, r ~ N(0, sigma^2) per pixel and channel (per pixel for a grey image), clipped to 0..255."""
    _check_image(image)
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    shape = image.shape[:2] + ((1,) if is_grey(image) else (3,))
    return _to_uint8(image.astype(np.float64) + rng.normal(0.0, sigma, size=shape))


def gamma_value(image: np.ndarray, gamma: float, gain: float = 1.0) -> np.ndarray:
    """HSV value V -> gain * V^gamma with hue and saturation unchanged (float output in 0..255)."""
    x = image.astype(np.float64) / 255.0
    v = x.max(axis=2, keepdims=True)
    new_v = gain * np.power(v, gamma)
    scale = np.divide(new_v, v, out=np.zeros_like(v), where=v > 0)
    return x * scale * 255.0


def change_lighting(image: np.ndarray, rng: np.random.Generator, blur_sigma: float = 1.0,
                    gamma: tuple = (1.5, 2.5), gain: tuple = (0.6, 1.0)) -> np.ndarray:
    """Gamma(HSV(GaussianFilter(x))) with gamma and gain drawn uniformly from their ranges."""
    from scipy.ndimage import gaussian_filter

    _check_image(image)
    g, k = rng.uniform(*gamma), rng.uniform(*gain)
    blurred = gaussian_filter(image.astype(np.float64), sigma=(blur_sigma, blur_sigma, 0)) if blur_sigma > 0 \
        else image.astype(np.float64)
    return _to_uint8(gamma_value(_to_uint8(blurred), g, k))


def highpass(shape: tuple[int, int], radius: float) -> np.ndarray:
    """H(u, v) = 1 - exp(-(u^2 + v^2) / (2 R^2)) on the DCT frequency grid of an (H, W) image."""
    if radius <= 0:
        raise ValueError(f"high-pass radius R must be > 0, got {radius}")
    u = np.arange(shape[0])[:, None]
    v = np.arange(shape[1])[None, :]
    return 1.0 - np.exp(-(u ** 2 + v ** 2) / (2.0 * radius ** 2))


def dct_recolor(image: np.ndarray, mean_color, radius: float = 2.0, w1: float = 1.0) -> np.ndarray:
    """IDCT(w1 * DCT(x) * H + m) per channel, m = the new mean colour on the DC term (float, unclipped).

    With the orthonormal DCT the DC coefficient of an (H, W) channel is
    sqrt(H * W) times its mean, so the output's mean colour is ``mean_color``.
    """
    from scipy.fft import dctn, idctn

    x = _check_image(image).astype(np.float64)
    h, w, _ = x.shape
    mask = highpass((h, w), radius)
    mean_color = np.broadcast_to(np.asarray(mean_color, dtype=np.float64), (3,))
    out = np.empty_like(x)
    for c in range(3):
        coef = w1 * dctn(x[..., c], norm="ortho") * mask
        coef[0, 0] += mean_color[c] * np.sqrt(h * w)
        out[..., c] = idctn(coef, norm="ortho")
    return out


def change_color(image: np.ndarray, rng: np.random.Generator, radius: float = 2.0, w1: float = 1.0,
                 mean_color: tuple = (40.0, 215.0)) -> np.ndarray:
    """:func:`dct_recolor` with a random new mean colour (one grey level for a grey image)."""
    _check_image(image)
    colour = rng.uniform(*mean_color, size=1 if is_grey(image) else 3)
    return _to_uint8(dct_recolor(image, colour, radius, w1))


def occlusion_box(shape: tuple[int, int], rng: np.random.Generator, area: tuple = (0.1, 0.3),
                  aspect: tuple = (0.5, 2.0)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random rectangle inside an (H, W) image."""
    h, w = shape
    a = rng.uniform(*area) * h * w
    r = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]))) * h / w
    bh = int(np.clip(round(np.sqrt(a * r)), 1, h))
    bw = int(np.clip(round(a / bh), 1, w))
    top = int(rng.integers(0, h - bh + 1))
    left = int(rng.integers(0, w - bw + 1))
    return top, left, bh, bw


def occlude(image: np.ndarray, rng: np.random.Generator, area: tuple = (0.1, 0.3),
            aspect: tuple = (0.5, 2.0)) -> np.ndarray:
    """One rectangle of random size, position and colour (grey for a grey image) over the image."""
    _check_image(image)
    top, left, bh, bw = occlusion_box(image.shape[:2], rng, area, aspect)
    colour = rng.integers(0, 256, size=1 if is_grey(image) else 3)
    out = image.copy()
    out[top:top + bh, left:left + bw] = colour.astype(np.uint8)
    return out


def shift_image(image: np.ndarray, kind: str, rng: np.random.Generator,
                params: DomainParams = DomainParams(), infrared: bool = False) -> np.ndarray:
    """The image in the synthetic domain ``kind`` (one of :data:`KINDS`); an ``infrared`` image is returned
    unchanged by the visible-only kinds (:data:`VISIBLE_ONLY_KINDS`)."""
    if kind in VISIBLE_ONLY_KINDS and infrared:
        return _check_image(image).copy()
    if kind == "noise":
        return add_noise(image, rng, params.noise_sigma)
    if kind == "lighting":
        return change_lighting(image, rng, params.blur_sigma, params.gamma, params.gain)
    if kind == "color":
        return change_color(image, rng, params.radius, params.w1, params.mean_color)
    if kind == "occlusion":
        return occlude(image, rng, params.occlusion_area, params.occlusion_aspect)
    raise ValueError(f"unknown domain kind {kind!r}; expected one of {', '.join(KINDS)}")


def image_rng(seed: int, relpath: str) -> np.random.Generator:
    """The generator of one image: a pure function of (seed, relative path)."""
    key = zlib.crc32(Path(relpath).as_posix().encode("utf-8"))
    return np.random.default_rng([int(seed), key])


def shift_file(src: Path, dst: Path, kind: str, seed: int, relpath: str,
               params: DomainParams = DomainParams()) -> None:
    """Read ``src``, shift it, write ``dst`` atomically in the same format. An infrared image under a
    visible-only kind is copied byte for byte."""
    infrared = kind in VISIBLE_ONLY_KINDS and is_infrared_path(relpath)
    if infrared:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return
    with Image.open(src) as img:
        fmt = img.format
        array = np.asarray(img.convert("RGB"))
    out = Image.fromarray(shift_image(array, kind, image_rng(seed, relpath), params))
    options = {"quality": 95} if (fmt or "").upper() == "JPEG" else {}
    with atomic_path(dst) as tmp:
        out.save(tmp, format=fmt or "PNG", **options)


def synth_domain(in_root: str | os.PathLike, out_root: str | os.PathLike, kind: str, seed: int = 0,
                 params: DomainParams = DomainParams(), overwrite: bool = False) -> dict:
    """Write a copy of the dataset ``in_root`` to ``out_root`` with every image shifted to domain ``kind``.

    Every other file (lists, splits, .mat) is copied unchanged, so the copy
    has the same layout and readers and protocols work on it. The copy is
    built in a temporary sibling folder and renamed into place at the end.
    Returns {"images": n, "files": n copied unchanged, "root", "kind"}.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown domain kind {kind!r}; expected one of {', '.join(KINDS)}")
    src, out = Path(in_root), Path(out_root)
    if not src.is_dir():
        raise FileNotFoundError(f"input dataset root not found: {src}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"output {out} must not be the input root {src} or inside it")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output folder {out} exists and is not empty; pass overwrite=True (--overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp makes it private; the dataset should not be
    images = files = 0
    try:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            target = tmp / rel
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                shift_file(path, target, kind, seed, rel.as_posix(), params)
                images += 1
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                files += 1
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"root": str(out), "kind": kind, "images": images, "files": files}


def domain_grid(images: list[np.ndarray], seed: int = 0, params: DomainParams = DomainParams(),
                gap: int = 2, infrared: list[bool] | None = None) -> np.ndarray:
    """A before/after sheet: row 0 the originals, then one row per kind in :data:`KINDS` (uint8, white gaps).

    ``infrared`` flags the infrared images (default: the grey ones, as synthetic infrared images are).
    """
    if not images:
        raise ValueError("domain_grid needs at least one image")
    h, w, _ = _check_image(images[0]).shape
    flags = [is_grey(im) for im in images] if infrared is None else list(infrared)
    if len(flags) != len(images):
        raise ValueError(f"infrared has {len(flags)} flags for {len(images)} images")
    rows = [list(images)] + [[shift_image(im, kind, image_rng(seed, f"{kind}/{i}"), params, ir)
                              for i, (im, ir) in enumerate(zip(images, flags))] for kind in KINDS]
    sheet = np.full((len(rows) * (h + gap) - gap, len(images) * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            if im.shape != (h, w, 3):
                raise ValueError(f"all images must have shape {(h, w, 3)}, got {im.shape}")
            sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = im
    return sheet
