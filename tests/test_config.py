"""Config: defaults are the baseline; unknown keys, names, params and types are one-line errors."""

from __future__ import annotations

import pytest

from ablate.config import Config
from ablate.errors import UserError


def test_defaults_are_the_baseline_recipe() -> None:
    c = Config()
    assert (c.features.name, c.model.name, c.loss.name, c.optimizer.name) == ("seed828", "transformer", "subcenter_arcface", "ranger")
    assert [a.name for a in c.augmentations] == ["shift", "scale", "rotate", "hflip"]
    assert c.batch_size == 64 and c.epochs == 100


def test_round_trip() -> None:
    d = Config().replace(epochs=3).to_dict()
    d["loss"] = {"name": "arcface", "params": {"margin_rad": 0.3}}
    d["augmentations"] = ["hflip", {"name": "rotate", "params": {}}]
    c = Config.from_dict(d)
    assert c.loss.params == {"margin_rad": 0.3} and c.epochs == 3 and c.augmentations[0].name == "hflip"
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epoch": 3}, "cfg: unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"epochs": "ten"}, "cfg.epochs: expected int, got 'ten'"),
        ({"loss": "arcfase"}, "cfg.loss: unknown loss 'arcfase' (did you mean 'arcface'?)"),
        ({"loss": {"name": "arcface", "params": {"margn": 1}}}, "cfg.loss: unknown parameter 'margn' for 'arcface' (did you mean 'margin_rad'?)"),
        ({"loss": {"name": "arcface", "params": {"margin_rad": "big"}}}, "cfg.loss.params.margin_rad: expected float, got 'big'"),
        ({"augmentations": "hflip"}, "cfg.augmentations: expected a list"),
        ({"augmentations": [{"name": "scale", "params": {"scale": [0.9]}}]}, "cfg.augmentations[0].params.scale: expected a list of 2 numbers"),
    ],
)
def test_bad_config_is_one_clear_line(data: dict, message: str) -> None:
    with pytest.raises(UserError) as e:
        Config.from_dict(data, where="cfg")
    assert str(e.value).startswith(message), str(e.value)
