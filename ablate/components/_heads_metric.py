"""Heads of the write-up's metric-learning losses: MagFace and Multi-Similarity.

Both classify by cosine to learned class centres (`CosineHead.logits`: scale * cosine), so they
export like every cosine head; they differ in how training shapes the embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ablate.components._heads import SIN2_EPS, CosineHead, _wide


class MagFaceHead(CosineHead):
    """MagFace (Meng et al., CVPR 2021): ArcFace whose margin grows with the embedding's norm a,
    plus a regulariser that pulls a up.

    a = ||emb|| clamped to [low_norm, high_norm]; margin m(a) = low_margin + (a - low_norm) *
    (high_margin - low_margin) / (high_norm - low_norm) (radians); the target logit is
    scale * cos(theta + m(a)) (ArcFace's rule past theta = pi - m); the loss is the cross-entropy
    plus reg_weight * g(a), g(a) = 1 / a + a / high_norm^2. Inference: scale * cosine, no margin.

    `norms` are in units of sqrt(emb_dim): the models end in a LayerNorm, whose output has a norm
    of about sqrt(emb_dim) at unit gain (8 at width 64, 22.6 at 512), so bounds fixed in absolute
    units would clamp every embedding of a narrow model (no gradient through its norm: a plain
    fixed-margin ArcFace). The paper's 10-110 for 512-d features are about 0.44-4.87 of sqrt(512).
    """

    def __init__(self, emb_dim: int, num_classes: int, scale: float, norms: tuple[float, float],
                 margins: tuple[float, float], reg_weight: float) -> None:
        super().__init__(emb_dim, num_classes)
        self.scale = scale
        unit = math.sqrt(emb_dim)
        self.norms = (norms[0] * unit, norms[1] * unit)
        self.margins, self.reg_weight = margins, reg_weight

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        (lo_a, hi_a), (lo_m, hi_m) = self.norms, self.margins
        a = _wide(emb).norm(dim=-1).clamp(lo_a, hi_a)
        m = (lo_m + (a - lo_a) * (hi_m - lo_m) / (hi_a - lo_a)).unsqueeze(1)  # [B, 1]
        cos = self.cosine(emb)
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=SIN2_EPS))
        shifted = cos * torch.cos(m) - sin * torch.sin(m)
        target_cos = torch.where(cos >= -torch.cos(m), shifted, cos - m * torch.sin(m))
        target = F.one_hot(labels, self.num_classes).bool()
        logits = self.scale * torch.where(target, target_cos, cos)
        loss = F.cross_entropy(logits, labels, reduction="none") + self.reg_weight * (1.0 / a + a / hi_a**2)
        return loss.mean() if reduction == "mean" else loss


class MultiSimilarityHead(CosineHead):
    """Multi-Similarity loss (Wang et al., CVPR 2019; pytorch-metric-learning's MultiSimilarityLoss
    with its MultiSimilarityMiner) on the batch's embeddings, plus ce_weight * cross-entropy over
    scale * cosine to learned class centres.

    The pair loss alone has no classes to predict: the centres, trained by the cross-entropy term
    on the same embeddings, give the logits for validation and the exported model (scale * cosine,
    as every cosine head). The pair term is one number per batch; with reduction "none" it is added
    to every sample's cross-entropy, so a mixup batch mixes it like the rest.
    """

    def __init__(self, emb_dim: int, num_classes: int, scale: float, alpha: float, beta: float, base: float,
                 epsilon: float, ce_weight: float) -> None:
        from pytorch_metric_learning import losses, miners

        super().__init__(emb_dim, num_classes)
        self.scale, self.ce_weight = scale, ce_weight
        self.pairs = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = miners.MultiSimilarityMiner(epsilon=epsilon)

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        wide = _wide(emb)
        with torch.autocast(wide.device.type, enabled=False):  # the library's matmuls in float32 too
            pair = self.pairs(wide, labels, self.miner(wide, labels))
        ce = F.cross_entropy(self.scale * self.cosine(emb), labels, reduction=reduction)
        return pair + self.ce_weight * ce


def check_magface(scale: float, norms: tuple[float, float], margins: tuple[float, float], reg_weight: float) -> str:
    """'' when the MagFace parameters are usable, else what is wrong."""
    if not (math.isfinite(scale) and scale > 0):
        return f"scale must be > 0, got {scale}"
    if not 0 < norms[0] < norms[1]:
        return f"norms must be [low, high] with 0 < low < high, got {list(norms)}"
    if not 0 <= margins[0] <= margins[1] < math.pi / 2:
        return f"margins must be [low, high] radians with 0 <= low <= high < pi/2, got {list(margins)}"
    if reg_weight < 0:
        return f"reg_weight must be >= 0, got {reg_weight}"
    return ""
