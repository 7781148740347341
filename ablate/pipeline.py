"""Building the parts of one configuration, and the whole model that inference and export run.

The same feature-set module runs in the training data pipeline (one sequence at a time) and inside
`SignModel`, so training and the exported graph compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ablate.components import FEATURES, LOSSES, MODELS
from ablate.components.augmentations import Pipeline, compose
from ablate.config import Config


@dataclass
class Parts:
    """The trainable pieces of one configuration."""

    features: nn.Module  # raw [T, 543, 3] -> [T', F]; no parameters
    model: nn.Module  # [B, T, F], mask [B, T] -> [B, D]
    head: nn.Module  # logits(emb) -> [B, C]; forward(emb, labels) -> loss


def build_parts(config: Config, num_classes: int) -> Parts:
    feats = FEATURES.build(config.features.name, where="features", **config.features.params)
    model = MODELS.build(config.model.name, feats.out_dim, where="model", **config.model.params)
    head = LOSSES.build(config.loss.name, model.out_dim, num_classes, where="loss", **config.loss.params)
    return Parts(feats, model, head)


def build_augmentations(config: Config) -> Pipeline:
    """The sequence-level augmentations in order, and the batch-level one (mixup) if any."""
    return compose([(c.name, c.params) for c in config.augmentations], where="augmentations")


class SignModel(nn.Module):
    """Raw landmarks [T, 543, 3] (NaNs allowed) -> class probabilities [C]: what is exported."""

    def __init__(self, parts: Parts) -> None:
        super().__init__()
        self.features = parts.features
        self.model = parts.model
        self.head = parts.head

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.features(frames).unsqueeze(0)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        logits = self.head.logits(self.model(x, mask))
        return torch.softmax(logits, dim=-1)[0]
