"""Building the parts of one configuration, and the whole model that inference and export run.

The same feature-set module serves training (its `batched` form, on whole batches on the device)
and `SignModel` (its per-sequence `forward`, the exported graph); tests hold the two equal, so
training and the exported graph compute the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ablate.components import FEATURES, LOSSES, MODELS, OPTIMIZERS, SCHEDULES
from ablate.components.augmentations import Pipeline, compose
from ablate.config import Config
from ablate.errors import UserError, first_line

CHECK_CLASSES = 250  # the competition's sign count: what a config is checked against before data is read


@dataclass
class Parts:
    """The trainable pieces of one configuration."""

    features: nn.Module  # raw [T, 543, 3] -> [T', F]; no parameters
    model: nn.Module  # [B, T, F], mask [B, T] -> [B, D]
    head: nn.Module  # logits(emb) -> [B, C]; forward(emb, labels) -> loss


def build_parts(config: Config, num_classes: int) -> Parts:
    feats = FEATURES.build(config.features.name, config.features.params, where="features")
    model = MODELS.build(config.model.name, config.model.params, where="model", in_dim=feats.out_dim,
                         frames=feats.max_frames, points=feats.point_layout())
    head = LOSSES.build(config.loss.name, config.loss.params, where="loss", emb_dim=model.out_dim,
                        num_classes=num_classes)
    return Parts(feats, model, head)


def build_augmentations(config: Config) -> Pipeline:
    """The sequence-level augmentations in order, and the batch-level one (mixup) if any."""
    return compose([(c.name, c.params) for c in config.augmentations], where="augmentations")


def check_buildable(config: Config, where: str) -> None:
    """Build every part of `config` once on the meta device (shapes only: no memory, no arithmetic),
    so that a value a component refuses (heads that do not divide the width, a dropout of 1.5)
    stops a search space when it is loaded, not every trial of a study. `where` prefixes the error."""
    try:
        with torch.device("meta"):
            parts = build_parts(config, CHECK_CLASSES)
            weights = [*parts.model.parameters(), *parts.head.parameters()]
            optimizer = OPTIMIZERS.build(config.optimizer.name, config.optimizer.params, weights=weights)
            stepped = getattr(optimizer, "base_optimizer", optimizer)
            SCHEDULES.build(config.schedule.name, config.schedule.params, optimizer=stepped, epochs=config.epochs,
                            steps_per_epoch=1)
        build_augmentations(config)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    except (ValueError, TypeError, RuntimeError) as e:  # a library's own check (e.g. torch's LSTM dropout)
        raise UserError(f"{where}: cannot build ({type(e).__name__}: {first_line(e)})") from None


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


class Pretraining:
    """The write-up's "encoder pretrain, arcface tuning": for the first floor(share * epochs) epochs
    the model trains under a plain softmax head (the `ce` loss) instead of the recipe's, which then
    takes over, untrained, with the pretrained encoder, for the rest (at least the last epoch, as
    share < 1). One optimizer and one learning-rate schedule run across both stages; the softmax
    head is dropped at the end (what is validated last and exported is the recipe's head)."""

    def __init__(self, parts: Parts, share: float, epochs: int, num_classes: int) -> None:
        self.epochs = min(math.floor(share * epochs + 1e-9), epochs - 1)  # the recipe's head gets >= 1 epoch
        self.head = LOSSES.build("ce", {}, emb_dim=parts.model.out_dim, num_classes=num_classes) if self.epochs else None

    def parts(self, parts: Parts, epoch: int) -> Parts:
        """The parts an epoch trains and validates: the softmax head during the pretraining."""
        return Parts(parts.features, parts.model, self.head) if self.head is not None and epoch < self.epochs else parts


class LateDropout:
    """The write-up's late dropout: the model's nn.Dropout modules off (p = 0) for the first
    floor(share * epochs) epochs, then at their built p; at least the last epoch trains with
    dropout, as share < 1. An LSTM's own dropout between its layers is not switched."""

    def __init__(self, model: nn.Module, share: float, epochs: int) -> None:
        self.modules = [(m, m.p) for m in model.modules() if isinstance(m, nn.Dropout)]
        # 0.07 * 100 is 7.000000000000001: 7 epochs; at least the last epoch with dropout
        self.off = min(math.floor(share * epochs + 1e-9), epochs - 1)

    def set(self, epoch: int) -> None:
        for module, p in self.modules:
            module.p = 0.0 if epoch < self.off else p
