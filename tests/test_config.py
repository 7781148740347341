"""Config: every key required, every value checked; unknown keys, names, params and types are one-line errors."""

from __future__ import annotations

import pytest

from ablate.config import Config
from ablate.errors import UserError
from ablate.spaces import recipe_config


def test_the_recipe_comes_from_base_yaml() -> None:
    c = recipe_config("full")
    assert (c.features.name, c.model.name, c.loss.name, c.optimizer.name) == ("seed828", "transformer", "subcenter_arcface", "ranger")
    assert [a.name for a in c.augmentations] == ["shift", "scale", "rotate", "hflip"]
    assert c.batch_size == 64 and c.epochs == 100 and c.amp == "auto" and c.fold_kind == "grouped"


def test_round_trip() -> None:
    d = recipe_config("full").replace(epochs=3).to_dict()
    d["loss"] = {"name": "arcface", "params": {"margin_rad": 0.3}}
    d["augmentations"] = ["hflip", {"name": "rotate", "params": {}}]
    c = Config.from_dict(d)
    assert c.loss.params == {"margin_rad": 0.3} and c.epochs == 3 and c.augmentations[0].name == "hflip"
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epoch": 3}, "cfg: unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"epochs": "ten"}, "cfg.epochs: expected int, got 'ten'"),
        ({"epochs": 0}, "cfg.epochs: expected a value >= 1, got 0"),
        ({"batch_size": -4}, "cfg.batch_size: expected a value >= 1, got -4"),
        ({"grad_clip": float("nan")}, "cfg.grad_clip: expected a finite number, got nan"),
        ({"amp": "bf61"}, "cfg.amp: expected one of auto, off, bf16, fp16, got 'bf61' (did you mean 'bf16'?)"),
        ({"device": "gpu"}, "cfg.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ({"fold_kind": "leaky"}, "cfg.fold_kind: expected one of grouped, ungrouped-leaky, got 'leaky'"),
        ({"loss": "arcfase"}, "cfg.loss: unknown loss 'arcfase' (did you mean 'arcface'?)"),
        ({"loss": {"name": "arcface", "params": {"margn": 1}}}, "cfg.loss: unknown parameter 'margn' for 'arcface' (did you mean 'margin_rad'?)"),
        ({"loss": {"name": "arcface", "params": {"margin_rad": "big"}}}, "cfg.loss.params.margin_rad: expected float, got 'big'"),
        ({"loss": {"name": "arcface", "params": {"margin_rad": float("inf")}}}, "cfg.loss.params.margin_rad: expected a finite number"),
        ({"loss": {"name": "arcface", "params": ["margin_rad", 1]}}, "cfg.loss.params: expected a mapping of parameter names"),
        ({"augmentations": "hflip"}, "cfg.augmentations: expected a list"),
        ({"augmentations": [{"name": "scale", "params": {"scale": [0.9]}}]}, "cfg.augmentations[0].params.scale: expected a list of 2 numbers"),
    ],
)
def test_bad_config_is_one_clear_line(change: dict, message: str) -> None:
    data = recipe_config("full").to_dict() | change
    with pytest.raises(UserError) as e:
        Config.from_dict(data, where="cfg")
    assert str(e.value).startswith(message), str(e.value)


def test_a_missing_key_is_named() -> None:
    data = recipe_config("full").to_dict()
    del data["grad_clip"]
    with pytest.raises(UserError, match="cfg: missing grad_clip"):
        Config.from_dict(data, where="cfg")
