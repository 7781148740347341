"""Search spaces: the shipped files load; every kind of mistake is one line naming file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ablate.errors import UserError
from ablate.spaces import list_spaces, load_space
from conftest import REPO

SHIPPED = REPO / "search_spaces"


@pytest.mark.parametrize("name", list_spaces(SHIPPED))
def test_shipped_spaces_load(name: str) -> None:
    space = load_space(name, SHIPPED)
    assert space.baseline in space.arms and set(space.presets) >= {"smoke", "quick", "full"}
    base = space.config(space.baseline, "full")
    assert base.epochs == 100 and base.batch_size == 64


def test_presets_fill_in_sizes_but_arms_win() -> None:
    space = load_space("losses", SHIPPED)
    quick = space.config("ce", "quick")
    assert quick.model.params["width"] == 64 and quick.epochs == 8 and quick.optimizer.params["lr"] == 3e-3
    assert quick.loss.name == "ce" and quick.features.name == "seed828"
    assert space.config("ce_smooth", "smoke").loss.params == {"label_smoothing": 0.1}
    aug = load_space("augmentations", SHIPPED)
    assert [a.name for a in aug.config("no_hflip", "quick").augmentations] == ["shift", "scale", "rotate"]
    assert aug.config("baseline_reseeded", "quick").seed == aug.config("baseline", "quick").seed + 1000


def _space_dir(tmp_path: Path, text: str) -> Path:
    shutil.copy(SHIPPED / "base.yaml", tmp_path / "base.yaml")
    (tmp_path / "bad.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "text, message",
    [
        ("axis: loss\narms: {arcfase: {}}\n", "bad.yaml: arms.arcfase: unknown loss 'arcfase' (did you mean 'arcface'?)"),
        ("axis: loss\narms: {arcface: {params: {margn: 1.0}}}\n", "bad.yaml: arms.arcface.loss: unknown parameter 'margn' for 'arcface' (did you mean 'margin_rad'?)"),
        ("axis: loss\narms: {arcface: {params: {scale: big}}}\n", "bad.yaml: arms.arcface.loss.params.scale: expected float, got 'big'"),
        ("axis: loss\narms: {arcface: {ranges: {scale: [64, 16]}}}\n", "bad.yaml: arms.arcface.ranges.scale: empty range: low 64 must be below high 16"),
        ("axis: loss\narms: {arcface: {ranges: {scael: [1, 2]}}}\n", "bad.yaml: arms.arcface.ranges: unknown parameter 'scael'"),
        ("axis: model\narms: {transformer: {ranges: {heads: [2.5, 8]}}}\n", "bad.yaml: arms.transformer.ranges.heads: parameter is an integer"),
        ("axis: loss\nmode: grid\narms: {ce: {}}\n", "bad.yaml: mode: expected one of ablation, tune, both, got 'grid'"),
        ("axis: losses\narms: {ce: {}}\n", "bad.yaml: axis: expected one of"),
        ("axis: loss\narms: {ce: {}}\nbaseline: arcface\n", "bad.yaml: baseline 'arcface' is not an arm"),
        ("axis: loss\narms: {ce: {}}\ntune: {n_trials: 0}\n", "bad.yaml: tune.n_trials: expected a positive integer"),
        ("axis: loss\narms: {ce: {}}\nqestion: x\n", "bad.yaml: unknown key 'qestion' (did you mean 'question'?)"),
        ("axis: loss\narms: [ce]\n", "bad.yaml: arms: expected a mapping"),
        ("axis: augmentations\narms: {x: {augmentations: [hflp]}}\n", "bad.yaml: arms.x.augmentations[0]: unknown augmentation 'hflp' (did you mean 'hflip'?)"),
        ("axis: loss\narms: {ce: {}\n", "bad.yaml: not valid YAML"),
    ],
)
def test_bad_spaces_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        load_space("bad", _space_dir(tmp_path, text))
    line = str(e.value)
    assert "\n" not in line and message in line, line


def test_unknown_space_and_bad_preset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown search space 'loses' \(did you mean 'losses'\?\)"):
        load_space("loses", SHIPPED)
    d = _space_dir(tmp_path, "axis: loss\narms: {ce: {}}\n")
    (d / "base.yaml").write_text((SHIPPED / "base.yaml").read_text().replace("epochs: 8", "epochs: eight"))
    with pytest.raises(UserError, match=r"base.yaml: presets.quick.epochs: expected int, got 'eight'"):
        load_space("bad", d)
