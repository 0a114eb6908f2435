"""The transductive evaluation step: one trial's query + gallery features post-processed together.

Some methods refine a test feature with the other test features: NFormer
(Wang et al., CVPR 2022) passes every query and gallery feature of a trial
through its neighbour transformer at once. That uses the test set itself, so
the numbers are not comparable with per-image features and are always
reported under their own label, ``[transductive]`` (as re-ranking is labelled
``[re-ranked]``), and the step is never on by default (``eval.transductive``,
``vireid eval --transductive``).

The contract: a recipe that has such a step defines

    transductive(features: (N, D) float tensor) -> (N, D') float tensor

taking the rows of one trial (queries first, then the gallery, in the
protocol's order) as its ``embed`` produced them, in eval mode, and returning
one row per input row, in the same order. Distances (cosine, or re-ranking)
are computed on what it returns. A recipe without it gets a clear error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Transductive = Callable[[torch.Tensor], torch.Tensor]


def transductive_step(recipe, device: torch.device | str = "cpu") -> Transductive:
    """The recipe's transductive step as ``features (N, D) CPU -> (N, D') float32 CPU``, run on ``device``.

    Raises ValueError naming the method when its recipe has no ``transductive``.
    """
    if not recipe.offers("transductive"):
        raise ValueError(f"method {recipe.name!r} has no transductive step, so eval.transductive / --transductive "
                         "cannot be used with it; only methods whose recipe defines transductive(features) -> features "
                         "offer one (e.g. method: nformer). Evaluate without it (--no-transductive)")
    device = torch.device(device)

    @torch.no_grad()
    def apply(features: torch.Tensor) -> torch.Tensor:
        return check_output(recipe.transductive(features.to(device)), len(features)).float().cpu()

    return apply


def check_output(out, rows: int) -> torch.Tensor:
    """``out`` when it is a (rows, D') tensor; otherwise a ValueError saying what came back."""
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != rows:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the transductive step returned {shape} for {rows} feature rows; expected ({rows}, dim)")
    return out
