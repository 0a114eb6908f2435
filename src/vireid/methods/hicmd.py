"""Hi-CMD as a recipe with three optimisers: discriminators, then generator + HFL, alternating every step.

Hi-CMD (Choi et al., CVPR 2020; survey seed 002, section 9; the network is
:mod:`vireid.models.hicmd`, the losses :mod:`vireid.losses.hicmd`). Each batch
is cut into (visible x_a, infrared x_b) pairs of one identity. One iteration:

1. codes: (p_a, a_a) = E_vis(x_a), (p_b, a_b) = E_ir(x_b); generated images
   x_ba = G(p_b, a_b^s, a_a^ex) (identity of b, modality and pose of a), x_ab
   likewise, and the illumination-only swaps x_ba^c = G(p_b, a_b^s, a_a^c, a_b^p),
   x_ab^c (the survey's second adversarial term);
2. ``dis`` update: gan * sum of the LSGAN discriminator losses of D_vis on
   (x_a; x_ba, x_ba^c) and D_ir on (x_b; x_ab, x_ab^c), the fakes detached, so
   it cannot reach the generator;
3. ``gen`` + ``id`` update (one backward, both stepped, as the released code):
       same * L_same + cross * L_cross + cycle * L_cycle + code * L_code + kl * L_KL
       + gan * L_adv (through the discriminators as step 2 left them; only the
         generator is stepped with it)
       + ce * CE + triplet * triplet(margin 0.5)
   where CE and the batch-hard triplet run on the HFL features of the real
   pairs' codes and of the codes re-encoded from the (detached) x_ba and x_ab,
   all labelled with the pair's identity.

Where the survey is silent vireid follows the released code (bismex/HiCMD):
the weights (50, 50, 50, 10, 1, 20, 1, 1), LSGAN, Adam (0.5, 0.999) at 1e-4 for
G and D, SGD (Nesterov, 0.9) at 1e-3 for HFL with the combination weight at
0.01 x, everything halved every 50k (SYSU) / 25k (RegDB) iterations. vireid's
own readings: L_same decodes each image's *own* codes (the survey's equation;
the released code decodes it with the partner's style, equal for one identity);
the cycle decodes the re-encoded codes a^ (the survey's equation; the code reuses
the swapped ones); CE/triplet on the four real/generated code sets (the released
code adds mixed prototype/style combinations and random erasing).

The test feature is the HFL bottleneck, ranked by vireid's cosine distance:
the paper's Euclidean distance on the L2-normalised feature (the released
code's ``test_norm``), which orders a gallery identically.

Every ``recipe.picture_every`` iterations a picture of the generator at work is
written to ``<run>/pictures/step_<N>.png`` (:func:`write_picture`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vireid.data.pairing import pair_by_identity
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vireid.losses import id_loss, triplet_hard
from vireid.losses.hicmd import kl_to_standard_normal, l1_reconstruction, lsgan_discriminator_loss, lsgan_generator_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import flip_average
from vireid.models import build_model
from vireid.models.hicmd import mix_codes
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class ModelSettings:
    """``model:`` sizes of every part (:class:`vireid.models.hicmd.HiCMDNet`); the defaults are the released code's."""

    backbone: str = setting("resnet", doc="attribute encoders' and ID trunk's CNN: resnet, osnet_*, plain_w<N>")
    depth: int = setting(50, choices=(18, 34, 50))
    pretrained: str | None = setting(None, doc="torchvision-named ImageNet ResNet checkpoint")
    gen_dim: int = setting(32, low=1, doc="prototype encoder's first width")
    gen_down: int = setting(2, low=0, doc="stride-2 convs in E^p (and upsamplings in G)")
    gen_res: int = setting(4, low=1, doc="residual blocks in E^p and AdaIN blocks in G")
    mlp_dim: int = setting(512, low=1)
    mlp_layers: int = setting(3, low=1)
    att_dim: int = setting(0, low=0, doc="0: the trunk's width (2048 for ResNet-50); else a linear map to it")
    style_ratio: float = setting(0.5, low=0, high=1)
    pose_ratio: float = setting(0.5, low=0, high=1)
    dis_dim: int = setting(32, low=1)
    dis_layers: int = setting(2, low=1)
    dis_scales: int = setting(3, low=1)
    id_layers: tuple[str, ...] = setting(("layer3",), doc="trunk stages of the ID trunk on the prototype code")
    fc1: int = setting(2048, low=1, doc="bottleneck width (the test feature)")
    fc2: int = setting(1024, low=1, doc="triplet feature width")
    dropout: float = setting(0.5, low=0, high=1)


