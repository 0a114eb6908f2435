"""DAN (Fu et al., TCSVT 2022): unsupervised cross-domain, cross-modal adaptation, as a recipe for ``vireid adapt``.

Labelled visible+infrared source, unlabelled visible+infrared target. A
batch is a pair (source batch, target batch) from
:class:`vireid.data.target_batches.PairedBatches`; both go through one
:class:`vireid.models.dan.DANNet` forward (one BN-statistics pool), and the loss is eq. 15:

    L = L_cls + L_tri (source) + lambda1 L_DAA + lambda2 L_soft + lambda3 L_CMA [+ lambda_hard L_hard]

* DAA: a discriminator (MLP, one logit) on the pooled feature behind gradient
  reversal, source = 1, target = 0 (:func:`vireid.losses.dan.domain_adversarial_loss`).
  The two players are weighted separately: the discriminator minimises
  ``disc_weight`` x L_D, the feature extractor receives -lambda1 x ramp x dL_D/df
  through the reversal, with ramp = 1 or, with ``grl_ramp``, DANN's
  2 / (1 + exp(-10 p)) - 1 over the adaptation progress p in [0, 1]. (Scaling
  one loss by lambda1 would also slow the discriminator down by lambda1.)
* Hard labels (Table 4's "Softmax (hard label)" row, off by default):
  cross-entropy of the source classifier on target samples against their
  hard pseudo labels (the source class of the nearest same-modality prototype).
* Soft labels: an N_t-way bias-free classifier on the target BN feature,
  trained towards lambda on the sample itself and (1 - lambda)/m on its m
  reliable neighbours.
* CMA: visible vs infrared means and variances of the hard pseudo classes
  (source prototypes, same modality) on the L2-normalised target BN feature
  (the test feature).

Pseudo labels and reliable sets are refreshed from a full source + target
feature pass at the start of epoch ``start_epoch`` and every
``refresh_every`` epochs after it (target losses are off before
``start_epoch``: the source-only warm-up that makes the first prototypes
meaningful). They live in model buffers, so a checkpoint carries them. With
lambda1 = lambda2 = lambda3 = 0 the target batch is ignored and this is the
source-only baseline on the same network and schedule.

``recipe.init`` starts from a trained run (e.g. the source-only model),
loaded when ``vireid adapt`` attaches the data, not when a finished run is
reloaded for evaluation.

Deviations (the paper is silent): means instead of sums over samples and
classes; squared Euclidean d in CMA; the warm-up epochs; resuming mid-epoch
keeps the stored pseudo labels (not recomputed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vireid.losses import id_loss, triplet_hard
from vireid.losses.dan import (
    cross_modal_alignment,
    domain_adversarial_loss,
    hard_pseudo_labels,
    modality_prototypes,
    reliable_neighbours,
    soft_label_loss,
)
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.baseline import ModelSettings
from vireid.methods.common import flip_average, head_and_backbone_groups
from vireid.models.dan import DANNet
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class LossSettings:
    """``loss:`` the supervised source terms."""

    id: float = setting(1.0, low=0)
    label_smoothing: float = setting(0.0, low=0, high=1)
    triplet: float = setting(1.0, low=0)
    triplet_margin: float = setting(0.3, low=0)


@dataclass(frozen=True)
class RecipeSettings:
    """``recipe:`` the adaptation terms, pseudo labels and discriminator (see the module docstring)."""

    num_target: int | None = setting(None, low=2, doc="target training images; 'vireid adapt' sets it")
    lambda1: float = setting(1.0, low=0, doc="reversed-gradient scale (DAA)")
    lambda2: float = setting(1.0, low=0, doc="soft-label term")
    lambda3: float = setting(1.0, low=0, doc="cross-modal alignment")
    lambda_hard: float = setting(0.0, low=0, doc="hard-pseudo-label CE (Table 4)")
    disc_weight: float = setting(1.0, low=0, doc="the discriminator's own loss weight")
    grl_ramp: bool = setting(False)
    soft_lambda: float = setting(0.5, low=0, high=1)
    m: int = setting(4, low=1, doc="reliable neighbours")
    eta: float = setting(1.0, low=0)
    refresh_every: int = setting(1, low=1)
    start_epoch: int = setting(1, low=0)
    disc_hidden: int = setting(256, low=1)
    disc_dropout: float = setting(0.5, low=0, high=1)
    backbone_lr_mult: float = setting(1.0, low=0)
    init: str | None = setting(None, doc="a trained run to start from")


def dann_ramp(progress: float) -> float:
    """DANN's schedule of the reversal coefficient (Ganin & Lempitsky 2015): 2 / (1 + exp(-10 p)) - 1.

    0 at the start of adaptation (the discriminator is still random, its
    gradients are noise) and close to 1 after half of it.
    """
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class DANRecipe(Method):
    """``method: dan`` (see the module docstring). Needs :meth:`attach` (``vireid adapt`` calls it)."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        if "grl_coef" in (cfg.get("recipe") or {}):
            raise ValueError("recipe.grl_coef is no longer a setting: the reversed gradient is scaled by "
                             "recipe.lambda1 (times the DANN ramp with recipe.grl_ramp: true) and the "
                             "discriminator's own loss by recipe.disc_weight; remove grl_coef from the config")
        super().__init__(cfg, num_classes)
        settings = self.settings.recipe
        if settings.num_target is None:
            raise ValueError("recipe.num_target (target training images) is missing; DAN runs through "
                             "'vireid adapt', which sets it from the target dataset")
        if settings.lambda1 and not settings.disc_weight:
            raise ValueError("recipe.disc_weight must be > 0 when recipe.lambda1 > 0: an untrained discriminator "
                             "gives the feature extractor no adversarial signal")
        if settings.m >= settings.num_target:
            raise ValueError(f"recipe.m ({settings.m}) must be smaller than the number of target images "
                             f"({settings.num_target})")
        self.model = DANNet(num_classes, settings.num_target, settings.m, disc_hidden=settings.disc_hidden,
                            disc_dropout=settings.disc_dropout, **to_dict(self.settings.model))
        self.epoch = 0
        self.source_samples = self.target = None
        self.size, self.workers = None, 0
        self.last_refresh: dict = {}
        self.trainer = None

    @property
    def adapts(self) -> bool:
        r = self.settings.recipe
        return bool(r.lambda1 or r.lambda2 or r.lambda3 or r.lambda_hard)

    def progress(self) -> float:
        """Fraction of the adaptation phase (epochs start_epoch.. of the run) done before this step."""
        if self.trainer is None:
            raise ValueError("recipe.grl_ramp needs the training progress: run DAN through 'vireid adapt'")
        t = self.trainer
        span = max(t.cfg.epochs - self.settings.recipe.start_epoch, 1)
        return (t.epoch - self.settings.recipe.start_epoch + t.step_in_epoch / max(len(t.batches), 1)) / span

    def reversal_coef(self) -> float:
        """The coefficient of the gradient reversal, so that the feature extractor gets -lambda1 x ramp x dL_D/df
        while the discriminator's loss is weighted by disc_weight."""
        ramp = dann_ramp(self.progress()) if self.settings.recipe.grl_ramp else 1.0
        return self.settings.recipe.lambda1 * ramp / self.settings.recipe.disc_weight

    def active(self, epoch: int) -> bool:
        return self.adapts and epoch >= self.settings.recipe.start_epoch

    def attach(self, source_samples, target, size: tuple[int, int], workers: int = 0) -> None:
        """The labelled source listing, the :class:`TargetBatches` and the image size for refreshes."""
        self.source_samples, self.target, self.size, self.workers = list(source_samples), target, size, workers
        if len(target) != self.settings.recipe.num_target:
            raise ValueError(f"the target set has {len(target)} images but recipe.num_target is "
                             f"{self.settings.recipe.num_target}")
        if self.settings.recipe.init:
            self.load_init(self.settings.recipe.init)

    def load_init(self, path) -> None:
        """Start from a trained run's network (``recipe.init``: a DAN run or a baseline/AGW run, same source).

        Only the ReIDNet part is loaded (backbone, neck, source classifier; the
        classifier stays fresh when the identity count differs, e.g. a labelled
        target run); the target classifier, discriminator and pseudo labels start fresh.
        """
        from pathlib import Path

        from vireid.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint

        path = Path(path)
        state = load_checkpoint(path / CHECKPOINT_NAME if path.is_dir() else path)["model"]
        if any(k.startswith("net.") for k in state):
            state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
        own = self.model.net.state_dict()
        if "classifier.weight" in state and state["classifier.weight"].shape != own["classifier.weight"].shape:
            state["classifier.weight"] = own["classifier.weight"]  # other identities: a fresh classifier
        try:
            self.model.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"recipe.init {path} does not match this network (same model settings and source "
                             f"identities needed): {str(exc).splitlines()[0]}") from None

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    # ------------------------------------------------------------ pseudo labels

    def on_epoch_start(self, epoch: int, trainer) -> None:
        self.epoch = epoch
        self.trainer = trainer
        if not self.active(epoch):
            return
        if self.target is None:
            raise ValueError("DAN needs source and target data: run it with 'vireid adapt' (vireid.app.runs.adapt)")
        due = (epoch - self.settings.recipe.start_epoch) % self.settings.recipe.refresh_every == 0
        if (due and trainer.step_in_epoch == 0) or not self.model.has_labels:
            self.refresh(trainer.device)
            trainer.log({"epoch": epoch, "refresh": True, **self.last_refresh})
        self.target.set_labels(self.model.pseudo_labels.cpu().numpy())

    @torch.no_grad()
    def features(self, samples, device) -> torch.Tensor:
        from vireid.evaluation.features import image_extractor

        was_training = self.model.training
        self.model.eval()
        try:
            return image_extractor(self.embed, self.size, device, workers=self.workers, model=self.model)(samples)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def refresh(self, device="cpu") -> dict:
        """Hard pseudo labels (source prototypes) and reliable sets from a full feature pass."""
        src = self.features(self.source_samples, device)
        tgt = self.features(self.target.samples, device)
        src_labels = torch.tensor([s.pid for s in self.source_samples])
        src_mod = torch.tensor([s.modality for s in self.source_samples])
        protos, present = modality_prototypes(src, src_labels, src_mod, self.num_classes)
        tgt_mod = self.target.modality
        labels = hard_pseudo_labels(tgt, tgt_mod, protos, present)
        neighbours = reliable_neighbours(tgt, self.settings.recipe.m)
        self.model.pseudo_labels.copy_(labels)
        self.model.neighbours.copy_(neighbours)
        # Diagnostics only (the target identities never enter a loss): how often a reliable neighbour is
        # the same person, and how many pseudo classes hold both modalities.
        truth = torch.tensor([s.pid for s in self.target.samples])
        both = sum(1 for k in labels.unique() if len((tgt_mod[labels == k]).unique()) == 2)
        self.last_refresh = {"pseudo_classes": int(labels.unique().numel()), "cross_modal_classes": both,
                             "neighbour_precision": float((truth[neighbours] == truth[:, None]).float().mean())}
        return self.last_refresh

    # ------------------------------------------------------------ training

    def training_step(self, model, batch) -> dict:
        if isinstance(batch, (list, tuple)) and len(batch) == 2:
            source, target = batch
        else:
            source, target = batch, None
        images, pids, _, modality = source
        active = target is not None and self.active(self.epoch)
        coef = self.reversal_coef() if active and self.settings.recipe.lambda1 else 0.0
        self.model.grl_coef = coef
        if active:
            t_images, t_index, _, t_mod = target
            out = model(torch.cat([images, t_images]), torch.cat([modality, t_mod]))
        else:
            out = model(images, modality)
        ns = len(images)
        w, r = self.settings.loss, self.settings.recipe
        terms = {"cls": w.id * id_loss(out["logits"][:ns], pids, w.label_smoothing)}
        if w.triplet:
            terms["tri"] = w.triplet * triplet_hard(out["pooled"][:ns], pids, w.triplet_margin)
        if active:
            net = self.model
            if r.lambda1:
                terms["daa"] = r.disc_weight * domain_adversarial_loss(out["domain"][:ns], out["domain"][ns:])
            if r.lambda_hard:
                terms["hard"] = r.lambda_hard * id_loss(out["logits"][ns:], net.pseudo_labels[t_index])
            if r.lambda2:
                terms["soft"] = r.lambda2 * soft_label_loss(out["target_logits"][ns:], t_index, net.neighbours[t_index],
                                                            r.soft_lambda)
            if r.lambda3:
                feat = F.normalize(out["bn"][ns:], dim=1)
                terms["cma"] = r.lambda3 * cross_modal_alignment(feat, net.pseudo_labels[t_index], t_mod, r.eta)
        extra = {"grl": torch.tensor(coef)} if active and r.lambda1 else {}
        return {"loss": sum(terms.values()), **terms, **extra}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)


METHODS.register("dan")(DANRecipe)
