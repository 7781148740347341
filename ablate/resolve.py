"""The base recipe and its presets (search_spaces/base.yaml), and the one function that resolves a
training configuration from its layers, recording where every value came from.

The layers, folded in this order (a later one wins):
    1. component defaults     the builder's own parameter defaults ("default of <component>")
    2. base.yaml recipe       the chosen recipe (`recipe:`, the baseline, or one of `recipes:`, which
                              is the baseline with its own changes): the only source of recipe defaults
    3. preset                 scalars (epochs, batch size, ...) of the training budget, then the
                              chosen recipe's own scalars for that preset
    4. arm                    the space's arm: its component (fresh defaults if it differs from the
                              recipe's; an arm without a name keeps the recipe's component), params,
                              augmentation list and seed offset; a recipe-axis arm starts over from
                              its recipe
    5. preset sizes           component_params for whichever component is chosen; never over the
                              arm's own params
    6. tuned                  values an Optuna trial chose for the arm's ranges
    7. stage, repeat, seed    the compare stage's fresh seeds, the repeat's fold seed, the seed index
    8. settings               run-level settings (the leaky-folds study's fold kind)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.config import AXES, Config, component, param_value
from ablate.errors import UserError, close_match, unknown
from ablate.yamlfile import load_yaml

if TYPE_CHECKING:
    from ablate.spaces import Arm

STAGE_ABLATION, STAGE_TUNE, STAGE_COMPARE = "ablation", "tune", "compare"
COMPARE_SEED_OFFSET = 500  # compare-stage trials train with fresh seeds: no selection bias
PRESET_SCALARS = ("epochs", "batch_size", "max_train_batches", "early_stopping", "amp", "grad_clip")
_BASE_KEYS = ("recipe", "recipes", "presets", "default_preset")
BASELINE = "baseline"  # the name of base.yaml's `recipe:` among the recipes
_RECIPE_KEYS = ("description", "changes", "presets")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    scalars: dict[str, Any]
    component_params: dict[str, dict[str, Any]]  # component name -> sizes, applied whenever it is chosen


@dataclass(frozen=True)
class Base:
    """search_spaces/base.yaml, checked, with one of its recipes chosen (`recipe_name`)."""

    path: Path
    recipe: dict[str, Any]  # the chosen recipe, every key; components as {"name", "params"}
    presets: dict[str, Preset]  # with the chosen recipe's own preset scalars applied
    default_preset: str
    recipe_name: str = BASELINE
    changed: tuple[str, ...] = ()  # the recipe keys this recipe changes from the baseline's
    recipes: dict[str, Base] = field(default_factory=dict, repr=False, compare=False)  # every recipe's Base, by name

    def for_recipe(self, name: str) -> Base:
        """The same file with the recipe `name` chosen (`baseline`: base.yaml's `recipe:`)."""
        known = self.recipes or {self.recipe_name: self}
        if name not in known:
            raise UserError(f"unknown recipe {name!r}{close_match(name, known)}; known: {', '.join(known)} "
                            f"(in {self.path})")
        return known[name]

    def recipe_names(self) -> list[str]:
        return list(self.recipes or [self.recipe_name])

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise UserError(f"unknown preset {name!r}{close_match(name, self.presets)}; known: "
                            f"{', '.join(self.presets)} (in {self.path})")
        return self.presets[name]


@dataclass(frozen=True)
class Resolved:
    config: Config
    sources: dict[str, str]  # "loss.params.scale" -> "preset quick", "epochs" -> "base.yaml", ...


def _as_component(value: Any) -> dict[str, Any]:
    """'name' or {name, params} as {name, params}; anything else as it is (Config.from_dict says what is wrong)."""
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("params") or {}, dict):
        return {**value, "params": dict(value.get("params") or {})}
    return value


def _component_entry(name: str, where: str) -> Any:
    from ablate.components import REGISTRIES

    for kind in (*AXES.values(), "augmentations"):
        if name in REGISTRIES[kind]:
            return REGISTRIES[kind].get(name)
    known = [e.name for kind in (*AXES.values(), "augmentations") for e in REGISTRIES[kind]]
    raise UserError(f"{where}: {unknown('component', name, known)}")


