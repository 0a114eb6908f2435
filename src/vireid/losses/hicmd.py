"""Hi-CMD's losses (Choi et al., CVPR 2020; survey seed 002, section 9).

Notation as the survey: x_1 visible, x_2 infrared of one identity; p_i the
prototype code, a_i = [a_i^s; a_i^c; a_i^p] the attribute code (style,
illumination, pose), a_i^ex = [a_i^c; a_i^p] its ID-excluded part; G the
decoder, D_i the discriminator of modality i. The survey writes the
reconstruction and code terms for x_1; each loss is the same for x_2 with the
roles swapped, and the recipe adds both.

* reconstruction (cross, same, cycle), each an L1 image distance:
    L_cross = |x_1 - G(p_2, a_2^s, a_1^ex)|_1
    L_same  = |x_1 - G(p_1, a_1^s, a_1^ex)|_1
    L_cycle = |x_1 - G(p^_1, a^_1^s, a^_1^ex)|_1   (hat: codes re-encoded from generated images)
* code reconstruction: L_code = |a_1^s - a^_1^s|_1 + |a_1^ex - a^_1^ex|_1
* KL of the ID-excluded code to N(0, I): :func:`kl_to_standard_normal`
* adversarial: the survey writes the log (non-saturating) GAN; the released
  code trains least squares (LSGAN, ``D_gan_type: lsgan``), which vireid
  follows: :func:`lsgan_discriminator_loss`, :func:`lsgan_generator_loss`.

Each function takes plain tensors and returns a scalar; ``|.|_1`` is the
mean absolute difference over all elements (the released code's
``recon_criterion``), not the sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def l1_reconstruction(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |output - target| over every element: any equal shapes, e.g. images (B, 3, H, W) or codes (B, D).

    The cross, same, cycle and code terms above are all this distance; which
    images or codes go in is what makes them different (the recipe).
    """
    if output.shape != target.shape:
        raise ValueError(f"an L1 reconstruction needs equal shapes, got {tuple(output.shape)} and "
                         f"{tuple(target.shape)}")
    return (output - target).abs().mean()


def kl_to_standard_normal(code: torch.Tensor) -> torch.Tensor:
    """KL(N(a, I) || N(0, I)) of the ID-excluded code a (B, D), as the released code computes it: mean(a^2).

    With unit variance the KL of each sample is 1/2 |a|^2; the released code
    (after MUNIT) drops the 1/2 and averages over the batch *and* the D
    dimensions, so the term's weight (1.0) means what it means there.
    """
    if code.dim() != 2:
        raise ValueError(f"the KL term needs a code (B, D), got shape {tuple(code.shape)}")
    return code.pow(2).mean()


def lsgan_discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN loss of a multi-scale discriminator, summed over its scales.

    ``real``/``fake``: the discriminator's outputs (one map (B, 1, h_k, w_k)
    per scale k) on real and on generated images:
        L_D = sum_k mean((D_k(real) - 1)^2) + mean(D_k(fake)^2).
    The fake images must be detached by the caller: this loss trains the
    discriminator only.
    """
    if len(real) != len(fake) or not real:
        raise ValueError(f"need one real and one fake output per scale, got {len(real)} and {len(fake)}")
    return sum((r - 1).pow(2).mean() + f.pow(2).mean() for r, f in zip(real, fake))


def lsgan_generator_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """The generator's least-squares GAN loss: sum_k mean((D_k(fake) - 1)^2) over the scales' outputs.

    Its gradient also reaches the discriminator's weights (it is computed
    through D); the recipe steps only the generator with it.
    """
    if not fake:
        raise ValueError("need at least one discriminator output")
    return sum((f - 1).pow(2).mean() for f in fake)
