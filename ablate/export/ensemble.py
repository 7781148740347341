"""The exported graph: raw landmarks -> one feature pass -> every member model -> combined probabilities.

The feature sets have no parameters and do not depend on the fold, so the features are computed
once and shared by the fold models (five times less preprocessing than five `SignModel`s).
Optional test-time augmentation runs the mirrored sequence too (`tta="hflip"`). The members'
probabilities (every fold's model, every seed of each, every view) are combined by one rule
(`combine`, which also compares the rules on out-of-fold predictions):
    mean  the mean of the probabilities (the baseline's);
    vote  each member votes for its top class; the most votes win, ties broken by the mean
          probability (output: votes + mean, normalised to sum 1);
    max   the class with the highest probability in any member (output: the per-class maximum,
          normalised to sum 1).
Everything here must trace for any number of frames: see ../shared/EXPORT.md.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ablate.data import landmarks as lm
from ablate.parts import Parts

TTA_CHOICES = ("none", "hflip")
RULES = ("mean", "vote", "max")


def combine(probs: torch.Tensor, rule: str) -> torch.Tensor:
    """Members' probabilities [M, ..., C] -> one distribution [..., C] by `rule` (see above)."""
    mean = probs.mean(dim=0)
    if rule == "mean":
        return mean
    if rule == "max":
        out = probs.max(dim=0).values
    elif rule == "vote":
        top = (probs >= probs.max(dim=-1, keepdim=True).values).to(probs.dtype)  # a member's tie: a vote each
        out = top.sum(dim=0) + mean  # mean < 1 <= one vote: it only breaks ties
    else:
        raise ValueError(f"ensemble rule {rule!r}: expected one of {', '.join(RULES)}")
    return out / out.sum(dim=-1, keepdim=True)


class Ensemble(nn.Module):
    """Raw landmarks [T, 543, 3] (NaNs allowed) -> the members' class probabilities, combined by `rule` [C_out]."""

    def __init__(self, folds: Sequence[Parts], tta: str = "none", out_index: Sequence[int] | None = None,
                 rule: str = "mean") -> None:
        super().__init__()
        if not folds:
            raise ValueError("an ensemble needs at least one fold")
        if tta not in TTA_CHOICES:
            raise ValueError(f"tta {tta!r}: expected one of {', '.join(TTA_CHOICES)}")
        if rule not in RULES:
            raise ValueError(f"ensemble rule {rule!r}: expected one of {', '.join(RULES)}")
        self.rule = rule
        self.features = folds[0].features
        self.models = nn.ModuleList(p.model for p in folds)
        self.heads = nn.ModuleList(p.head for p in folds)
        self.tta = tta
        self.register_buffer("mirror_rows", torch.tensor(lm.MIRROR, dtype=torch.long), persistent=False)
        # Output slot -> class index, or the index of an appended zero: puts a model trained on a
        # subset of the competition's signs into the competition's 250-slot order.
        index = None if out_index is None else torch.tensor(list(out_index), dtype=torch.long)
        self.register_buffer("out_index", index, persistent=False)

    def _mirror(self, frames: torch.Tensor) -> torch.Tensor:
        # the same mirror as the hflip augmentation (landmarks.mirror), written with torch ops
        x = frames.index_select(1, self.mirror_rows)
        flip = torch.tensor([-1.0, 1.0, 1.0], dtype=x.dtype, device=x.device)
        shift = torch.tensor([1.0, 0.0, 0.0], dtype=x.dtype, device=x.device)
        return x * flip + shift

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        views = [inputs, self._mirror(inputs)] if self.tta == "hflip" else [inputs]
        members = []
        for view in views:
            x = self.features(view).unsqueeze(0)
            # every frame is valid (features are finite). Computed from x elementwise: onnx2tf cannot
            # Expand a bool constant to a dynamic shape (what torch.ones(shape, dtype=bool) exports
            # to), and with ones_like the graph's shape inference lost the batch of 1, after which
            # onnx2tf could not convert a model whose attention follows the mask without a concat
            mask = x[..., 0] * 0.0 > -1.0
            for model, head in zip(self.models, self.heads):
                members.append(torch.softmax(head.logits(model(x, mask)), dim=-1))  # [1, C]
        probs = combine(torch.cat(members), self.rule)
        if self.out_index is not None:
            probs = torch.cat([probs, torch.zeros_like(probs[:1])]).index_select(0, self.out_index)
        return probs


def competition_index(sign_map: dict[str, int], competition: dict[str, int]) -> list[int] | None:
    """For each competition slot, the class index of that sign (or len(sign_map) for "absent").

    None when the data's map already is the competition's. Raises ValueError when the data has
    signs the competition does not: such a model cannot be put in the competition's format.
    """
    if sign_map == competition:
        return None
    extra = sorted(set(sign_map) - set(competition))
    if extra:
        raise ValueError(f"signs not in the competition's map: {', '.join(extra[:5])}")
    absent = len(sign_map)
    by_slot = {i: sign_map.get(name, absent) for name, i in competition.items()}
    return [by_slot[i] for i in range(len(competition))]
