"""Opening one image file, the one policy every command uses: what is refused, and how deep pixels become 8-bit.

Refused, with a message naming the file (:class:`UnreadableImage`):

* anything that is not a regular file: a FIFO named ``x.jpg`` would block
  ``open()`` for ever, so it is never opened; devices and sockets likewise;
* an empty file, or one Pillow cannot identify or decode;
* a header claiming more than :data:`MAX_PIXELS` pixels (a decompression
  bomb: a small file that would decode to gigabytes).

Deep images, as thermal cameras write them: 16-bit greyscale (Pillow modes
``I;16*``), 32-bit integer (``I``) and 32-bit float (``F``) greyscale. A
plain ``convert("RGB")`` clips them (every value above 255 becomes white),
so they are scaled to 8 bits by ``data.depth_rule``:

* ``minmax`` (default): per image, the darkest pixel becomes 0 and the
  brightest 255 (a flat image becomes 0). Robust to any sensor range, but
  the absolute temperature scale differs between images.
* ``fixed``: ``value * 255 / (2**data.depth_bits - 1)``, clipped to 0..255
  (``depth_bits: 14`` for a 14-bit sensor in a 16-bit file); float images
  are taken to hold 0..1. The same raw value always gives the same grey.

The result is replicated to three channels, like any greyscale image.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 8192 * 8192  # a person crop or a camera frame is far below; a bomb claims far more
DEPTH_RULES = ("minmax", "fixed")
DEEP_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, MemoryError)


class UnreadableImage(ValueError):
    """A file that the image policy refuses; the message names it and says why."""


def bits_per_pixel(image: Image.Image) -> int:
    """Bits per channel of a Pillow image (8 for L/RGB/P, 16 for I;16, 32 for I and F, 1 for bilevel)."""
    return DEEP_MODES.get(image.mode, 1 if image.mode == "1" else 8)


def check_file(path: str | Path) -> None:
    """Refuse a missing, non-regular or empty file without opening it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UnreadableImage(f"image not found: {path}") from None
    except OSError as exc:
        raise UnreadableImage(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a directory" if stat.S_ISDIR(info.st_mode) \
            else "not a regular file"
        raise UnreadableImage(f"cannot read image {path}: it is {kind}, not an image file (not opened)")
    if info.st_size == 0:
        raise UnreadableImage(f"cannot decode image {path}: the file is empty (0 bytes)")


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The opened (header-read, not yet decoded) image, after every check that needs no decoding."""
    check_file(path)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow's own, higher limit
        raise UnreadableImage(f"cannot decode image {path}: its header claims more than {MAX_PIXELS} pixels, a "
                              f"decompression bomb or not a person image ({exc})") from None
    except _PIL_ERRORS as exc:
        raise UnreadableImage(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UnreadableImage(f"cannot decode image {path}: its header claims {width} x {height} pixels, more "
                                  f"than {MAX_PIXELS}, a decompression bomb or not a person image")
        yield image


def decode(path: str | Path) -> Image.Image:
    """The fully decoded image (a copy, the file closed); :class:`UnreadableImage` naming the file otherwise."""
    with open_image(path) as image:
        try:
            image.load()
            return image.copy()
        except _PIL_ERRORS as exc:
            raise UnreadableImage(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None


def to_rgb(image: Image.Image, depth_rule: str = "minmax", depth_bits: int = 16) -> Image.Image:
    """An 8-bit RGB image; deep greyscale scaled by ``depth_rule`` (see the module docstring)."""
    if image.mode not in DEEP_MODES:
        return image.convert("RGB")
    if depth_rule not in DEPTH_RULES:
        raise ValueError(f"unknown depth rule {depth_rule!r}; expected one of {', '.join(DEPTH_RULES)}")
    values = np.asarray(image, dtype=np.float64)
    if depth_rule == "minmax":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    else:
        top = 1.0 if image.mode == "F" else float(2 ** depth_bits - 1)
        scaled = values * (255.0 / top)
    grey = np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def read_rgb(path: str | Path, depth_rule: str = "minmax", depth_bits: int = 16) -> Image.Image:
    """Decode ``path`` under the policy and return it as 8-bit RGB."""
    return to_rgb(decode(path), depth_rule, depth_bits)


def probe(path: str | Path) -> tuple[str | None, str | None]:
    """(problem, "MODE B-bit") of one file: what ``vireid data check`` reports per image."""
    try:
        image = decode(path)
    except UnreadableImage as exc:
        return str(exc), None
    return None, f"{image.mode} {bits_per_pixel(image)}-bit"
