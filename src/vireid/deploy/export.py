"""Export a run's eval-mode ``(images, modality) -> features`` graph to ONNX or TorchScript, with proven parity.

The graph takes preprocessed images (float32 (B, 3, H, W) at the run's input
size, ImageNet-normalised) and a modality vector (int64 (B,), 0 visible, 1
infrared) and returns the run's test feature (float32 (B, D)), flip averaging
included when the run uses it. The batch axis is dynamic.

After writing, the exported file is loaded with its own runtime
(onnxruntime, ``torch.jit.load``) and run on a batch of real images with
both modalities; the largest absolute difference from the PyTorch model is
reported and the export fails (nothing written) above the tolerance. The
file is traced at batch 2 and checked at another batch size, so the dynamic
axis is checked too.

Two-stream models route each image to its modality's stem; in an exported
graph both stems run on every image and a per-sample select picks the
result (:meth:`vireid.models.reid_net.Backbone._stem_select`; a model with
``stems`` of its own, such as the ``plain`` baseline's, gets the same
select while it is exported, :func:`select_stems`). Models whose
feature does not depend on the modality (IDKL) still take the input, so one
runner serves every method.
"""

from __future__ import annotations

import contextlib
import json
import logging
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vireid.evaluation.finite import check_finite
from vireid.utils.io import atomic_path
from vireid.utils.optional import require

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-4
INPUT_NAMES, OUTPUT_NAMES = ["images", "modality"], ["features"]


class ExportParityError(ValueError):
    """The exported model's features differ from PyTorch's by more than the tolerance."""


class EmbedGraph(nn.Module):
    """``recipe.embed`` as a module: (images, modality) -> float32 features, eval mode."""

    def __init__(self, recipe):
        super().__init__()
        self.recipe = recipe
        self.model = recipe.model.eval()

    def forward(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        feat = self.recipe.embed(images, modality).float()
        # a numerical no-op that keeps the modality input in graphs whose feature ignores it
        return feat + (modality.to(feat.dtype) * 0.0).unsqueeze(1)


def _select_stem(module, images: torch.Tensor, modality: torch.Tensor | None) -> torch.Tensor:
    """Both stems on every image, then a per-sample choice: no data-dependent shapes for the tracer."""
    from vireid.data.records import INFRARED

    if modality is None:
        raise ValueError("a two-stem network needs the modality input when exported")
    infrared = (modality == INFRARED).view(-1, 1, 1, 1)
    return torch.where(infrared, module.stems[1](images), module.stems[0](images))


@contextlib.contextmanager
def select_stems(model: nn.Module):
    """While exporting, give two-stem modules that route images by boolean masks (``stem(images, modality)``
    over ``stems``, as :class:`vireid.models.plain_cnn.PlainCNN`) the select-based stem; the masks' dynamic
    shapes cannot be traced with a dynamic batch. Per image the result is the same (eval-mode BN is per sample).
    """
    patched = [m for m in model.modules() if getattr(m, "two_stream", False) and isinstance(
        getattr(m, "stems", None), nn.ModuleList) and len(m.stems) == 2 and callable(getattr(m, "stem", None))
        and not hasattr(m, "_stem_select")]  # the ResNet Backbone has its own export path
    for module in patched:
        module.stem = types.MethodType(_select_stem, module)
    try:
        yield
    finally:
        for module in patched:
            del module.stem


@dataclass
class ExportReport:
    path: Path
    format: str
    method: str
    batch: int
    feature_dim: int
    max_abs_diff: float
    tolerance: float

    def line(self) -> str:
        return (f"{self.format} export of {self.method} -> {self.path}: max abs diff {self.max_abs_diff:.3g} "
                f"on {self.batch} real images (tolerance {self.tolerance:g}), feature width {self.feature_dim}")


def parity_images(paths: list[str], size: tuple[int, int], limit: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``limit`` decoded images (uint8) and alternating modalities 0, 1, 0, ... (both stems exercised)."""
    from vireid.deploy.extractor import decode_file

    images = []
    for path in paths:
        try:
            images.append(decode_file(path, size))
        except ValueError:
            continue
        if len(images) == limit:
            break
    if len(images) < 3:
        raise ValueError(f"the parity check needs at least 3 decodable images, found {len(images)} "
                         f"among {len(paths)} given")
    return torch.stack(images), torch.arange(len(images)) % 2


def images_from_run(run_dir: Path, limit: int = 64) -> list[str]:
    """Images under the data root the run was trained on (from run.json's command line), if it still exists."""
    from vireid.data.datasets.base import IMAGE_SUFFIXES

    info = run_dir / "run.json"
    if not info.is_file():
        return []
    argv = json.loads(info.read_text()).get("command") or []
    root = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--data-root", "--source")), None)
    if root is None or not Path(root).is_dir():
        return []
    found = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(str(path))
            if len(found) == limit:
                break
    return found


def export_run(run_or_checkpoint: str | Path, fmt: str, out: str | Path, images: list[str] | None = None, *,
               batch: int = 8, opset: int = 17, tolerance: float = PARITY_TOLERANCE) -> ExportReport:
    """Export, reload with the target runtime, compare on real images; raise above ``tolerance``."""
    from vireid.deploy.extractor import Extractor, resolve_checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    checkpoint = resolve_checkpoint(run_or_checkpoint)
    if images is None:
        images = images_from_run(checkpoint.parent)
        if not images:
            raise ValueError(f"no images for the parity check: pass --images (the data root in "
                             f"{checkpoint.parent / 'run.json'} is not available)")
    extractor = Extractor(checkpoint, device="cpu", amp=False)
    graph = EmbedGraph(extractor.recipe)
    raw, modality = parity_images(images, extractor.size, max(batch, 3))
    x = extractor.preprocess(raw)
    with torch.inference_mode():
        expected = graph(x, modality)
    # Non-finite reference features leave nothing to compare an export with: name the layer instead.
    check_finite(expected, graph, lambda: graph(x, modality), f"the parity images of {checkpoint}")
    example = (x[:2].clone(), modality[:2].clone())
    out = Path(out)
    with atomic_path(out) as tmp, select_stems(graph.model):
        if fmt == "onnx":
            got = _onnx(graph, example, tmp, opset, x, modality)
        else:
            got = _torchscript(graph, example, tmp, x, modality)
        diff = float((got - expected).abs().max())
        if not diff <= tolerance:  # also catches NaN
            raise ExportParityError(f"{fmt} export of {checkpoint} differs from PyTorch by max abs diff {diff:.3g} "
                                    f"(> {tolerance:g}) on {len(x)} images; nothing written to {out}")
    return ExportReport(out, fmt, extractor.method, len(x), int(expected.shape[1]), diff, tolerance)


def _onnx(graph, example, path: Path, opset: int, x, modality) -> torch.Tensor:
    require("onnx", "export", "ONNX export")
    ort = require("onnxruntime", "export", "running the exported ONNX model")
    with torch.no_grad():
        torch.onnx.export(graph, example, str(path), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                          dynamic_axes={n: {0: "batch"} for n in INPUT_NAMES + OUTPUT_NAMES},
                          opset_version=opset, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": x.numpy(), "modality": modality.numpy()})
    return torch.from_numpy(outputs[0])


def _torchscript(graph, example, path: Path, x, modality) -> torch.Tensor:
    with torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(x, modality).float()
