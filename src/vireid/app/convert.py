"""A released IDKL or AGW checkpoint as a vireid run, so the authors' models go through vireid's protocols.

The file is read with ``torch.load(weights_only=True)``: tensors, plain types
and numpy arrays/scalars (AGW stores its CMC and mAP beside the weights) only;
a file with any other pickled object is refused, so loading never runs code. Its state dict (found under
``state_dict``/``net``/``model`` when wrapped, ``module.`` prefixes from
DataParallel dropped) is renamed by :mod:`vireid.models.reference_names` into
the preset's model (``idkl_sysu`` / ``agw_sysu`` unless another config is
named), which must then be complete: a missing tensor is an error, never a
silently random weight. The output is a checkpoint ``vireid eval`` reads.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from vireid.config import dump
from vireid.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint
from vireid.methods import build_recipe
from vireid.models.backbones.weights import NO_PRETRAINED
from vireid.models.reference_names import KINDS, convert_state
from vireid.utils.io import write_text_atomic

PRESETS = {"idkl": "idkl_sysu", "agw": "agw_sysu"}
WRAPPERS = ("state_dict", "net", "model")  # where the references' own saving code puts the weights


def _numpy_globals() -> list:
    """numpy's array and scalar reconstruction (data, not code) under the names numpy 1.x and 2.x pickle them."""
    multiarray = (getattr(np, "_core", None) or np.core).multiarray
    allowed = [np.ndarray, np.dtype]
    allowed += [(type(np.dtype(c)), f"numpy.dtypes.{type(np.dtype(c)).__name__}") for c in "?bhilqBHILQefdgFDG"]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    return allowed


def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a reference checkpoint, by the reference's names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path} holds pickled Python objects besides tensors, which vireid refuses to load "
                         f"(loading them could run code). Re-save only the weights, e.g. "
                         f"torch.save(torch.load(path)['net'], 'weights.pth') in a trusted session. ({exc})") from None
    except Exception as exc:  # damaged archives raise several types
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {exc}") from None
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors)")
    tensors = {}
    for name, value in state.items():
        if not torch.is_tensor(value):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; expected a state "
                             f"dict (optionally under one of {', '.join(WRAPPERS)})")
        tensors[name[len("module."):] if name.startswith("module.") else name] = value
    return tensors


def convert(kind: str, checkpoint: str | Path, out: str | Path, cfg: dict) -> dict:
    """Write ``checkpoint`` (reference ``kind``) as a vireid checkpoint at ``out`` and return the report.

    ``cfg``: the resolved preset the weights go into. ``out`` ending in ``.pt``/``.pth`` is a checkpoint
    file; anything else a run directory (``checkpoint.pt`` and ``config.yaml``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown reference {kind!r}; expected one of {', '.join(KINDS)}")
    source = read_reference_state(checkpoint)
    classifier = source.get("classifier.weight")
    if classifier is None or classifier.dim() != 2:
        raise ValueError(f"{checkpoint} has no 2-D 'classifier.weight', so the number of training identities is "
                         f"unknown; is it a checkpoint of the {kind} reference?")
    cfg = dict(cfg)
    cfg["model"] = {**cfg.get("model", {}), "pretrained": NO_PRETRAINED}  # every weight comes from the file
    num_classes = int(classifier.shape[0])
    recipe = build_recipe(cfg, num_classes)
    target = list(recipe.model.state_dict())
    state, report = convert_state(kind, source, target)
    if report["missing"]:
        raise ValueError(f"{checkpoint} does not fill {len(report['missing'])} of the {cfg['method']} model's "
                         f"tensors (e.g. {', '.join(report['missing'][:5])}); unexpected names in the file: "
                         f"{', '.join(report['unexpected'][:5]) or 'none'}. Is it a checkpoint of the {kind} "
                         f"reference with the preset's architecture (ResNet-50)?")
    try:
        recipe.model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{checkpoint} does not fit the {cfg['method']} model: {exc}") from None
    out = Path(out)
    path = out if out.suffix in (".pt", ".pth") else out / CHECKPOINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"method": cfg["method"], "model": recipe.model.state_dict(), "config": cfg,
                           "num_classes": num_classes, "converted_from": {"kind": kind, "path": str(checkpoint)}})
    if path.parent == out:
        write_text_atomic(out / "config.yaml", dump(cfg))
    return {**report, "path": str(path), "num_classes": num_classes}
