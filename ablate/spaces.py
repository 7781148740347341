"""Search spaces: `search_spaces/base.yaml` (the recipe and presets) and one YAML file per axis.

An axis file varies one part of the recipe. Each arm is a label with optional keys:
    name          the component (default: the label itself), for the component axes
    params        fixed parameters of that component
    ranges        parameters to tune: [low, high] | {low, high, log} | {choices: [...]}
    augmentations the list of augmentations (the augmentations axis)
    seed_offset   train with other seeds: a null arm, to see what seed noise alone looks like
Files hold names and numbers only; everything is checked on load, and an error names the file,
the key path and what was expected.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ablate.config import AXES, Config
from ablate.errors import UserError, close_match

MODES = ("ablation", "tune", "both")
AXIS_KEYS = tuple(AXES) + ("augmentations",)
_SPACE_KEYS = ("question", "axis", "mode", "baseline", "arms", "tune")
_ARM_KEYS = ("name", "params", "ranges", "augmentations", "seed_offset")
_PRESET_SCALARS = ("epochs", "batch_size", "max_train_batches", "early_stopping", "amp", "grad_clip")


def spaces_dir() -> Path:
    """The search_spaces/ folder: $ABLATE_SPACES, else ./search_spaces, else the one shipped beside the package."""
    import os

    if os.environ.get("ABLATE_SPACES"):
        return Path(os.environ["ABLATE_SPACES"])
    here = Path("search_spaces")
    return here if (here / "base.yaml").is_file() else Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass(frozen=True)
class Range:
    """One tunable parameter: numeric [low, high] (optionally log-scaled) or a set of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Arm:
    label: str
    overrides: dict[str, Any]  # config keys -> values, applied on top of the recipe
    ranges: dict[str, Range] = field(default_factory=dict)  # param -> range, on the arm's component
    seed_offset: int = 0


@dataclass(frozen=True)
class Space:
    name: str
    path: Path
    question: str
    axis: str
    mode: str
    baseline: str
    arms: dict[str, Arm]
    n_trials: int  # tune budget (tune mode: total; both: per arm)
    recipe: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    default_preset: str

    def config(self, arm: str, preset: str, tuned: dict[str, Any] | None = None) -> Config:
        """The full configuration of one arm under one preset, with tuned values applied last."""
        where = f"{self.path}: arms.{arm}"
        d = copy.deepcopy(self.recipe)
        own = copy.deepcopy(self.arms[arm].overrides)
        for key, value in own.items():
            if key in AXES:  # a different component starts from its defaults, the same one from the recipe
                same = d[key]["name"] == value["name"]
                d[key] = {"name": value["name"], "params": dict(d[key]["params"]) if same else {}}
            else:
                d[key] = value
        p = self.presets[preset]
        for key in _PRESET_SCALARS:
            if key in p:
                d[key] = p[key]
        for key in AXES:  # preset sizes override the recipe, never the arm's own params
            comp = d[key]
            sizes = p.get("component_params", {}).get(comp["name"], {})
            mine = own[key].get("params", {}) if key in own else {}
            comp["params"] = {**comp["params"], **sizes, **mine}
        if tuned:
            comp = d[self.axis]
            comp["params"] = {**comp.get("params", {}), **tuned}
        d["seed"] = d.get("seed", 0) + self.arms[arm].seed_offset
        return Config.from_dict(d, where=where)


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{at} ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def _check_keys(data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r}{close_match(str(key), known)}; known: {', '.join(known)}")


def _component(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value, "params": {}}
    out = copy.deepcopy(value)
    out.setdefault("params", {})
    return out


def load_base(directory: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    path = directory / "base.yaml"
    data = _load_yaml(path)
    _check_keys(data, ("recipe", "presets", "default_preset"), str(path))
    recipe = data.get("recipe") or {}
    Config.from_dict(recipe, where=f"{path}: recipe")  # validates every name and parameter
    recipe = {k: (_component(v) if k in AXES else v) for k, v in recipe.items()}
    presets = data.get("presets") or {}
    if not isinstance(presets, dict) or not presets:
        raise UserError(f"{path}: presets: expected a mapping of preset names (smoke, quick, full) to settings")
    for name, p in presets.items():
        at = f"{path}: presets.{name}"
        if not isinstance(p, dict):
            raise UserError(f"{at}: expected a mapping")
        _check_keys(p, (*_PRESET_SCALARS, "component_params", "description"), at)
        Config.from_dict({k: v for k, v in p.items() if k in _PRESET_SCALARS}, where=at)
    default = data.get("default_preset", "quick")
    if default not in presets:
        raise UserError(f"{path}: default_preset {default!r} is not a preset; known: {', '.join(presets)}")
    return recipe, presets, default


def _range(value: Any, default: Any, where: str) -> Range:
    if isinstance(value, dict) and "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}.choices: expected a non-empty list")
        return Range(choices=tuple(choices))
    if isinstance(value, list) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    if not isinstance(value, dict) or not {"low", "high"} <= set(value):
        raise UserError(f"{where}: expected [low, high], {{low, high, log}} or {{choices: [...]}}")
    _check_keys(value, ("low", "high", "log"), where)
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise UserError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if not low < high:
        raise UserError(f"{where}: empty range: low {low} must be below high {high}")
    log = bool(value.get("log", False))
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    integer = isinstance(default, int) and not isinstance(default, bool)
    if integer and not (isinstance(low, int) and isinstance(high, int)):
        raise UserError(f"{where}: parameter is an integer; expected integer bounds, got {low!r} and {high!r}")
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        raise UserError(f"{where}: only numeric parameters take [low, high]; use {{choices: [...]}}")
    return Range(float(low) if not integer else low, float(high) if not integer else high, log, integer)


