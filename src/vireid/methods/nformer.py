"""NFormer as a recipe: two stages in one run of the one training loop, and a transductive test step.

Stage 1 (epochs 0 .. ``recipe.stage2_start`` - 1): the feature extractor on
image batches, L = CE_ls + triplet + 0.0005 centre (:mod:`vireid.losses.nformer`)
on the reduced 256-d feature, the class centres moved by their own SGD step.

Stage 2 (epochs ``stage2_start`` .. ``train.epochs`` - 1): the extractor is
frozen (``requires_grad`` off; its optimiser state is kept but no longer
used) and the training set's features are extracted once with it (eval
mode, test transform) and cached in memory. Each step then draws
``sequences_per_step`` neighbour sequences from that cache (:func:`neighbour_sequence`,
the released code's NFormerDataset) and trains the neighbour transformer on
them with the same loss mix on its output (separate centres). The stage-2
epoch comes from :meth:`NFormerRecipe.epoch_batches`, the loop's hook for a
recipe's own batches, so no image is loaded in stage 2.

Resuming: every epoch ends with a checkpoint; a run stopped in stage 2
restarts in stage 2 (the features are extracted again from the frozen,
checkpointed extractor, identically), never redoing stage 1; a run stopped in
stage 1 continues stage 1. Sequences are a pure function of (seed, epoch,
step), so a resumed run ends with the weights of an uninterrupted one.

Test: ``embed`` gives the extractor's L2-normalised BN feature (stage 1 on its
own); ``transductive(features)`` passes one trial's query + gallery features
through the NFormer together (the paper's test), used only when asked
(``eval.transductive``, ``vireid eval --transductive``) and labelled ``[transductive]``.

Values: the paper and the released code (haochenheheda/NFormer): 120 + 30
epochs (the code trains the NFormer for epochs // 4 rounds after the
extractor), Adam 3.5e-4 with warm-up 0.01 over 10 epochs and x0.1 at 40 and 70
(vsd_warmup_multistep is that WarmupMultiStepLR), NFormer Adam at a fixed
1e-5 without weight decay, sequences of 7000 features, 2 per step, N // 30
sequences an epoch, k = 20, 5 landmarks, 2 heads, 4 blocks, dropout 0.1.
vireid's choices, each a setting: the features are cached once instead of
re-extracted from augmented images every stage-2 epoch; the NFormer's
training input is L2-normalised (``recipe.normalize_input``; the code feeds
unnormalised BN features in training but normalised ones at test).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vireid.losses import id_loss, triplet_hard
from vireid.losses.nformer import centre_loss, centre_step
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import flip_average
from vireid.models import build_model
from vireid.models.trunk import TrunkSettings
from vireid.schema import DataSettings, TrainSettings, parse_section, setting, to_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings(TrunkSettings):
    two_stream: bool = setting(False, doc="one stem per modality (AGW's layout) instead of a shared one")
    pool: str = setting("avg", choices=("avg", "gem"))
    dim: int = setting(256, low=2, doc="the reduced feature width (2048 -> 256)")
    classifier_std: float | None = setting(0.001, low=0)
    heads: int = setting(2, low=1)
    blocks: int = setting(4, low=1)
    landmarks: int = setting(5, low=1, doc="l, landmark agents per attention")
    topk: int = setting(20, low=1, doc="k of the reciprocal neighbour softmax")
    dropout: float = setting(0.1, low=0, high=1)
    test_normalize: bool = setting(True)


@dataclass(frozen=True)
class LossSettings:
    id: float = setting(1.0, low=0)
    label_smoothing: float = setting(0.1, low=0, high=1)
    triplet: float = setting(1.0, low=0)
    triplet_margin: float = setting(0.3, low=0)
    centre: float = setting(0.0005, low=0, doc="weight of the centre loss")
    centre_lr: float = setting(0.5, low=0, doc="the centres' own SGD rate")


@dataclass(frozen=True)
class RecipeSettings:
    stage2_start: int = setting(120, low=1, doc="first epoch of stage 2 (the NFormer on frozen features)")
    nformer_lr: float = setting(1.0e-5, low=0, doc="the NFormer's fixed Adam rate (no schedule)")
    sequence_length: int = setting(7000, low=2, doc="features per neighbour sequence (at most the training set)")
    sequences_per_step: int = setting(2, low=1)
    images_per_sequence: int = setting(30, low=1, doc="a stage-2 epoch has N // this many sequences")
    normalize_input: bool = setting(True, doc="L2-normalise the NFormer's training input (its test input is)")
    feature_batch: int = setting(128, low=1, doc="images per forward pass when caching the features")


def neighbour_sequence(features: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """Row indices of one training sequence: ``length`` of the nearest neighbours of a random centre.

    features (N, D) -> (min(length, N),) long. The centre is drawn uniformly; the candidates are its
    floor(L (1 + u)) nearest rows by dot product (u ~ U[0, 1), at most N); L of them are drawn without
    replacement, in random order (the released code's NFormerDataset.__getitem__). A sequence is thus a
    neighbourhood, and the NFormer learns to aggregate over what a test set's neighbourhoods look like.
    """
    n = len(features)
    length = min(length, n)
    centre = int(torch.randint(n, (1,), generator=generator))
    pool = min(n, int(length * (1 + float(torch.rand((), generator=generator)))))
    nearest = (features @ features[centre]).topk(pool).indices
    return nearest[torch.randperm(pool, generator=generator)[:length].to(nearest.device)]


class FeatureSequences:
    """Stage-2 batches: ``epoch(e, start)`` yields (features (S, L, D), labels (S, L)) from the cached features.

    A batch is a pure function of (seed, rank, epoch, step), so a resumed epoch continues exactly (and
    torchrun processes draw different sequences).
    """

    fixed_epoch_length = True

    def __init__(self, recipe: NFormerRecipe, num_images: int, seed: int):
        self.recipe, self.num_images, self.seed = recipe, num_images, seed
        settings = recipe.settings.recipe
        self.per_step, self.length = settings.sequences_per_step, settings.sequence_length
        self.steps = max(1, math.ceil(max(1, num_images // settings.images_per_sequence) / self.per_step))

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int, start: int = 0):
        features, labels = self.recipe.cached_features()
        for step in range(start, self.steps):
            key = ((self.seed * 1_000_003 + self.recipe.rank) * 1_000_003 + epoch) * 1_000_003 + step
            generator = torch.Generator().manual_seed(key % 2**63)
            rows = torch.stack([neighbour_sequence(features, self.length, generator) for _ in range(self.per_step)])
            yield features[rows], labels[rows]


@METHODS.register("nformer")
class NFormerRecipe(Method):
    """``method: nformer``; sections ``model``, ``loss``, ``recipe`` (the dataclasses above), ``eval.flip``."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        stage2_start = self.settings.recipe.stage2_start
        # a recipe is also built from a config without a train section (tests, deploy): its checks need one
        train = parse_section(TrainSettings, cfg["train"], "train") if cfg.get("train") else None
        if train is not None and train.time_budget_s > 0:
            raise ValueError("NFormer's two stages are counted in epochs (recipe.stage2_start); train.time_budget_s "
                             "cannot be used with method: nformer, set train.epochs instead")
        if train is not None and stage2_start >= train.epochs:
            raise ValueError(f"recipe.stage2_start ({stage2_start}) must be smaller than train.epochs "
                             f"({train.epochs}): stage 2 (the NFormer) trains in epochs stage2_start..epochs-1; the "
                             f"paper trains 120 + 30 (stage2_start: 120, epochs: 150)")
        self.model = build_model("nformer", num_classes=num_classes, **to_dict(self.settings.model))
        self.workers = parse_section(DataSettings, cfg.get("data"), "data").workers
        self.seed = train.seed if train is not None else 0
        self.epoch, self.rank = 0, 0
        self._features: tuple[torch.Tensor, torch.Tensor] | None = None
        self._sequences: FeatureSequences | None = None

    @classmethod
    def single_modality_problem(cls, cfg: dict) -> str | None:
        """None: stage 1's ID + triplet + centre losses and stage 2's neighbour sequences need identities only,
        so NFormer trains on Market-1501 (its paper's setting) as well as on the VI sets."""
        return None

    def param_groups(self):
        return [{"params": self.model.stage1_parameters()},
                {"params": self.model.stage2_parameters(), "fixed_lr": self.settings.recipe.nformer_lr,
                 "weight_decay": 0.0}]

    def in_stage2(self, epoch: int | None = None) -> bool:
        return (self.epoch if epoch is None else epoch) >= self.settings.recipe.stage2_start

    # ------------------------------------------------------------ the switch to stage 2

    def on_epoch_start(self, epoch: int, trainer) -> None:
        self.epoch, self.rank = epoch, trainer.dist.rank
        if not self.in_stage2(epoch):
            return
        for p in self.model.stage1_parameters():
            p.requires_grad_(False)
        if self._features is None:  # the first stage-2 epoch, or a run resumed in stage 2
            self.cache_features(trainer.batches.dataset, trainer.device)
            trainer.log({"epoch": epoch, "stage": 2, "cached_features": len(self._features[0])})

    def epoch_batches(self, epoch: int, batches):
        """The loop's hook: None (image batches) in stage 1, the feature sequences in stage 2."""
        if not self.in_stage2(epoch):
            return None
        if self._sequences is None:
            self._sequences = FeatureSequences(self, len(batches.dataset), self.seed)
        return self._sequences

    @torch.no_grad()
    def cache_features(self, dataset, device) -> None:
        """The frozen extractor's BN features of every training image (test transform), with their labels."""
        from vireid.data.image_dataset import ImageDataset
        from vireid.data.transforms import eval_transform

        images = ImageDataset(dataset.samples, dataset.size, eval_transform(), dataset.cache,
                              resample=dataset.resample)
        # Own generator: extraction must not consume the global RNG (a resumed run would diverge).
        loader = DataLoader(images, batch_size=self.settings.recipe.feature_batch, generator=torch.Generator(),
                            num_workers=self.workers if len(images) > self.settings.recipe.feature_batch else 0)
        was_training = self.model.training
        self.model.eval()
        rows, labels = [], []
        try:
            for batch, pids, _, modality in loader:
                rows.append(self.model.bn_feature(batch.to(device), modality.to(device)).float())
                labels.append(pids)
        finally:
            self.model.train(was_training)
        features = torch.cat(rows)
        if self.settings.recipe.normalize_input:
            features = F.normalize(features, dim=1)
        self._features = (features, torch.cat(labels).to(device))
        log.info("NFormer stage 2: cached %d training features of the frozen extractor", len(features))

    def cached_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._features is None:
            raise RuntimeError("NFormer stage 2 started before the training features were cached "
                               "(on_epoch_start caches them at the first stage-2 epoch)")
        return self._features

    # ------------------------------------------------------------ training

    def _terms(self, logits, feat, labels, centres: str, prefix: str = "") -> dict:
        s = self.settings.loss
        terms = {"id": s.id * id_loss(logits, labels, s.label_smoothing)}
        if s.triplet:
            terms["triplet"] = s.triplet * triplet_hard(feat, labels, s.triplet_margin)
        if s.centre:
            terms["centre"] = s.centre * centre_loss(feat, labels, getattr(self.model, centres))
            setattr(self.model, centres, centre_step(getattr(self.model, centres), feat, labels, s.centre_lr))
        return {prefix + k: v for k, v in terms.items()}

    def training_step(self, model, batch) -> dict:
        if self.in_stage2():
            feats, labels = batch
            if feats.dim() != 3:
                raise ValueError(f"NFormer stage 2 expects feature sequences (S, L, D), got {tuple(feats.shape)}")
            out = model(feats, stage="nformer")
            d = out["feat"].shape[-1]
            terms = self._terms(out["logits"].reshape(-1, out["logits"].shape[-1]), out["feat"].reshape(-1, d),
                                labels.reshape(-1), "nformer_centres", prefix="nf_")
            self.model.nformer_steps += 1
        else:
            images, pids, _, modality = batch
            out = model(images, modality)
            terms = self._terms(out["logits"], out["pooled"], pids, "centres")
        return {"loss": sum(terms.values()), **terms}

    # ------------------------------------------------------------ test

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)

    @torch.no_grad()
    def transductive(self, features: torch.Tensor) -> torch.Tensor:
        """One trial's query + gallery features (N, D), as ``embed`` gave them, through the NFormer together.

        Input and output are L2-normalised (the code's test). Refused for a run whose stage 2 has not trained.
        """
        if int(self.model.nformer_steps) == 0:
            raise ValueError("this run's NFormer (stage 2) has not been trained yet (its checkpoint is from stage 1, "
                             f"before epoch recipe.stage2_start = {self.settings.recipe.stage2_start}); evaluate it "
                             "without --transductive, or finish training")
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(F.normalize(features.float(), dim=1).unsqueeze(0), stage="nformer")[0]
        finally:
            self.model.train(was_training)
        return F.normalize(out, dim=1)
