"""The one shape of a method: ``Method`` declares every hook the loop, the app, evaluation and deploy call.

Every recipe subclasses ``Method`` and overrides only what it needs. Each hook
has a default that does nothing (or says "not offered"), so callers call hooks
directly and never probe a recipe with ``getattr``/``hasattr``; a new hook is
added here, with its default and the docstring saying when it is called, and
listed in ``docs/adding-a-method.md`` (a test keeps the two equal).

Three hooks have no neutral action, so *whether a recipe defines them* is
the answer a caller needs: ``attach`` (adapts to a target domain),
``transductive`` (offers a test-time step) and ``epoch_batches`` (brings its
own batches, so the epoch length may vary). ``offers(hook)`` answers that.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import ClassVar

import torch
from torch import nn

from vireid.schema import EvalSettings, parse_section, section_defaults


class Method:
    """Base class of every recipe: ``Recipe(cfg, num_classes)`` calls ``super().__init__(cfg, num_classes)``
    (which parses its config sections) and sets ``model``."""

    name: str  # the configured method name (``cfg['method']``)
    model: nn.Module  # what the loop optimises, checkpoints and moves to the device
    num_classes: int  # training identities

    sections: ClassVar[dict[str, type]] = {}
    """The config sections the method reads besides ``data``/``train``/``eval``, each a frozen dataclass of
    ``vireid.schema.setting`` fields, e.g. ``{"model": ModelSettings, "loss": LossSettings, "recipe":
    RecipeSettings}``. Their defaults are the only ones: ``vireid config show`` prints them, overrides may set
    them, and ``__init__`` parses the config's sections into ``self.settings.<section>``."""

    settings: SimpleNamespace
    """The parsed sections (``self.settings.loss.id``), set by ``Method.__init__``."""

    def __init__(self, cfg: dict, num_classes: int):
        """Parse the method's sections and ``eval.flip``; a recipe calls this first, then builds its model."""
        self.name = cfg["method"]
        self.num_classes = num_classes
        self.settings = self.parse_settings(cfg)
        self.flip = parse_section(EvalSettings, cfg.get("eval"), "eval").flip

    @classmethod
    def parse_settings(cls, cfg: dict) -> SimpleNamespace:
        """Each of ``sections`` parsed from ``cfg`` (missing sections: all defaults); errors name ``section.key``."""
        return SimpleNamespace(**{name: parse_section(kind, cfg.get(name), name)
                                  for name, kind in cls.sections.items()})

    @classmethod
    def defaults(cls) -> dict:
        """Section -> key -> default of the method's own sections (what a config may leave out)."""
        return {name: section_defaults(kind) for name, kind in cls.sections.items()}

    uses_heatmaps: ClassVar[bool] = False
    """Class flag, read before any data: True when ``training_step``/``embed`` take keypoint heat-maps
    (``data.keypoints`` is refused for a method without it)."""

    flip: bool = False
    """Whether ``embed`` averages the feature of the image and its mirror; recipes set it from ``eval.flip``
    and ``vireid.deploy`` may overwrite it (``FeatureExtractor(flip=...)``)."""

    report_tags: tuple[str, ...] = ()
    """Labels copied onto every evaluation result of the run (e.g. spot_nopose says it used no keypoints)."""

    # -- required ---------------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Required unless ``optimizers`` is defined: the single optimiser's parameter groups (an entry may carry
        ``lr_mult``); called once when the trainer is built."""
        raise NotImplementedError(f"method {self.name!r} defines neither param_groups() nor optimizers()")

    def training_step(self, model: nn.Module, batch):
        """Required: one training step, ``{"loss": total, **logged_terms}`` (or, with ``optimizers``, a generator
        of ``(names, terms)`` updates); called by the loop on every batch with ``model`` (the DDP wrapper under
        torchrun)."""
        raise NotImplementedError(f"method {self.name!r} defines no training_step(model, batch)")

    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Required: the (B, D) test feature of ``images``; called by evaluation and deploy in eval mode."""
        raise NotImplementedError(f"method {self.name!r} defines no embed(images, modality)")

    # -- before any data is read -------------------------------------------------------------------------------
    @classmethod
    def check_inputs(cls, cfg: dict, root) -> None:
        """Called by ``vireid train/adapt/eval`` before any data is read, with the resolved config and the data
        root: raise ValueError when the method's extra inputs (e.g. a keypoint file) are missing. Default: none."""

    @classmethod
    def single_modality_problem(cls, cfg: dict) -> str | None:
        """Called before training on a visible-only dataset (Market-1501, ...): None if the method can train on
        it, else the reason. Default: the method needs visible-infrared pairs."""
        return (f"method {cfg['method']!r} trains on visible and infrared images together (its losses or network "
                "pair the two modalities)")

    # -- the training loop --------------------------------------------------------------------------------------
    def optimizers(self) -> dict[str, list[dict]] | None:
        """Called once when the trainer is built: a dict from an optimiser's name to its parameter groups for a
        recipe that alternates several (GANs); then ``training_step`` yields updates. Default None: one
        optimiser over ``param_groups()``."""
        return None

    def on_epoch_start(self, epoch: int, trainer) -> None:
        """Called by the loop at the start of every epoch (also a resumed one), before its first batch, e.g. a
        pseudo-label refresh or a stage switch. Default: nothing."""

    def epoch_batches(self, epoch: int, batches):
        """Called by the loop for every epoch: the recipe's own batches for ``epoch`` (e.g. NFormer's cached
        feature sequences), or None for the data's. Default None. A recipe that defines it makes the logged
        epoch length approximate."""
        return None

    def set_progress(self, fraction: float) -> None:
        """Called by the loop before every step with the fraction of training done (0..1), e.g. for a loss-weight
        ramp. Default: nothing."""

    def attach(self, source_samples, target, size: tuple[int, int], workers: int = 0) -> None:
        """Called by ``vireid adapt`` once before training with the target domain's batches; only a method that
        defines it adapts (``offers("attach")`` is checked before any data is read). Default: refuses."""
        raise ValueError(f"method {self.name!r} does not adapt to a target domain")

    # -- evaluation -----------------------------------------------------------------------------------------------
    def transductive(self, features: torch.Tensor) -> torch.Tensor:
        """Called only with ``eval.transductive``/``--transductive``: one protocol trial's (N, D) features,
        queries then gallery, refined together; one row per input row. Only a method that defines it offers it.
        Default: refuses."""
        raise ValueError(f"method {self.name!r} has no transductive step")

    @classmethod
    def offers(cls, hook: str) -> bool:
        """Whether this recipe defines ``hook`` itself (for ``attach``, ``transductive``, ``epoch_batches``, whose
        absence is the answer a caller needs)."""
        return inspect.getattr_static(cls, hook) is not inspect.getattr_static(Method, hook)