def load_space(name: str, directory: Path | None = None) -> Space:
    """Load and validate search_spaces/<name>.yaml against base.yaml and the registries."""
    from ablate.components import REGISTRIES

    directory = directory or spaces_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")
        raise UserError(f"unknown search space {name!r}{close_match(name, known)}; known: {', '.join(known)} (in {directory})")
    recipe, presets, default_preset = load_base(directory)
    data = _load_yaml(path)
    _check_keys(data, _SPACE_KEYS, str(path))
    axis = data.get("axis")
    if axis not in AXIS_KEYS:
        raise UserError(f"{path}: axis: expected one of {', '.join(AXIS_KEYS)}, got {axis!r}")
    mode = data.get("mode", "ablation")
    if mode not in MODES:
        raise UserError(f"{path}: mode: expected one of {', '.join(MODES)}, got {mode!r}")
    raw_arms = data.get("arms")
    if not isinstance(raw_arms, dict) or not raw_arms:
        raise UserError(f"{path}: arms: expected a mapping of arm labels to settings, with at least one arm")
    arms: dict[str, Arm] = {}
    for label, spec in raw_arms.items():
        at = f"{path}: arms.{label}"
        spec = spec or {}
        if not isinstance(spec, dict):
            raise UserError(f"{at}: expected a mapping (name, params, ranges, augmentations, seed_offset)")
        _check_keys(spec, _ARM_KEYS, at)
        overrides: dict[str, Any] = {}
        ranges: dict[str, Range] = {}
        if axis == "augmentations":
            if "augmentations" not in spec:
                raise UserError(f"{at}: expected 'augmentations: [...]' on the augmentations axis")
            overrides["augmentations"] = spec["augmentations"]
        else:
            comp = {"name": spec.get("name", label), "params": spec.get("params") or {}}
            overrides[axis] = comp
            try:
                entry = REGISTRIES[AXES[axis]].get(comp["name"])
            except UserError as e:
                raise UserError(f"{at}: {e}") from None
            for param, r in (spec.get("ranges") or {}).items():
                entry.check_params({param: None}, f"{at}.ranges")
                ranges[param] = _range(r, entry.params[param], f"{at}.ranges.{param}")
        offset = spec.get("seed_offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise UserError(f"{at}.seed_offset: expected an integer, got {offset!r}")
        arms[str(label)] = Arm(str(label), overrides, ranges, offset)
    baseline = data.get("baseline", next(iter(arms)))
    if baseline not in arms:
        raise UserError(f"{path}: baseline {baseline!r} is not an arm{close_match(str(baseline), arms)}; arms: {', '.join(arms)}")
    tune = data.get("tune") or {}
    _check_keys(tune, ("n_trials",), f"{path}: tune")
    n_trials = tune.get("n_trials", 20)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise UserError(f"{path}: tune.n_trials: expected a positive integer, got {n_trials!r}")
    if mode != "ablation" and not any(a.ranges for a in arms.values()) and len(arms) < 2:
        raise UserError(f"{path}: mode {mode} needs ranges to tune or at least two arms")
    space = Space(name, path, str(data.get("question", "")), axis, mode, baseline, arms, n_trials,
                  recipe, presets, default_preset)
    for label in arms:  # every arm must resolve to a valid config under every preset
        for preset in presets:
            space.config(label, preset)
    return space


def list_spaces(directory: Path | None = None) -> list[str]:
    directory = directory or spaces_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")


def recipe_config(preset: str, directory: Path | None = None) -> Config:
    """The base recipe alone (no arm) under a preset: what `ablate finalize` starts from."""
    directory = directory or spaces_dir()
    recipe, presets, default_preset = load_base(directory)
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}{close_match(preset, presets)}; known: {', '.join(presets)} "
                        f"(in {directory / 'base.yaml'})")
    bare = Space("base", directory / "base.yaml", "", "features", "ablation", "recipe",
                 {"recipe": Arm("recipe", {})}, 1, recipe, presets, default_preset)
    return bare.config("recipe", preset)


def default_preset(directory: Path | None = None) -> str:
    return load_base(directory or spaces_dir())[2]
