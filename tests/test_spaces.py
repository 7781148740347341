"""Search spaces: the shipped files load; a space or preset that cannot run is refused when it is
loaded, in one line naming the file and key; resolve() says where every value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.errors import UserError
from ablate.resolve import COMPARE_SEED_OFFSET, load_base, resolve
from ablate.spaces import list_spaces, load_space
from conftest import REPO, spaces_folder

SHIPPED = REPO / "search_spaces"


@pytest.mark.parametrize("name", list_spaces(SHIPPED))
def test_shipped_spaces_load(name: str) -> None:
    space = load_space(name, SHIPPED)
    assert space.baseline in space.arms and set(space.base.presets) >= {"smoke", "quick", "full"}
    base = resolve(space.base, "full", space.arms[space.baseline]).config
    assert base.epochs == (300 if space.base.recipe_name == "winner" else 100) and base.batch_size == 64


def test_presets_fill_in_sizes_but_arms_win() -> None:
    space = load_space("losses", SHIPPED)
    quick = resolve(space.base, "quick", space.arms["ce"]).config
    assert quick.model.params["width"] == 64 and quick.epochs == 8 and quick.optimizer.params["lr"] == 3e-3
    assert quick.loss.name == "ce" and quick.features.name == "seed828"
    assert resolve(space.base, "smoke", space.arms["ce_smooth"]).config.loss.params == {"label_smoothing": 0.1}
    aug = load_space("augmentations", SHIPPED)
    no_hflip = resolve(aug.base, "quick", aug.arms["no_hflip"]).config
    assert [a.name for a in no_hflip.augmentations] == ["shift", "scale", "rotate"]
    reseeded = resolve(aug.base, "quick", aug.arms["baseline_reseeded"]).config
    assert reseeded.seed == resolve(aug.base, "quick", aug.arms["baseline"]).config.seed + 1000


def test_resolve_says_where_each_value_came_from() -> None:
    space = load_space("optimizers", SHIPPED)
    r = resolve(space.base, "quick", space.arms["adamw"], {"lr": 4e-4}, "compare", seed=1)
    src = r.sources
    assert src["epochs"] == "preset quick" and src["batch_size"] == "preset quick"
    assert src["features"] == "base.yaml" and src["features.params.max_len"] == "base.yaml"
    assert src["model.params.width"] == "preset quick" and src["model.params.ff_mult"] == "default of transformer"
    assert src["optimizer"] == "arm adamw" and src["optimizer.params.lr"] == "tuned"
    assert src["optimizer.params.weight_decay"] == "default of adamw"
    assert src["seed"] == f"base.yaml + compare stage +{COMPARE_SEED_OFFSET} + seed index 1"
    assert r.config.seed == COMPARE_SEED_OFFSET + 1 and r.config.optimizer.params["lr"] == 4e-4
    again = resolve(space.base, "quick", space.arms["adamw"], {"lr": 4e-4}, "compare", seed=1)
    assert again == r  # deterministic
    bare = resolve(load_base(SHIPPED), "smoke")
    assert bare.sources["loss"] == "base.yaml" and bare.config.max_train_batches == 2


def _space_dir(tmp_path: Path, text: str, base: str | None = None) -> Path:
    d = spaces_folder(tmp_path, bad=text)
    if base is not None:
        (d / "base.yaml").write_text(base)
    return d


BAD_SPACES = [
    ("axis: loss\narms: {arcfase: {}}\n", "bad.yaml: arms.arcfase: unknown loss 'arcfase' (did you mean 'arcface'?)"),
    ("axis: loss\narms: {arcface: {params: {margn: 1.0}}}\n", "bad.yaml: arms.arcface: unknown parameter 'margn' for 'arcface' (did you mean 'margin_rad'?)"),
    ("axis: loss\narms: {arcface: {params: {scale: big}}}\n", "bad.yaml: arms.arcface.params.scale: expected float, got 'big'"),
    ("axis: loss\narms: {arcface: {params: [scale, 3]}}\n", "bad.yaml: arms.arcface.params: expected a mapping of parameter names to values"),
    ("axis: loss\narms: {arcface: {params: {scale: .nan}}}\n", "bad.yaml: arms.arcface.params.scale: expected a finite number, got nan"),
    ("axis: loss\narms: {arcface: {params: {margin_rad: 2.0}}}\n", "bad.yaml: arms.arcface (preset smoke): loss parameter margin_rad must be in [0.0, 1.5707963267948966)"),
    ("axis: model\narms: {transformer: {params: {heads: 5}}}\n", "bad.yaml: arms.transformer (preset smoke): "),
    ("axis: model\narms: {transformer: {params: {dropout: 1.5}}}\n", "bad.yaml: arms.transformer (preset smoke): model parameter dropout must be in [0, 1), got 1.5"),
    ("axis: loss\nmode: tune\narms: {arcface: {ranges: {scale: [64, 16]}}}\n", "bad.yaml: arms.arcface.ranges.scale: empty range: low 64.0 must be below high 16.0"),
    ("axis: loss\nmode: tune\narms: {arcface: {ranges: {scael: [1, 2]}}}\n", "bad.yaml: arms.arcface.ranges: unknown parameter 'scael'"),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {heads: [2.5, 8]}}}\n", "bad.yaml: arms.transformer.ranges.heads.low: expected int, got 2.5"),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {dropout: [0.1, 1.5]}}}\n", "bad.yaml: arms.transformer.ranges.dropout=1.5 (preset smoke): model parameter dropout must be in [0, 1)"),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {dropout: [.nan, 0.5]}}}\n", "bad.yaml: arms.transformer.ranges.dropout.low: expected a finite number"),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {heads: {choices: [4, eight]}}}}\n", "bad.yaml: arms.transformer.ranges.heads.choices[1]: expected int, got 'eight'"),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {heads: {choices: [4, 5]}}}}\n", "bad.yaml: arms.transformer.ranges.heads=5 (preset smoke): "),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {heads: {choices: 4}}}}\n", "bad.yaml: arms.transformer.ranges.heads.choices: expected a non-empty list of values, got 4"),
    ("axis: model\nmode: tune\narms: {transformer: {ranges: {activation: [0, 1]}}}\n", "bad.yaml: arms.transformer.ranges.activation: only numeric parameters take [low, high]"),
    ("axis: loss\narms: {arcface: {ranges: {scale: [16, 64]}}}\n", "bad.yaml: arms.arcface: unknown key 'ranges' (did you mean 'params'?); known: name, params, seed_offset (ranges are for modes tune and both)"),
    ("axis: loss\narms: {ce: {augmentations: [hflip]}}\n", "bad.yaml: arms.ce: unknown key 'augmentations'; known: name, params, seed_offset (on the loss axis)"),
    ("axis: augmentations\narms: {x: {augmentations: [hflip], params: {p: 1.0}}}\n", "bad.yaml: arms.x: unknown key 'params'"),
    ("axis: loss\narms: {ce: {}}\ntune: {n_trials: 5}\n", "bad.yaml: tune: unused in mode ablation"),
    ("axis: loss\narms: {ce: {seed_offset: -1}}\n", "bad.yaml: arms.ce.seed_offset: expected an integer >= 0, got -1"),
    ("axis: loss\nmode: grid\narms: {ce: {}}\n", "bad.yaml: mode: expected one of ablation, tune, both, got 'grid'"),
    ("axis: losses\narms: {ce: {}}\n", "bad.yaml: axis: expected one of"),
    ("axis: loss\narms: {ce: {}}\nbaseline: arcface\n", "bad.yaml: baseline 'arcface' is not an arm"),
    ("axis: loss\nmode: tune\narms: {ce: {}, focal: {}}\ntune: {n_trials: 0}\n", "bad.yaml: tune.n_trials: expected a positive integer"),
    ("axis: loss\narms: {ce: {}}\nqestion: x\n", "bad.yaml: unknown key 'qestion' (did you mean 'question'?)"),
    ("axis: loss\narms: [ce]\n", "bad.yaml: arms: expected a mapping"),
    ("axis: loss\narms: {a.b: {name: ce}}\n", "bad.yaml: arms.a.b: an arm label must be non-empty and without '.'"),
    ("axis: augmentations\narms: {x: {augmentations: [hflp]}}\n", "bad.yaml: arms.x.augmentations[0]: unknown augmentation 'hflp' (did you mean 'hflip'?)"),
    ("axis: augmentations\narms: {x: {augmentations: hflip}}\n", "bad.yaml: arms.x: expected 'augmentations: [...]' (a list)"),
    ("axis: augmentations\narms: {x: {augmentations: [{name: scale, params: {scale: [1.2, 0.8]}}]}}\n", "bad.yaml: arms.x (preset smoke): augmentation 'scale': scale must be [low, high]"),
    ("axis: augmentations\narms: {x: {augmentations: [mixup, mixup]}}\n", "bad.yaml: arms.x (preset smoke): augmentations: at most one batch-level augmentation"),
    ("axis: loss\narms: {ce: {}\n", "bad.yaml: not valid YAML"),
    ("axis: loss\narms:\n  ce: {}\n  ce: {seed_offset: 1}\n", "bad.yaml: not valid YAML at line 4 (duplicate key 'ce' (the earlier one would be lost))"),
    ("axis: loss\naxis: model\narms: {ce: {}}\n", "bad.yaml: not valid YAML at line 2 (duplicate key 'axis'"),
    ("axis: loss\narms: &a {ce: {}}\nquestion: *a\n", "bad.yaml: not valid YAML at line 2 (anchors (&name) are not allowed"),
    ("axis: loss\narms: {ce: !!python/object:os.system {}}\n", "bad.yaml: not valid YAML"),
]


@pytest.mark.parametrize("text, message", BAD_SPACES)
def test_bad_spaces_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        load_space("bad", _space_dir(tmp_path, text))
    line = str(e.value)
    assert "\n" not in line and message in line, line


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(UserError, match="anchors"):
        load_space("bad", _space_dir(tmp_path, "axis: loss\narms: {ce: {}}\n" + "\n".join(levels) + "\n"))


BAD_BASES = [
    (("epochs: 8", "epochs: eight"), "base.yaml: presets.quick.epochs: expected int, got 'eight'"),
    (("    batch_size: 32", "    batch_size: -4"), "base.yaml: presets.quick.batch_size: expected a value >= 1, got -4"),
    (("    epochs: 1\n", "    epochs: 0\n"), "base.yaml: presets.smoke.epochs: expected a value >= 1, got 0"),
    (("  amp: auto ", "  amp: bf61 "), "base.yaml: recipe (preset smoke).amp: expected one of auto, off, bf16, fp16, got 'bf61' (did you mean 'bf16'?)"),
    (("  grad_clip: 1.0 ", "  grad_clip: .nan "), "base.yaml: recipe (preset smoke).grad_clip: expected a finite number"),
    (("  folds: 5 ", "  folds: 1 "), "base.yaml: recipe (preset smoke).folds: expected a value >= 2, got 1"),
    (("      transformer: {width: 64, heads: 4, dropout: 0.2}", "      transformr: {width: 64}"), "base.yaml: presets.quick.component_params.transformr: unknown component 'transformr' (did you mean 'transformer'?)"),
    (("      transformer: {width: 64, heads: 4, dropout: 0.2}", "      transformer: {widht: 64}"), "base.yaml: presets.quick.component_params.transformer: unknown parameter 'widht'"),
    (("  seed: 0 ", "  seed: -3 "), "base.yaml: recipe (preset smoke).seed: expected a value >= 0, got -3"),
    (("  max_train_batches: 0 ", "  max_train_batch: 0 "), "base.yaml: recipe (preset smoke): unknown key 'max_train_batch' (did you mean 'max_train_batches'?)"),
    (("  fold_kind: grouped ", "  # no fold kind "), "base.yaml: recipe (preset smoke): missing fold_kind"),
    (("recipe:\n", "recipe:\n  recipe: 1\n"), "base.yaml: recipe (preset smoke): unknown key 'recipe'"),
    (("default_preset: quick", "default_preset: quik"), "base.yaml: default_preset 'quik' is not a preset"),
    (("  smoke:\n", "  quick: {}\n  smoke:\n"), "base.yaml: not valid YAML at line"),
]


@pytest.mark.parametrize("change, message", BAD_BASES)
def test_bad_base_or_preset_is_refused_at_load(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    text = (SHIPPED / "base.yaml").read_text()
    assert change[0] in text, change[0]
    with pytest.raises(UserError) as e:
        load_space("bad", _space_dir(tmp_path, "axis: loss\narms: {ce: {}}\n", text.replace(change[0], change[1], 1)))
    line = str(e.value)
    assert "\n" not in line and message in line, line


def test_unknown_space(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown search space 'loses' \(did you mean 'losses'\?\)"):
        load_space("loses", SHIPPED)