@dataclass(frozen=True)
class LossSettings:
    """``loss:`` the weights of every term (released code ``set_option.py``) and the triplet margin."""

    same: float = setting(50.0, low=0, doc="w_recon_x")
    cross: float = setting(50.0, low=0, doc="w_cross_x")
    cycle: float = setting(50.0, low=0, doc="w_cycle_x")
    code: float = setting(10.0, low=0, doc="w_recon_s")
    kl: float = setting(1.0, low=0, doc="w_style_kl")
    gan: float = setting(20.0, low=0, doc="w_gan (discriminator and generator)")
    ce: float = setting(1.0, low=0)
    triplet: float = setting(1.0, low=0)
    triplet_margin: float = setting(0.5, low=0)
    label_smoothing: float = setting(0.0, low=0, high=1)


@dataclass(frozen=True)
class RecipeSettings:
    """``recipe:`` the combination weight's LR and the progress pictures."""

    combine_lr_mult: float = setting(0.01, low=0, doc="the learnt prototype/style weight at this x the id LR")
    picture_every: int = setting(1000, low=0, doc="iterations between pictures of the generator; 0: none")
    picture_pairs: int = setting(8, low=1, doc="pairs (rows) per picture")


PICTURE_COLUMNS = ("visible", "infrared", "swap->vis", "swap->ir", "illum->vis", "illum->ir", "same vis",
                   "same ir", "cycle vis", "cycle ir")


