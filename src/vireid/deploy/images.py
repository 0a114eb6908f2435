"""Which images to embed: a folder (recursively), one image file, or a list file of ``path [modality]`` lines."""

from __future__ import annotations

from pathlib import Path

from vireid.data.datasets.base import IMAGE_SUFFIXES
from vireid.data.records import parse_modality


def list_images(source: str | Path) -> tuple[list[str], list[int | None]]:
    """(paths, per-image modality or None) from a folder, an image file or a list file.

    A list file holds one image per line, optionally followed by its modality
    (``cam3/0001.jpg infrared``); relative paths are relative to the list's
    folder; blank lines and ``#`` comments are skipped.
    """
    source = Path(source)
    if source.is_dir():
        # not is_file(): a FIFO or socket named like an image is listed, then reported as skipped, not hidden
        paths = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        if not paths:
            raise ValueError(f"no images found under {source} (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                             "in sub-folders too)")
        return paths, [None] * len(paths)
    if not source.is_file():
        raise FileNotFoundError(f"no image folder, image file or list file at {source}")
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return [str(source)], [None]
    paths, modalities = [], []
    for _number, line in enumerate(_list_lines(source), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        modality = None
        if len(parts) == 2:
            try:
                modality = parse_modality(parts[1])
                line = parts[0]
            except ValueError:
                modality = None  # a path with a space in it
        path = Path(line)
        paths.append(str(path if path.is_absolute() else source.parent / path))
        modalities.append(modality)
    if not paths:
        raise ValueError(f"list file {source} names no images (expected lines 'path [visible|infrared]')")
    return paths, modalities


def _list_lines(source: Path) -> list[str]:
    """The lines of a list file; a binary file (an image with an unknown suffix, an archive) is refused by name."""
    data = source.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text, where = None, exc.start
    else:
        where = text.find("\0")
    if text is None or where >= 0:
        raise ValueError(f"{source} is not a list file: it holds binary data (at byte {where}), not UTF-8 lines "
                         f"'path [modality]'; images need one of the suffixes {', '.join(IMAGE_SUFFIXES)}")
    return text.splitlines()


def fill_modalities(paths: list[str], modalities: list[int | None], default: str | None) -> list[int]:
    """Per-image modalities, the default where a list line gave none; an error naming the first image with none."""
    fallback = parse_modality(default) if default is not None else None
    out = [m if m is not None else fallback for m in modalities]
    missing = [p for p, m in zip(paths, out) if m is None]
    if missing:
        raise ValueError(f"no modality for {missing[0]} ({len(missing)} of {len(paths)} images): pass "
                         "--modality visible|infrared or give one per line in a list file")
    return out
