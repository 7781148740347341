"""Classification heads. A head owns its weights and gives two things:

- `logits(emb [B, D]) -> [B, C]`: what inference and accuracy use (exported with the model, so it is
  export-safe: hand-written l2 normalisation, no F.normalize). For cosine heads this is
  scale * cosine WITHOUT any margin, taking the best sub-centre of each class.
- `forward(emb, labels [B], reduction="mean") -> scalar`: the mean training loss; with
  reduction="none" one loss per sample [B] (mixup weights each sample's two targets).

Losses are computed in at least float32: fp16/bf16 inputs (mixed precision) are widened first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.components._layers import l2_normalize

# Lower bound on 1 - cos^2 before the square root in ArcFace: sqrt has an infinite gradient at 0.
SIN2_EPS = 1e-12


def _wide(x: Tensor) -> Tensor:
    """x in at least float32 (a no-op, and no exported Cast, for float32 and float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def focal_loss(logits: Tensor, labels: Tensor, gamma: float, alpha: float, reduction: str = "mean") -> Tensor:
    """Batch mean of -alpha * (1 - p_t)^gamma * log p_t, p_t = softmax(logits)[label] (Lin et al. 2017).

    gamma = 0 and alpha = 1 is cross-entropy. With a softmax a single alpha is a constant factor on
    the loss (the class-balancing alpha of the paper would need one weight per class).
    """
    log_pt = torch.log_softmax(_wide(logits), dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    modulator = (1.0 - log_pt.exp()).clamp(min=0.0) ** gamma
    loss = -alpha * modulator * log_pt
    return loss.mean() if reduction == "mean" else loss


class Head(nn.Module):
    """Base class of every loss head: `logits(emb)` for inference, `forward(emb, labels)` the loss."""

    def logits(self, emb: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        raise NotImplementedError

    def mixed(self, emb: Tensor, labels: Tensor, partners: Tensor, lam: Tensor) -> Tensor:
        """Mixup's loss: each sample's lam * L(its label) + (1 - lam) * L(its partner's), averaged.

        One call per batch, so that a head with state (AdaCos) moves it once and never changes a
        tensor that the first of the two losses still needs for its backward pass."""
        first = self(emb, labels, reduction="none")
        return (lam * first + (1 - lam) * self(emb, partners, reduction="none")).mean()


class LinearHead(Head):
    """A Linear classifier trained with (optionally label-smoothed) softmax cross-entropy."""

    def __init__(self, emb_dim: int, num_classes: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(emb_dim, num_classes)
        self.label_smoothing = label_smoothing

    def logits(self, emb: Tensor) -> Tensor:
        return self.fc(emb)

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        return F.cross_entropy(_wide(self.logits(emb)), labels, label_smoothing=self.label_smoothing, reduction=reduction)


class FocalHead(LinearHead):
    """A Linear classifier trained with the softmax focal loss."""

    def __init__(self, emb_dim: int, num_classes: int, gamma: float, alpha: float) -> None:
        super().__init__(emb_dim, num_classes)
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        return focal_loss(self.logits(emb), labels, self.gamma, self.alpha, reduction)


class CosineHead(Head):
    """Class centres compared by cosine; `sub_centers` centres per class, the closest one counts.

    weight is [num_classes * sub_centers, D]; row c * sub_centers + j is sub-centre j of class c
    (pytorch-metric-learning's W is the transpose, [D, C * k], in the same order). Subclasses set
    `scale` (a float, or a buffer for AdaCos).
    """

    scale: float | Tensor

    def __init__(self, emb_dim: int, num_classes: int, sub_centers: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.sub_centers = sub_centers
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, emb_dim))
        nn.init.xavier_normal_(self.weight)

    def cosine(self, emb: Tensor) -> Tensor:
        """Cosine [B, C] between each embedding and its closest sub-centre of every class."""
        cos = _wide(l2_normalize(_wide(emb)) @ l2_normalize(_wide(self.weight)).t())
        if self.sub_centers > 1:
            cos = cos.reshape(cos.shape[0], self.num_classes, self.sub_centers).amax(dim=-1)
        return cos

    def logits(self, emb: Tensor) -> Tensor:
        return self.scale * self.cosine(emb)


class MarginHead(CosineHead):
    """Cosine head whose training logits change the target class's cosine by a margin.

    Loss: cross-entropy over scale * (cosine with the target entry margined), with smoothed targets
    (1 - label_smoothing on the label plus label_smoothing / C on every class, as
    F.cross_entropy(label_smoothing=...)). So smoothing spreads probability over the other classes
    while the margin still applies to the label's logit only.
    """

    def __init__(
        self, emb_dim: int, num_classes: int, scale: float, label_smoothing: float, sub_centers: int = 1
    ) -> None:
        super().__init__(emb_dim, num_classes, sub_centers)
        self.scale = scale
        self.label_smoothing = label_smoothing

    def margined(self, cos: Tensor) -> Tensor:
        """The target's cosine after the margin (applied elementwise; only the target entry is used)."""
        raise NotImplementedError

    def margin_logits(self, cos: Tensor, labels: Tensor) -> Tensor:
        target = F.one_hot(labels, self.num_classes).bool()
        return self.scale * torch.where(target, self.margined(cos), cos)

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        logits = self.margin_logits(self.cosine(emb), labels)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction=reduction)


class ArcFaceHead(MarginHead):
    """ArcFace (Deng et al. 2019): the target logit is scale * cos(theta + margin_rad).

    cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m) with sin(theta) = sqrt(1 - cos^2) (theta
    is in [0, pi]), which avoids acos and its infinite gradient at +-1. Past theta = pi - m,
    cos(theta + m) would grow again; there the target uses cos(theta) - m sin(m) instead, the same
    rule as insightface and pytorch-metric-learning.
    """

    def __init__(
        self,
        emb_dim: int,
        num_classes: int,
        scale: float,
        margin_rad: float,
        label_smoothing: float,
        sub_centers: int = 1,
    ) -> None:
        super().__init__(emb_dim, num_classes, scale, label_smoothing, sub_centers)
        self.margin_rad = margin_rad
        self.cos_m = math.cos(margin_rad)
        self.sin_m = math.sin(margin_rad)

    def margined(self, cos: Tensor) -> Tensor:
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=SIN2_EPS))
        shifted = cos * self.cos_m - sin * self.sin_m
        return torch.where(cos >= -self.cos_m, shifted, cos - self.margin_rad * self.sin_m)


