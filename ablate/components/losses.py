"""Classification heads with their losses. Each builder takes (emb_dim, num_classes) as context and
returns a `Head`: `head.logits(emb)` for inference and accuracy, `head(emb, labels)` the mean loss.

Tags: "cosine" = class centres compared by cosine (logits = scale * cosine, no margin); "margin" =
a cosine head whose training loss puts a margin on the target class; "host" = its loss asks the
host mid-step (its training steps are not captured whole in CUDA graphs). Angular margins are in
RADIANS (`margin_rad`); pytorch-metric-learning takes degrees. With label smoothing the margin is
applied to the target logit first, then cross-entropy with smoothed targets runs over the
margined, scaled logits.
"""

from __future__ import annotations

import math

from ablate.components._heads import (
    AdaCosHead,
    ArcFaceCEHead,
    ArcFaceFocalHead,
    ArcFaceHead,
    CosFaceHead,
    FocalHead,
    Head,
    LinearHead,
)
from ablate.components._heads_metric import (
    MagFaceHead,
    MultiSimilarityHead,
    check_magface,
)
from ablate.errors import UserError
from ablate.registry import Registry

LOSSES = Registry("loss", context=("emb_dim", "num_classes"))

__all__ = ["LOSSES", "Head"]


def _check_sizes(emb_dim: int, num_classes: int, min_classes: int = 2) -> None:
    if emb_dim < 1:
        raise UserError(f"embedding size must be >= 1, got {emb_dim}")
    if num_classes < min_classes:
        raise UserError(f"this loss needs at least {min_classes} classes, got {num_classes}")


def _check_range(name: str, value: float, low: float, high: float, high_open: bool = True) -> None:
    if not (low <= value < high if high_open else low <= value <= high):
        raise UserError(f"loss parameter {name} must be in [{low}, {high}{')' if high_open else ']'}, got {value}")


def _check_margin_head(scale: float, margin_rad: float, label_smoothing: float) -> None:
    if scale <= 0:
        raise UserError(f"loss parameter scale must be > 0, got {scale}")
    _check_range("margin_rad", margin_rad, 0.0, math.pi / 2)
    _check_range("label_smoothing", label_smoothing, 0.0, 1.0)


def _check_focal(gamma: float, alpha: float) -> None:
    if gamma < 0 or alpha <= 0:
        raise UserError(f"focal needs gamma >= 0 and alpha > 0, got gamma={gamma}, alpha={alpha}")


@LOSSES.register("ce")
def ce(*, emb_dim: int, num_classes: int) -> Head:
    """Softmax cross-entropy on a Linear classifier."""
    _check_sizes(emb_dim, num_classes)
    return LinearHead(emb_dim, num_classes)


@LOSSES.register("ce_smooth")
def ce_smooth(*, emb_dim: int, num_classes: int, label_smoothing: float = 0.1) -> Head:
    """Label-smoothed softmax cross-entropy on a Linear classifier."""
    _check_sizes(emb_dim, num_classes)
    _check_range("label_smoothing", label_smoothing, 0.0, 1.0)
    return LinearHead(emb_dim, num_classes, label_smoothing)


@LOSSES.register("focal")
def focal(*, emb_dim: int, num_classes: int, gamma: float = 2.0, alpha: float = 1.0) -> Head:
    """Softmax focal loss, -alpha (1 - p_t)^gamma log p_t, on a Linear classifier.

    alpha is one constant factor (with a softmax it only rescales the loss); gamma = 0 is CE.
    """
    _check_sizes(emb_dim, num_classes)
    _check_focal(gamma, alpha)
    return FocalHead(emb_dim, num_classes, gamma, alpha)


@LOSSES.register("arcface", tags=("cosine", "margin"))
def arcface(
    *,
    emb_dim: int,
    num_classes: int,
    scale: float = 45.0,
    margin_rad: float = 0.4,
    label_smoothing: float = 0.0,
) -> Head:
    """ArcFace additive angular margin: target logit scale * cos(theta + margin_rad), margin in radians."""
    _check_sizes(emb_dim, num_classes)
    _check_margin_head(scale, margin_rad, label_smoothing)
    return ArcFaceHead(emb_dim, num_classes, scale, margin_rad, label_smoothing)


@LOSSES.register("subcenter_arcface", tags=("cosine", "margin"))
def subcenter_arcface(
    *,
    emb_dim: int,
    num_classes: int,
    sub_centers: int = 3,
    scale: float = 45.0,
    margin_rad: float = 0.4,
    label_smoothing: float = 0.2,
) -> Head:
    """Sub-center ArcFace (the baseline's head): k centres per class, the closest counts; margin in radians."""
    _check_sizes(emb_dim, num_classes)
    _check_margin_head(scale, margin_rad, label_smoothing)
    if sub_centers < 1:
        raise UserError(f"loss parameter sub_centers must be >= 1, got {sub_centers}")
    return ArcFaceHead(emb_dim, num_classes, scale, margin_rad, label_smoothing, sub_centers)