def _load_preset(name: str, raw: Any, where: str) -> Preset:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping (epochs, batch_size, ..., component_params)")
    for key in raw:
        if key not in (*PRESET_SCALARS, "component_params", "description"):
            known = (*PRESET_SCALARS, "component_params", "description")
            raise UserError(f"{where}: unknown key {key!r}{close_match(str(key), known)}; known: {', '.join(known)}")
    sizes = raw.get("component_params") or {}
    if not isinstance(sizes, dict):
        raise UserError(f"{where}.component_params: expected a mapping of component names to parameters")
    checked: dict[str, dict[str, Any]] = {}
    for comp, params in sizes.items():
        at = f"{where}.component_params.{comp}"
        entry = _component_entry(str(comp), at)
        if not isinstance(params, dict):
            raise UserError(f"{at}: expected a mapping of parameter names to values, got {params!r}")
        entry.check_params(params, at)
        checked[str(comp)] = {k: param_value(entry, k, v, f"{at}.{k}") for k, v in params.items()}
    scalars = {k: Config.check_value(k, raw[k], f"{where}.{k}") for k in PRESET_SCALARS if k in raw}
    return Preset(str(name), str(raw.get("description", "")), scalars, checked)


def load_base(directory: Path) -> Base:
    """Load and check search_spaces/base.yaml: every recipe must be complete, every preset valid
    (the baseline recipe is chosen; `Base.for_recipe` gives the others)."""
    path = directory / "base.yaml"
    data = load_yaml(path)
    for key in data:
        if key not in _BASE_KEYS:
            raise UserError(f"{path}: unknown key {key!r}{close_match(str(key), _BASE_KEYS)}; known: {', '.join(_BASE_KEYS)}")
    recipe = data.get("recipe")
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: recipe: expected a mapping of the baseline recipe's keys")
    missing = [k for k in AXES if k not in recipe]
    if missing:
        raise UserError(f"{path}: recipe: missing {', '.join(missing)} (the recipe sets every key)")
    recipe = _checked_recipe(recipe, f"{path}: recipe")
    presets = data.get("presets")
    if not isinstance(presets, dict) or not presets:
        raise UserError(f"{path}: presets: expected a mapping of preset names (smoke, quick, full) to settings")
    loaded = {str(n): _load_preset(str(n), p, f"{path}: presets.{n}") for n, p in presets.items()}
    default = data.get("default_preset", "quick")
    if default not in loaded:
        raise UserError(f"{path}: default_preset {default!r} is not a preset; known: {', '.join(loaded)}")
    base = Base(path, recipe, loaded, str(default))
    others = data.get("recipes") or {}
    if not isinstance(others, dict):
        raise UserError(f"{path}: recipes: expected a mapping of recipe names to {{description, changes, presets}}")
    every = {BASELINE: base} | {str(n): _other_recipe(base, str(n), spec) for n, spec in others.items()}
    for one in every.values():
        object.__setattr__(one, "recipes", every)  # each knows the others (for_recipe)
        for name in loaded:  # the bare recipe must be a complete, valid config under every preset
            resolve(one, name)
    return base


def _checked_recipe(recipe: dict[str, Any], where: str) -> dict[str, Any]:
    for key, kind in AXES.items():
        if key in recipe:
            check_component(recipe[key], kind, f"{where}.{key}")
    return {k: (_as_component(v) if k in AXES else v) for k, v in recipe.items()}


