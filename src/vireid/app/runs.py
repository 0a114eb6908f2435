"""A training run from a config and a dataset root, and the evaluation of a finished run.

A run directory holds ``config.yaml`` (resolved), ``run.json`` (command
line, seed, package versions), ``metrics.jsonl`` and ``checkpoint.pt``
(the last epoch: vireid never picks a checkpoint by test accuracy).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import platform
import random
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

import vireid
from vireid.app.contract import check_run_settings
from vireid.config import dump, get, load_config
from vireid.data.keypoints import HeatmapSpec, KeypointTable, keypoint_file
from vireid.data.loaders import train_batches
from vireid.data.records import INFRARED, VISIBLE
from vireid.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from vireid.engine.distributed import barrier, init_distributed
from vireid.engine.run_lock import run_directory_lock
from vireid.engine.trainer import Trainer
from vireid.evaluation.evaluator import FeatureCache, cosine_distance, evaluate_protocol
from vireid.evaluation.features import image_extractor
from vireid.evaluation.metrics import evaluate as evaluate_metrics
from vireid.evaluation.protocols import get_protocol
from vireid.evaluation.report import ProtocolResult
from vireid.evaluation.transductive import transductive_step
from vireid.methods import build_recipe, check_method
from vireid.models.backbones.weights import NO_PRETRAINED, file_sha256, pretrained_path, require_pretrained
from vireid.schema import DataSettings, EvalSettings, TrainSettings, parse_section, section_defaults
from vireid.utils.io import remove_stale_temps, write_text_atomic
from vireid.utils.outputs import output_dir

BEST_VAL_NAME = "best_val.pt"
log = logging.getLogger(__name__)


def resolve_config_path(name: str) -> Path:
    """A config file path, or the name of a config shipped with vireid (``idkl_sysu``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = resources.files("vireid") / "configs" / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    known = sorted(p.name[:-5] for p in (resources.files("vireid") / "configs").iterdir() if p.name.endswith(".yaml"))
    raise FileNotFoundError(f"config not found: {name} (not a file, nor a shipped config: {', '.join(known)})")


def shipped_configs() -> dict[str, str]:
    """Name -> one-line description (the file's first comment line) of every config shipped with vireid."""
    out = {}
    for entry in sorted((resources.files("vireid") / "configs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = entry.read_text(encoding="utf-8").splitlines()[:1]
            out[entry.name[:-5]] = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
    return out


def resolve_config(config: str | Path, overrides=()) -> dict:
    """The config a run would use: the file with its ``_base_`` chain, defaults filled in, overrides applied.

    Checks the method name and the data section, so ``vireid config show``
    fails on the same mistakes ``vireid train`` would.
    """
    cfg = load_config(resolve_config_path(str(config)), overrides, defaults=run_defaults)
    check_method(cfg)
    data_settings(cfg)
    return cfg


def run_defaults(cfg: dict | None = None) -> dict:
    """Every value a config may leave out (so overrides can still set it), from the section dataclasses: data,
    train and eval, and with ``cfg`` naming a method, that method's own sections (``Method.sections``)."""
    out = {"data": section_defaults(DataSettings), "train": section_defaults(TrainSettings),
           "eval": section_defaults(EvalSettings)}
    if cfg is not None:
        out.update(check_method(cfg).defaults())
    return out


def data_settings(cfg: dict) -> DataSettings:
    """The checked ``data`` section with every default filled in (what the loaders take as it is)."""
    return parse_section(DataSettings, cfg.get("data"), "data")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment(seed: int) -> dict:
    return {"command": sys.argv, "seed": seed, "vireid": vireid.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform()}


def _prepare(config, overrides, device: str):
    """Resolved config, data settings, TrainSettings, distributed info and seed; seeds every RNG."""
    cfg_path = resolve_config_path(str(config))
    cfg = load_config(cfg_path, overrides, defaults=run_defaults)
    check_method(cfg).parse_settings(cfg)  # fail on a misspelt method or a bad model/loss value before any data
    _require_weights(cfg)  # ... or a ResNet-50 run with no word on its ImageNet weights
    data = data_settings(cfg)
    _require_modalities(cfg, data.dataset)  # ... or a cross-modality method on a visible-only dataset
    tc = parse_section(TrainSettings, get(cfg, "train", str(cfg_path)), "train")
    parse_section(EvalSettings, cfg.get("eval"), "eval")  # ... or a bad eval value (read again where it is used)
    info = init_distributed(device)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(tc.seed)
    return cfg, data, tc, info, tc.seed


def _require_modalities(cfg: dict, dataset: str) -> None:
    """A single-modality dataset (Market-1501, ...) trains only methods that need no infrared images."""
    from vireid.data.datasets import DATASETS
    from vireid.methods import single_modality_problem

    if not getattr(DATASETS.get(dataset), "single_modality", False):
        return
    problem = single_modality_problem(cfg)
    if problem:
        raise ValueError(f"data.dataset: {dataset} has one modality (visible images only), but {problem}. "
                         "Methods that train on it: agw and baseline (recipe.channel_exchange: false, "
                         "loss.hetero_center: 0) and plain")


def _require_weights(cfg: dict) -> None:
    """A ResNet-50 run names its ImageNet weights or says ``none`` (see ``require_pretrained``)."""
    if not (cfg.get("recipe") or {}).get("init"):  # a run started from another run's weights needs no ImageNet file
        require_pretrained(cfg.get("model") or {})


def _source_batches(data: DataSettings, root, seed: int, info, strict: bool = False):
    return train_batches(data, root, seed=seed, rank=info.rank, world_size=info.world_size, strict=strict)


def heatmap_spec(data: DataSettings) -> HeatmapSpec:
    return HeatmapSpec(data.heatmap_stride, data.heatmap_sigma)


def check_inputs(cfg: dict, data: DataSettings, root) -> None:
    """Before any data is read: the method and its extra inputs agree (a method may also check its own)."""
    recipe_cls = check_method(cfg)
    recipe_cls.check_inputs(cfg, root)
    if data.keypoints and not recipe_cls.uses_heatmaps:
        raise ValueError(f"data.keypoints is set ({data.keypoints!r}) but method {cfg['method']!r} does not use "
                         "keypoint heat-maps; remove data.keypoints (only spot reads them)")


def _decoding(data: DataSettings) -> dict:
    """``image_extractor`` options that decode test images as the run's training images were decoded."""
    return {"resample": data.resize, "depth_rule": data.depth_rule, "depth_bits": data.depth_bits}


def _extra_inputs(data: DataSettings, root) -> dict:
    """``image_extractor`` options that add the keypoint heat-maps to test images (when the run uses them)."""
    path = keypoint_file(root, data.keypoints)
    return {} if path is None else {"keypoints": KeypointTable.load(path), "root": root, "heatmap": heatmap_spec(data)}


def _fit(recipe, batches, tc, cfg: dict, data: DataSettings, out, info, seed: int, num_classes: int, resume,
         progress: bool, on_step=None, data_root=None) -> Path:
    """Write the run's config and environment, then train (or resume) it to the end."""
    out = Path(out)
    if info.is_main:
        write_text_atomic(out / "config.yaml", dump(cfg))
        env = environment(seed)
        model_cfg = cfg.get("model") or {}
        weights = pretrained_path(model_cfg.get("pretrained"), model_cfg.get("backbone", "resnet"),
                                  model_cfg.get("depth"))
        if weights:
            env["pretrained"] = {"path": weights, "sha256": file_sha256(weights)}
        write_text_atomic(out / "run.json", json.dumps(env, indent=2) + "\n")
    trainer = Trainer(recipe, batches, tc, out, device=info.device, dist_info=info, progress=progress,
                      extra_state={"config": cfg, "num_classes": num_classes})
    if resume is not None:
        trainer.resume(resume)
    elif trainer.resume():
        log.info("resuming %s at epoch %d, step %d", out, trainer.epoch + 1, trainer.step_in_epoch)
    validate = None
    if getattr(batches, "validation", None) and info.is_main:
        extras = _extra_inputs(data, data_root) if data_root is not None else {}
        every = parse_section(EvalSettings, cfg.get("eval"), "eval").val_every
        validate = _validator(recipe, batches.validation, data, every, extras)
    trainer.fit(on_step=on_step, on_epoch_end=validate)
    barrier(info)
    return out / CHECKPOINT_NAME


def _validator(recipe, samples, data, every: int, extras: dict | None = None):
    """Epoch-end evaluation on held-out *training* identities (infrared queries, visible gallery; on a
    visible-only set, see :func:`validation_split`).

    Logs val_* metrics and keeps the best epoch by validation mAP in
    ``best_val.pt``; the test set is never looked at.
    """
    query, gallery, rule = validation_split(samples)
    best = {"mAP": -1.0}

    def validate(trainer: Trainer) -> None:
        if trainer.epoch % every and trainer.epoch != trainer.cfg.epochs:
            return
        recipe.model.eval()
        extract = image_extractor(recipe.embed, (data.height, data.width), trainer.device,
                                  workers=data.workers, model=recipe.model, **_decoding(data), **(extras or {}))
        result = evaluate_distances(cosine_distance(extract(query), extract(gallery)), query, gallery, rule)
        trainer.log({"epoch": trainer.epoch, "val_rank1": float(result["cmc"][0]), "val_mAP": result["mAP"],
                     "val_mINP": result["mINP"]})
        if result["mAP"] > best["mAP"]:
            best["mAP"] = result["mAP"]
            save_checkpoint(trainer.run_dir / BEST_VAL_NAME,
                            {**trainer.state_dict(), "selected_by": "validation mAP on held-out training ids",
                             "val_mAP": result["mAP"]})
        recipe.model.train()

    return validate


def validation_split(samples) -> tuple[list, list, str]:
    """(query, gallery, rule) of the held-out identities.

    Visible-infrared: infrared queries against the visible gallery (no camera
    rule). Visible only: the first image of each (identity, camera) is a
    query, everything else the gallery, under the market1501 rule (the
    query's own camera does not count), so a query needs its identity in a
    second camera.
    """
    if any(s.modality == INFRARED for s in samples) and any(s.modality == VISIBLE for s in samples):
        return ([s for s in samples if s.modality == INFRARED], [s for s in samples if s.modality == VISIBLE],
                "regdb")
    seen, query, gallery = set(), [], []
    for sample in samples:
        key = (sample.pid, sample.camid)
        (gallery if key in seen else query).append(sample)
        seen.add(key)
    return query, gallery, "market1501"


def evaluate_distances(dist, query, gallery, rule: str = "regdb") -> dict:
    return evaluate_metrics(dist, [s.pid for s in query], [s.pid for s in gallery], [s.camid for s in query],
                            [s.camid for s in gallery], rule=rule, max_rank=min(20, len(gallery)))


def train(config: str | Path, data_root: str | Path, out: str | Path, overrides=(), *, device: str = "auto",
          resume: str | Path | None = None, progress: bool = True, on_step=None, allow_changes=(),
          restart: bool = False, strict: bool = False) -> Path:
    """Train (or continue) the run in ``out``. Returns the checkpoint path.

    ``on_step(trainer, record)`` runs after every step (its own time is not counted as training time;
    ``scripts/learning_curves.py`` uses it to measure rank-1 against training time).
    Continuing a run with other settings is refused unless the changed keys are in ``allow_changes`` or
    ``restart`` moves the old run aside (:mod:`vireid.app.contract`). Unreadable training images are skipped
    and listed, or refused when ``strict``."""
    output_dir(out)  # a run directory that cannot be written fails before any work
    cfg, data, tc, info, seed = _prepare(config, overrides, device)
    check_inputs(cfg, data, data_root)
    if data.caj_view == "raw" and not (cfg.get("recipe") or {}).get("channel_exchange"):
        raise ValueError("data.caj_view: raw adds CAJ's second visible view, which only the tri-modal batch uses; "
                         "set recipe.channel_exchange: true (methods agw/caj/baseline) or data.caj_view: exchange")
    with _exclusive(out, info):
        _check_settings(out, cfg, info, allow_changes, restart)
        batches = _source_batches(data, data_root, seed, info, strict)
        recipe = build_recipe(cfg, batches.num_classes)
        return _fit(recipe, batches, tc, cfg, data, out, info, seed, batches.num_classes, resume, progress, on_step,
                    data_root=data_root)


def _check_settings(out, cfg: dict, info, allow_changes, restart: bool) -> None:
    """Under the run lock, before any data is read or file written: the run's settings are its contract."""
    if info.is_main:
        check_run_settings(out, cfg, allow_changes, restart, run_defaults(cfg))
        remove_stale_temps(out)


def _exclusive(out, info):
    """The run directory's lock, held by the main process from before any data is read to the end of training.

    A second ``vireid train``/``adapt`` into a directory that a live run holds
    stops at once instead of interleaving checkpoints with it.
    """
    return run_directory_lock(out) if info.is_main else contextlib.nullcontext()


def adapt(config: str | Path, source: str | Path, target: str | Path, out: str | Path, overrides=(), *,
          device: str = "auto", resume: str | Path | None = None, progress: bool = True, allow_changes=(),
          restart: bool = False) -> Path:
    """Unsupervised domain adaptation: labelled ``source`` root, unlabelled ``target`` root (same layout).

    One loop over (source batch, target batch) pairs; the target's identity
    labels are not used for training (DAN logs them only as a pseudo-label
    diagnostic). The method must provide ``attach`` (``method: dan``).
    ``recipe.num_target`` is set from the target set and saved in the run's
    config, so ``evaluate_run``/``load_run`` rebuild the same network.
    Returns the checkpoint path; evaluate it on the target root.
    """
    from vireid.data.augmentations import train_transforms
    from vireid.data.cache import ImageCache
    from vireid.data.check import require_valid
    from vireid.data.target_batches import PairedBatches, TargetBatches

    output_dir(out)
    cfg, data, tc, info, seed = _prepare(config, overrides, device)
    check_inputs(cfg, data, source)
    if info.world_size > 1:
        raise ValueError("vireid adapt runs on one process (the pseudo-label refresh is not distributed)")
    recipe_cls = check_method(cfg)
    if not recipe_cls.offers("attach"):
        raise ValueError(f"method {cfg['method']!r} does not adapt to a target domain; use a method with "
                         "source+target training, e.g. method: dan")
    size = (data.height, data.width)
    extra = {"trial": data.trial} if data.trial is not None else {}
    source_batches = _source_batches(data, source, seed, info)
    target_set = require_valid(target, data.dataset, **extra)
    samples = target_set.train
    given = (cfg.get("recipe") or {}).get("num_target")
    if given is not None and given != len(samples):
        raise ValueError(f"recipe.num_target is {given} but the target training set at {target} has "
                         f"{len(samples)} images; leave it out (adapt sets it)")
    cfg.setdefault("recipe", {})["num_target"] = len(samples)
    cache = ImageCache.build([s.path for s in samples], size, f"{data.dataset}-target") if data.cache else None
    target_batches = TargetBatches(samples, size, train_transforms(data.augment, data.pad, data.random_erasing),
                                   data.p, data.k, seed=seed, workers=data.workers, cache=cache)
    recipe = build_recipe(cfg, source_batches.num_classes)
    recipe.attach(source_batches.dataset.samples, target_batches, size, data.workers)
    batches = PairedBatches(source_batches, target_batches)
    with _exclusive(out, info):
        _check_settings(out, cfg, info, allow_changes, restart)
        return _fit(recipe, batches, tc, cfg, data, out, info, seed, source_batches.num_classes, resume, progress)


def load_run(run_or_checkpoint: str | Path):
    """(recipe with trained weights in eval mode, config) from a run directory or a checkpoint file."""
    path = Path(run_or_checkpoint)
    ckpt = path / CHECKPOINT_NAME if path.is_dir() else path
    state = load_checkpoint(ckpt)
    if "config" not in state or "num_classes" not in state:
        raise ValueError(f"{ckpt} holds no run config; it was not written by 'vireid train'")
    cfg = copy.deepcopy(state["config"])
    if isinstance(cfg.get("model"), dict) and "pretrained" in cfg["model"]:
        cfg["model"]["pretrained"] = NO_PRETRAINED  # the checkpoint replaces every weight: no ImageNet file needed
    recipe = build_recipe(cfg, state["num_classes"])
    recipe.model.load_state_dict(state["model"])
    recipe.model.eval()
    return recipe, state["config"]


def evaluate_run(run_or_checkpoint: str | Path, data_root: str | Path, protocol: str | None = None, *,
                 rerank: bool | None = None, device: str = "auto", trials=None, batch_size: int = 64,
                 transductive: bool | None = None) -> ProtocolResult:
    """Evaluate a trained run under a named protocol (default: the config's ``eval.protocol``).

    ``rerank`` None follows the config's ``eval.rerank``; re-ranked results are labelled ``[re-ranked]``.
    ``transductive`` None follows ``eval.transductive``: the method's transductive step on each trial's
    query + gallery features together (:mod:`vireid.evaluation.transductive`), labelled ``[transductive]``;
    a method without one is refused before any image is read.
    """
    return evaluate_run_protocols(run_or_checkpoint, data_root, [protocol], rerank=rerank, device=device,
                                  trials=trials, batch_size=batch_size, transductive=transductive)[0]


def evaluate_run_protocols(run_or_checkpoint: str | Path, data_root: str | Path, protocols, *,
                           rerank: bool | None = None, device: str = "auto", trials=None, batch_size: int = 64,
                           transductive: bool | None = None) -> list[ProtocolResult]:
    """:func:`evaluate_run` under several protocols (None: the config's) with one model load and one feature
    cache: an image two protocols share (SYSU's infrared queries in all- and indoor-search, RegDB's two
    directions) is embedded once."""
    protocols = list(protocols)
    for name in protocols:
        if name is not None:
            get_protocol(name)  # an unknown name fails before any loading
    recipe, cfg = load_run(run_or_checkpoint)
    settings = parse_section(EvalSettings, cfg.get("eval"), "eval")  # what the run's config asks for
    protocols = [settings.protocol if name is None else name for name in protocols]
    if None in protocols:
        raise ValueError("no --protocol given and the run's config has no eval.protocol")
    rerank = settings.rerank if rerank is None else bool(rerank)
    transductive = settings.transductive if transductive is None else bool(transductive)
    data = data_settings(cfg)
    check_inputs(cfg, data, data_root)
    device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    step = transductive_step(recipe, device) if transductive else None  # a method without one fails here
    recipe.model.to(device)
    extract = FeatureCache(image_extractor(recipe.embed, (data.height, data.width), device, batch_size=batch_size,
                                           workers=data.workers, model=recipe.model, **_decoding(data),
                                           **_extra_inputs(data, data_root)))
    results = []
    for name in protocols:
        result = evaluate_protocol(get_protocol(name), data_root, extract, rerank=rerank, trials=trials,
                                   transductive=step)
        result.tags = tuple(recipe.report_tags)  # e.g. spot_nopose says it used no keypoints
        results.append(result)
    return results