class CosFaceHead(MarginHead):
    """CosFace (Wang et al. 2018): the target logit is scale * (cos(theta) - margin)."""

    def __init__(self, emb_dim: int, num_classes: int, scale: float, margin: float, label_smoothing: float) -> None:
        super().__init__(emb_dim, num_classes, scale, label_smoothing)
        self.margin = margin

    def margined(self, cos: Tensor) -> Tensor:
        return cos - self.margin


class ArcFaceFocalHead(ArcFaceHead):
    """ArcFace logits (margin on the target) trained with the focal loss instead of plain CE."""

    def __init__(
        self, emb_dim: int, num_classes: int, scale: float, margin_rad: float, gamma: float, alpha: float
    ) -> None:
        super().__init__(emb_dim, num_classes, scale, margin_rad, 0.0)
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        return focal_loss(self.margin_logits(self.cosine(emb), labels), labels, self.gamma, self.alpha, reduction)


class ArcFaceCEHead(ArcFaceHead):
    """(1 - ce_weight) * ArcFace loss + ce_weight * plain CE on the same centres' un-margined logits.

    Both terms share one set of class centres, and `logits` (scale * cosine) is what the CE term
    trains, so inference uses exactly the logits the CE term optimises.
    """

    def __init__(
        self,
        emb_dim: int,
        num_classes: int,
        scale: float,
        margin_rad: float,
        label_smoothing: float,
        ce_weight: float,
    ) -> None:
        super().__init__(emb_dim, num_classes, scale, margin_rad, label_smoothing)
        self.ce_weight = ce_weight

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        cos = self.cosine(emb)
        arc = F.cross_entropy(self.margin_logits(cos, labels), labels, label_smoothing=self.label_smoothing,
                              reduction=reduction)
        plain = F.cross_entropy(self.scale * cos, labels, reduction=reduction)
        return (1.0 - self.ce_weight) * arc + self.ce_weight * plain


class AdaCosHead(CosineHead):
    """AdaCos (Zhang et al. 2019, "AdaCos: Adaptively Scaling Cosine Logits"): no margin, and the
    scale s adapts during training.

    s starts at the fixed AdaCos value sqrt(2) * ln(C - 1). Each training forward first updates it
    from the batch (no gradient through it), then computes CE over s * cosine with the new s:
        B_avg = (1 / B) * sum_i sum_{k != y_i} exp(s_old * cos(theta_ik))
        s_new = ln(B_avg) / cos(min(pi / 4, theta_med)),
    theta_med the median target angle of the batch (torch.median: the lower of the two middle
    values for an even batch). s is a buffer (saved, exported); eval mode leaves it unchanged.
    """

    def __init__(self, emb_dim: int, num_classes: int) -> None:
        super().__init__(emb_dim, num_classes)
        self.register_buffer("scale", torch.tensor(math.sqrt(2.0) * math.log(num_classes - 1)))

    @torch.no_grad()
    def update_scale(self, cos: Tensor, labels: Tensor) -> None:
        target = F.one_hot(labels, self.num_classes).bool()
        others = torch.where(target, torch.zeros_like(cos), torch.exp(self.scale * cos))
        b_avg = others.sum() / cos.shape[0]
        theta = torch.acos(cos.gather(1, labels.unsqueeze(1)).clamp(-1.0, 1.0))
        theta_med = theta.median().clamp(max=math.pi / 4)
        self.scale.copy_(torch.log(b_avg) / torch.cos(theta_med))

    def forward(self, emb: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        cos = self.cosine(emb)
        if self.training:
            self.update_scale(cos.detach(), labels)
        # a copy in the graph: a later in-place update of the buffer cannot break this backward pass
        return F.cross_entropy(self.scale.clone() * cos, labels, reduction=reduction)

    def mixed(self, emb: Tensor, labels: Tensor, partners: Tensor, lam: Tensor) -> Tensor:
        """The scale moves once per batch, from each sample's dominant label (lam >= 0.5: its own)."""
        cos = self.cosine(emb)
        if self.training:
            self.update_scale(cos.detach(), torch.where(lam >= 0.5, labels, partners))
        logits = self.scale.clone() * cos
        first = F.cross_entropy(logits, labels, reduction="none")
        return (lam * first + (1 - lam) * F.cross_entropy(logits, partners, reduction="none")).mean()