@LOSSES.register("cosface", tags=("cosine", "margin"))
def cosface(
    *,
    emb_dim: int,
    num_classes: int,
    scale: float = 45.0,
    margin: float = 0.35,
    label_smoothing: float = 0.0,
) -> Head:
    """CosFace additive cosine margin: target logit scale * (cos(theta) - margin), margin in cosine units."""
    _check_sizes(emb_dim, num_classes)
    if scale <= 0:
        raise UserError(f"loss parameter scale must be > 0, got {scale}")
    _check_range("margin", margin, 0.0, 1.0)
    _check_range("label_smoothing", label_smoothing, 0.0, 1.0)
    return CosFaceHead(emb_dim, num_classes, scale, margin, label_smoothing)


@LOSSES.register("adacos", tags=("cosine",))
def adacos(*, emb_dim: int, num_classes: int) -> Head:
    """AdaCos: cosine logits without margin, scale adapted per batch in training (needs >= 3 classes)."""
    # The initial scale sqrt(2) * ln(C - 1) is 0 for two classes.
    _check_sizes(emb_dim, num_classes, min_classes=3)
    return AdaCosHead(emb_dim, num_classes)


@LOSSES.register("arcface_focal", tags=("cosine", "margin"))
def arcface_focal(
    *,
    emb_dim: int,
    num_classes: int,
    scale: float = 45.0,
    margin_rad: float = 0.4,
    gamma: float = 2.0,
    alpha: float = 1.0,
) -> Head:
    """Focal loss over ArcFace's margined, scaled logits (margin in radians)."""
    _check_sizes(emb_dim, num_classes)
    _check_margin_head(scale, margin_rad, 0.0)
    _check_focal(gamma, alpha)
    return ArcFaceFocalHead(emb_dim, num_classes, scale, margin_rad, gamma, alpha)


@LOSSES.register("arcface_ce", tags=("cosine", "margin"))
def arcface_ce(
    *,
    emb_dim: int,
    num_classes: int,
    scale: float = 45.0,
    margin_rad: float = 0.4,
    label_smoothing: float = 0.0,
    ce_weight: float = 0.5,
) -> Head:
    """(1 - ce_weight) * ArcFace + ce_weight * CE on the same centres' un-margined logits.

    label_smoothing applies to the ArcFace term only; ce_weight in [0, 1] (0 = ArcFace alone).
    """
    _check_sizes(emb_dim, num_classes)
    _check_margin_head(scale, margin_rad, label_smoothing)
    _check_range("ce_weight", ce_weight, 0.0, 1.0, high_open=False)
    return ArcFaceCEHead(emb_dim, num_classes, scale, margin_rad, label_smoothing, ce_weight)


@LOSSES.register("magface", tags=("cosine", "margin"))
def magface(
    *,
    emb_dim: int,
    num_classes: int,
    scale: float = 64.0,
    norms: tuple[float, float] = (0.44, 4.87),
    margins: tuple[float, float] = (0.45, 0.8),
    reg_weight: float = 35.0,
) -> Head:
    """MagFace: an ArcFace margin (radians) from margins[0] to margins[1] as the embedding's norm
    goes from norms[0] to norms[1] (in units of sqrt(emb_dim): the paper's 10-110 at 512-d), plus
    reg_weight * (1/norm + norm/high^2); the paper's scale, margins and weight."""
    _check_sizes(emb_dim, num_classes)
    problem = check_magface(scale, norms, margins, reg_weight)
    if problem:
        raise UserError(f"loss parameter {problem}")
    return MagFaceHead(emb_dim, num_classes, scale, tuple(norms), tuple(margins), reg_weight)  # type: ignore[arg-type]


# "host": its miner picks the pairs by asking the host mid-step, which a CUDA graph cannot hold
# (capturing its step failed on an H100, 2026-11-27): its steps are not captured whole (train.whole_steps)
@LOSSES.register("multi_similarity", tags=("cosine", "host"))
def multi_similarity(
    *,
    emb_dim: int,
    num_classes: int,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float = 0.1,
    scale: float = 30.0,
    ce_weight: float = 1.0,
) -> Head:
    """Multi-Similarity pair loss (pytorch-metric-learning; alpha, beta, base and the miner's
    epsilon as there) plus ce_weight * cross-entropy over scale * cosine to class centres, which
    give the logits (a pair loss alone predicts no class)."""
    _check_sizes(emb_dim, num_classes)
    for name, value in (("alpha", alpha), ("beta", beta), ("scale", scale), ("ce_weight", ce_weight)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"loss parameter {name} must be > 0, got {value}")
    _check_range("base", base, -1.0, 1.0, high_open=False)
    _check_range("epsilon", epsilon, 0.0, 1.0, high_open=False)
    return MultiSimilarityHead(emb_dim, num_classes, scale, alpha, beta, base, epsilon, ce_weight)