@METHODS.register("hicmd")
class HiCMDRecipe(Method):
    """``method: hicmd``; sections ``model``, ``loss``, ``recipe`` (the dataclasses above); optimisers gen, dis, id."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        model = self.settings.model
        self.model = build_model("hicmd", num_classes=num_classes, **to_dict(model))
        self.trainer = None

    def optimizers(self) -> dict[str, list[dict]]:
        m = self.model
        combine = m.id_head.weight
        return {"gen": [{"params": m.generator_parameters()}],
                "dis": [{"params": m.discriminator_parameters()}],
                "id": [{"params": [p for p in m.id_parameters() if p is not combine]},
                       {"params": [combine], "lr_mult": self.settings.recipe.combine_lr_mult}]}

    def on_epoch_start(self, epoch: int, trainer=None) -> None:
        self.trainer = trainer  # for the run directory and the step count of the pictures

    def training_step(self, model, batch):
        """Yields the ``dis`` update, then the joint ``gen`` + ``id`` update (see the module docstring)."""
        images, pids, _, modality = batch[:4]
        try:
            vis, ir = pair_by_identity(pids, modality)
        except ValueError:
            raise ValueError("Hi-CMD needs, in every batch, identities with both a visible and an infrared image "
                             "(the P x (K visible + K infrared) sampler)") from None
        x_a, x_b, labels = images[vis], images[ir], pids[vis]
        L, net = self.settings.loss, self.model
        style, ex, illum = net.style_idx, net.ex_idx, net.illum_idx
        p_a, a_a = model.encode(x_a, VISIBLE)
        p_b, a_b = model.encode(x_b, INFRARED)
        x_ba = model.decode(p_b, mix_codes(a_a, a_b, style))  # identity (p, style) of b, modality and pose of a
        x_ab = model.decode(p_a, mix_codes(a_b, a_a, style))
        x_ba_c = model.decode(p_b, mix_codes(a_b, a_a, illum))  # b with a's illumination only
        x_ab_c = model.decode(p_a, mix_codes(a_a, a_b, illum))
        reals, fakes = {VISIBLE: x_a, INFRARED: x_b}, {VISIBLE: (x_ba, x_ba_c), INFRARED: (x_ab, x_ab_c)}

        d_loss = 0.0
        for m in (VISIBLE, INFRARED):
            real = model.discriminate(reals[m], m)
            for fake in fakes[m]:
                d_loss = d_loss + lsgan_discriminator_loss(real, model.discriminate(fake.detach(), m))
        yield "dis", {"loss": L.gan * d_loss, "dis": L.gan * d_loss}

        same_a, same_b = model.decode(p_a, a_a), model.decode(p_b, a_b)
        p_a_hat, a_ab = model.encode(x_ab, INFRARED)  # x_ab carries a's identity and style
        p_b_hat, a_ba = model.encode(x_ba, VISIBLE)  # x_ba carries a's illumination and pose
        a_hat, b_hat = mix_codes(a_ab, a_ba, ex), mix_codes(a_ba, a_ab, ex)  # a^ = [a^s from x_ab; a^ex from x_ba]
        cycle_a, cycle_b = model.decode(p_a_hat, a_hat), model.decode(p_b_hat, b_hat)
        terms = {
            "same": L.same * (l1_reconstruction(same_a, x_a) + l1_reconstruction(same_b, x_b)),
            "cross": L.cross * (l1_reconstruction(x_ba, x_a) + l1_reconstruction(x_ab, x_b)),
            "cycle": L.cycle * (l1_reconstruction(cycle_a, x_a) + l1_reconstruction(cycle_b, x_b)),
            "code": L.code * sum(l1_reconstruction(hat[:, part], code[:, part])
                                 for hat, code in ((a_hat, a_a), (b_hat, a_b)) for part in (style, ex)),
            "kl": L.kl * (kl_to_standard_normal(a_a[:, ex]) + kl_to_standard_normal(a_b[:, ex])),
            "adv": L.gan * sum(lsgan_generator_loss(model.discriminate(fake, m))
                               for m in (VISIBLE, INFRARED) for fake in fakes[m]),
        }
        outs = [model.identify(p_a, a_a), model.identify(p_b, a_b),
                model.identify(*model.encode(x_ba.detach(), VISIBLE)),
                model.identify(*model.encode(x_ab.detach(), INFRARED))]
        all_labels = labels.repeat(len(outs))
        terms["ce"] = L.ce * id_loss(torch.cat([o["logits"] for o in outs]), all_labels, L.label_smoothing)
        terms["triplet"] = L.triplet * triplet_hard(torch.cat([o["triplet"] for o in outs]).float(), all_labels,
                                                    L.triplet_margin)
        self._maybe_picture((x_a, x_b, x_ba, x_ab, x_ba_c, x_ab_c, same_a, same_b, cycle_a, cycle_b))
        yield ("gen", "id"), {"loss": sum(terms.values()), **terms}

    def _maybe_picture(self, columns) -> None:
        t = self.trainer
        every = self.settings.recipe.picture_every
        if t is None or not every or (t.global_step + 1) % every or not getattr(t, "is_main", True):
            return
        write_picture(Path(t.run_dir) / "pictures" / f"step_{t.global_step + 1:07d}.png",
                      dict(zip(PICTURE_COLUMNS, columns)), self.settings.recipe.picture_pairs)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(lambda x, m: self.model(x, m)["feat"], images, modality, self.flip)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Loader-normalised images (N, 3, H, W) -> uint8 (N, H, W, 3), undoing the ImageNet normalisation."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device)[:, None, None]
    pixels = (images.detach().float() * std + mean).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def write_picture(path: str | Path, columns: dict[str, torch.Tensor], rows: int = 8) -> Path:
    """A PNG grid: one row per pair (at most ``rows``), one labelled column per tensor (N, 3, H, W).

    Shows the inputs next to the swapped, illumination-swapped, same-modality
    and cycle reconstructions, so a user sees what the generator has learnt.
    """
    from PIL import Image, ImageDraw

    tiles = {name: to_pixels(images[:rows]) for name, images in columns.items()}
    n, h, w = next(iter(tiles.values())).shape[:3]
    label, gap = 12, 2
    cell = max(w, 6 * max(len(name) for name in tiles))  # room for the column label
    canvas = Image.new("RGB", (len(tiles) * (cell + gap), label + n * (h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (name, pixels) in enumerate(tiles.items()):
        x = c * (cell + gap)
        draw.text((x + 1, 0), name, fill="black")
        for r in range(min(n, len(pixels))):
            canvas.paste(Image.fromarray(pixels[r].numpy()), (x + (cell - w) // 2, label + r * (h + gap)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