def _other_recipe(base: Base, name: str, spec: Any) -> Base:
    """A recipe of base.yaml's `recipes:`: the baseline recipe with its `changes` (whole keys: a
    component given replaces the baseline's with its own params), and its own preset scalars
    (`presets: {full: {epochs: 300}}`) over the shared presets'."""
    where = f"{base.path}: recipes.{name}"
    if name == BASELINE or not isinstance(spec, dict):
        raise UserError(f"{where}: expected a mapping of description, changes and presets"
                        + (f" (the name {BASELINE!r} is base.yaml's `recipe:`)" if name == BASELINE else ""))
    for key in spec:
        if key not in _RECIPE_KEYS:
            raise UserError(f"{where}: unknown key {key!r}{close_match(str(key), _RECIPE_KEYS)}; known: {', '.join(_RECIPE_KEYS)}")
    changes = spec.get("changes") or {}
    keys = [f.name for f in fields(Config)]
    if not isinstance(changes, dict):
        raise UserError(f"{where}.changes: expected a mapping of recipe keys to values")
    for key in changes:
        if key not in keys:
            raise UserError(f"{where}.changes: unknown key {key!r}{close_match(str(key), keys)}; known: {', '.join(keys)}")
    recipe = {**base.recipe, **_checked_recipe(changes, f"{where}.changes")}
    own = spec.get("presets") or {}
    if not isinstance(own, dict):
        raise UserError(f"{where}.presets: expected a mapping of preset names to scalars")
    presets = dict(base.presets)
    for preset, scalars in own.items():
        at = f"{where}.presets.{preset}"
        shared = base.preset(str(preset))
        if not isinstance(scalars, dict):
            raise UserError(f"{at}: expected a mapping of {', '.join(PRESET_SCALARS)}")
        for key in scalars:
            if key not in PRESET_SCALARS:
                raise UserError(f"{at}: unknown key {key!r}{close_match(str(key), PRESET_SCALARS)}; known: {', '.join(PRESET_SCALARS)}")
        mine = {k: Config.check_value(k, v, f"{at}.{k}") for k, v in scalars.items()}
        presets[str(preset)] = replace(shared, scalars={**shared.scalars, **mine})
    return Base(base.path, recipe, presets, base.default_preset, name, tuple(changes))


def resolve(base: Base, preset: str, arm: Arm | None = None, tuned: Mapping[str, Any] | None = None,
            stage: str = STAGE_ABLATION, repeat: int = 0, seed: int = 0,
            settings: Mapping[str, Any] | None = None) -> Resolved:
    """The configuration of `arm` (None: the bare recipe) under `preset`, and each value's source."""
    own = copy.deepcopy(arm.overrides) if arm else {}
    if "recipe" in own:  # an arm of the recipe axis: another of base.yaml's recipes
        base = base.for_recipe(str(own.pop("recipe")))
    p = base.preset(preset)
    d: dict[str, Any] = copy.deepcopy(base.recipe)
    def origin(key: str) -> str:
        return f"base.yaml recipe {base.recipe_name}" if key in base.changed else "base.yaml"

    src: dict[str, str] = {k: origin(k) for k in d}
    for key in AXES:
        src |= {f"{key}.params.{k}": origin(key) for k in d[key]["params"]}
    for k, v in p.scalars.items():
        d[k], src[k] = v, f"preset {preset}"
    batch_before, rule = d.get("batch_size"), own.pop("lr_scaling", None)
    for key, value in own.items():
        if key in AXES:  # another component starts from its defaults, the same one (or no name) from the recipe
            name = value.get("name", d[key]["name"])
            same = d[key]["name"] == name
            if not same:
                src = {k: v for k, v in src.items() if not k.startswith(f"{key}.params.")}
                src[key] = f"arm {arm.label}"  # type: ignore[union-attr]
            d[key] = {"name": name, "params": dict(d[key]["params"]) if same else {}}
        else:
            d[key], src[key] = value, f"arm {arm.label}"  # type: ignore[union-attr]
    for key in AXES:
        comp = d[key]
        mine = own[key].get("params", {}) if key in own else {}
        for k, v in p.component_params.get(comp["name"], {}).items():
            if k not in mine:
                comp["params"][k], src[f"{key}.params.{k}"] = v, f"preset {preset}"
        for k, v in mine.items():
            comp["params"][k], src[f"{key}.params.{k}"] = v, f"arm {arm.label}"  # type: ignore[union-attr]
    if rule is not None and arm:
        _scale_lr(d, src, rule, batch_before, arm)
    if tuned and arm:
        comp = d[arm.axis]
        for k, v in tuned.items():
            comp["params"][k], src[f"{arm.axis}.params.{k}"] = v, "tuned"
    _seeds(d, src, arm, stage, repeat, seed)
    for k, v in (settings or {}).items():
        d[k], src[k] = v, "run setting"
    recipe = "" if base.recipe_name == BASELINE else f"recipe {base.recipe_name}, "
    where = f"{arm.source or arm.label} ({recipe}preset {preset})" if arm else \
        f"{base.path}: {'recipe' if not recipe else 'recipes.' + base.recipe_name} (preset {preset})"
    config = Config.from_dict(d, where=where)
    return Resolved(config, _with_defaults(config, src))


LR_SCALING = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}  # exponent of (new batch / old batch)


def _scale_lr(d: dict[str, Any], src: dict[str, str], rule: Any, before: Any, arm: Arm) -> None:
    """An arm's `lr_scaling`: the optimizer's lr times (the arm's batch size / the batch size before
    the arm)^1 (linear, Goyal et al. 2017) or ^0.5 (sqrt), so a batch-size arm is not also a
    learning-rate arm."""
    from ablate.components import REGISTRIES

    where = f"{arm.source or arm.label}.lr_scaling"
    if rule not in LR_SCALING:
        raise UserError(f"{where}: expected one of {', '.join(LR_SCALING)}, got {rule!r}{close_match(str(rule), LR_SCALING)}")
    if "batch_size" not in arm.overrides:
        raise UserError(f"{where}: lr_scaling needs batch_size in the same arm (the batch size the lr is scaled to)")
    after, opt = d.get("batch_size"), d.get("optimizer")
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in (before, after)) or \
            not isinstance(opt, dict) or opt.get("name") not in REGISTRIES["optimizers"].names():
        return  # Config.from_dict names the bad batch size or optimizer
    params = opt.setdefault("params", {})
    lr = params.get("lr", REGISTRIES["optimizers"].get(opt["name"]).params.get("lr"))
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        return
    factor = (after / before) ** LR_SCALING[rule]
    params["lr"] = lr * factor
    src["optimizer.params.lr"] = (f"{src.get('optimizer.params.lr', 'optimizer default')}, scaled x{factor:.4g} "
                                  f"(arm {arm.label}: lr_scaling {rule}, batch {before} -> {after})")


def _seeds(d: dict[str, Any], src: dict[str, str], arm: Arm | None, stage: str, repeat: int, seed: int) -> None:
    parts = [src.get("seed", "base.yaml")]
    offset = (arm.seed_offset if arm else 0) + (COMPARE_SEED_OFFSET if stage == STAGE_COMPARE else 0) + seed
    if arm and arm.seed_offset:
        parts.append(f"arm {arm.label} offset {arm.seed_offset}")
    if stage == STAGE_COMPARE:
        parts.append(f"compare stage +{COMPARE_SEED_OFFSET}")
    if seed:
        parts.append(f"seed index {seed}")
    if isinstance(d.get("seed"), int) and not isinstance(d.get("seed"), bool):
        d["seed"] += offset
    src["seed"] = " + ".join(parts)
    if repeat:
        if isinstance(d.get("fold_seed"), int) and not isinstance(d.get("fold_seed"), bool):
            d["fold_seed"] += repeat
        src["fold_seed"] = f"{src.get('fold_seed', 'base.yaml')} + repeat {repeat}"


def _with_defaults(config: Config, src: dict[str, str]) -> dict[str, str]:
    """Sources for component params nobody set: the component's own default."""
    from ablate.components import REGISTRIES

    out = dict(src)
    for key, kind in AXES.items():
        comp = getattr(config, key)
        for k in REGISTRIES[kind].get(comp.name).params:
            out.setdefault(f"{key}.params.{k}", f"default of {comp.name}")
    return dict(sorted(out.items()))


def check_component(value: Any, kind: str, where: str) -> None:
    """A component as written in a space file, checked against its registry (name, params, types)."""
    from ablate.components import REGISTRIES

    component(value, REGISTRIES[kind], where)
