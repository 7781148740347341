"""Search spaces: one YAML file per axis in search_spaces/, on top of base.yaml (ablate.resolve).

An axis file varies one part of the recipe. Each arm is a label with optional keys:
    name          the component (default: the label itself), on the component axes
    params        fixed parameters of that component
    ranges        parameters to tune (modes tune and both): [low, high] | {low, high, log} |
                  {choices: [...]}
    augmentations the list of augmentations (the augmentations axis only)
    drop_participants, drop_messiest
                  who is left out of training (the data axis only; see base.yaml)
    batch_size, amp, late_dropout, pretrain_ce, lr_scaling
                  the training axis only; lr_scaling (linear | sqrt | none) multiplies the
                  optimizer's lr by (the arm's batch size / the preset's)^1 or ^0.5
    ema, awp, awp_from, late_dropout, model, optimizer
                  the regularisation axis only; model: {params: {...}} changes the recipe's own
                  model (drop_path, ...), optimizer: {name, params} another optimizer
    recipe        the recipe axis only: one of base.yaml's recipes (baseline, winner), whole
    seed_offset   train with other seeds: a null arm, to see what seed noise alone looks like
and, beside the arms, `rope:` (the region of practical equivalence of the accuracy difference:
a half-width such as 0.005, or [low, high]; default +-0.005) and `recipe:` (the recipe the arms
change when `ablate run` is not given --recipe; default baseline).
Files hold names and numbers only. Everything is checked on load, and a space that cannot run is
refused with the file and key path: every arm is resolved under every preset and built once (on
PyTorch's meta device: no memory, no arithmetic), at both ends of each range and with each choice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.config import AXES, param_value
from ablate.errors import UserError, close_match
from ablate.report.stats import DEFAULT_ROPE
from ablate.resolve import BASELINE, Base, check_component, load_base, resolve
from ablate.yamlfile import load_yaml

MODES = ("ablation", "tune", "both")
# axes whose arms set recipe keys directly (checked when the arm is resolved)
RECIPE_AXES = {"data": ("drop_participants", "drop_messiest"),
               "training": ("batch_size", "amp", "late_dropout", "pretrain_ce", "lr_scaling"),
               "regularisation": ("ema", "awp", "awp_from", "late_dropout", "model", "optimizer"),
               "recipe": ("recipe",)}
AXIS_KEYS = tuple(AXES) + ("augmentations", *RECIPE_AXES)
_SPACE_KEYS = ("question", "axis", "mode", "baseline", "arms", "tune", "rope", "recipe")
_COMPONENT_ARM_KEYS = ("name", "params", "ranges", "seed_offset")
_AUG_ARM_KEYS = ("augmentations", "seed_offset")


def spaces_dir() -> Path:
    """The search_spaces/ folder: $ABLATE_SPACES, else ./search_spaces, else the one shipped beside the package."""
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

    def ends(self) -> tuple[Any, ...]:
        """The values that bound what a sampler can draw: both ends, or every choice."""
        return self.choices or (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"choices": list(self.choices)} if self.choices else \
            {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Arm:
    label: str
    axis: str  # the config key it varies
    overrides: dict[str, Any]  # config keys -> values, applied on top of the recipe
    ranges: dict[str, Range] = field(default_factory=dict)  # param -> range, on the arm's component
    seed_offset: int = 0
    source: str = ""  # "<file>: arms.<label>", for messages

    def spec(self) -> dict[str, Any]:
        """The arm as its file defines it, in one normal form: what a grown study compares."""
        return {"overrides": self.overrides, "ranges": {k: r.to_dict() for k, r in self.ranges.items()},
                "seed_offset": self.seed_offset}


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
    base: Base
    rope: tuple[float, float] = DEFAULT_ROPE  # region of practical equivalence of the accuracy difference

    @property
    def default_preset(self) -> str:
        return self.base.default_preset


def _check_keys(data: dict[str, Any], known: tuple[str, ...], where: str, why: str = "") -> None:
    for key in data:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r}{close_match(str(key), known)}; known: {', '.join(known)}{why}")


def _range(value: Any, entry: Any, param: str, where: str) -> Range:
    default = entry.params[param]
    if isinstance(value, dict) and "choices" in value:
        _check_keys(value, ("choices",), where)
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}.choices: expected a non-empty list of values, got {choices!r}")
        checked = tuple(param_value(entry, param, c, f"{where}.choices[{i}]") for i, c in enumerate(choices))
        if any(isinstance(c, tuple) for c in checked):
            raise UserError(f"{where}.choices: choices must be single values (Optuna stores plain values)")
        if len(set(checked)) != len(checked):
            raise UserError(f"{where}.choices: a value is listed twice")
        return Range(choices=checked)
    if isinstance(value, list) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    if not isinstance(value, dict) or not {"low", "high"} <= set(value):
        raise UserError(f"{where}: expected [low, high], {{low, high, log}} or {{choices: [...]}}, got {value!r}")
    _check_keys(value, ("low", "high", "log"), where)
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        raise UserError(f"{where}: only numeric parameters take [low, high]; use {{choices: [...]}}")
    integer = isinstance(default, int)
    low = param_value(entry, param, value["low"], f"{where}.low")
    high = param_value(entry, param, value["high"], f"{where}.high")
    if not low < high:
        raise UserError(f"{where}: empty range: low {low} must be below high {high}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    return Range(low, high, log, integer)


def _arm(label: str, spec: Any, axis: str, mode: str, path: Path) -> Arm:
    from ablate.components import REGISTRIES

    at = f"{path}: arms.{label}"
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        keys = _AUG_ARM_KEYS if axis == "augmentations" else (*RECIPE_AXES[axis], "seed_offset") \
            if axis in RECIPE_AXES else _COMPONENT_ARM_KEYS
        raise UserError(f"{at}: expected a mapping ({', '.join(keys)})")
    if "." in label or not label.strip():
        raise UserError(f"{at}: an arm label must be non-empty and without '.' (tuned parameters are named <arm>.<param>)")
    if axis in RECIPE_AXES:  # recipe keys, checked when the arm is resolved (check_runnable)
        _check_keys(spec, (*RECIPE_AXES[axis], "seed_offset"), at, f" (on the {axis} axis)")
        overrides: dict[str, Any] = {k: v for k, v in spec.items() if k != "seed_offset"}
        ranges: dict[str, Range] = {}
        for key in set(overrides) & set(AXES):  # the recipe's component ({params}) or another ({name, params})
            _check_component_override(overrides[key], f"{at}.{key}")
        if "recipe" in overrides and not isinstance(overrides["recipe"], str):
            raise UserError(f"{at}.recipe: expected the name of one of base.yaml's recipes, got {overrides['recipe']!r}")
    elif axis == "augmentations":
        _check_keys(spec, _AUG_ARM_KEYS, at, " (on the augmentations axis)")
        augs = spec.get("augmentations")
        if not isinstance(augs, list):
            raise UserError(f"{at}: expected 'augmentations: [...]' (a list) on the augmentations axis")
        for i, a in enumerate(augs):
            check_component(a, "augmentations", f"{at}.augmentations[{i}]")
        overrides = {"augmentations": [a if isinstance(a, dict) else {"name": a} for a in augs]}
        ranges = {}
    else:
        why = f" (on the {axis} axis)" if "augmentations" in spec else \
            " (ranges are for modes tune and both)" if "ranges" in spec and mode == "ablation" else ""
        _check_keys(spec, _COMPONENT_ARM_KEYS if mode != "ablation" else _COMPONENT_ARM_KEYS[:2] + ("seed_offset",), at, why)
        comp = {"name": spec.get("name", label), "params": spec.get("params", {})}
        check_component(comp, AXES[axis], at)
        overrides = {axis: {"name": comp["name"], "params": dict(comp["params"] or {})}}
        entry = REGISTRIES[AXES[axis]].get(comp["name"])
        raw = spec.get("ranges") or {}
        if not isinstance(raw, dict):
            raise UserError(f"{at}.ranges: expected a mapping of parameter names to ranges, got {raw!r}")
        entry.check_params(raw, f"{at}.ranges")
        ranges = {str(p): _range(r, entry, str(p), f"{at}.ranges.{p}") for p, r in raw.items()}
    offset = spec.get("seed_offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise UserError(f"{at}.seed_offset: expected an integer >= 0, got {offset!r}")
    return Arm(label, axis, overrides, ranges, offset, at)


def _check_component_override(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("params", {}), dict) or \
            not isinstance(value.get("name", ""), str):
        raise UserError(f"{where}: expected {{params: {{...}}}} (the recipe's component) or {{name: ..., params: {{...}}}}")
    _check_keys(value, ("name", "params"), where)


def load_space(name: str, directory: Path | None = None, recipe: str | None = None) -> Space:
    """Load and validate search_spaces/<name>.yaml against base.yaml and the registries, on the
    recipe `recipe` (None: the space file's `recipe:`, else the baseline recipe)."""
    directory = directory or spaces_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = list_spaces(directory)
        raise UserError(f"unknown search space {name!r}{close_match(name, known)}; known: {', '.join(known)} (in {directory})")
    data = load_yaml(path)
    _check_keys(data, _SPACE_KEYS, str(path))
    chosen = recipe or data.get("recipe", BASELINE)
    every = load_base(directory)
    try:
        base = every.for_recipe(str(chosen))
    except UserError as e:
        raise UserError(f"{path}: recipe: {e}" if recipe is None else f"--recipe: {e}") from None
    axis, mode = data.get("axis"), data.get("mode", "ablation")
    if axis not in AXIS_KEYS:
        raise UserError(f"{path}: axis: expected one of {', '.join(AXIS_KEYS)}, got {axis!r}")
    if mode not in MODES:
        raise UserError(f"{path}: mode: expected one of {', '.join(MODES)}, got {mode!r}{close_match(str(mode), MODES)}")
    raw_arms = data.get("arms")
    if not isinstance(raw_arms, dict) or not raw_arms:
        raise UserError(f"{path}: arms: expected a mapping of arm labels to settings, with at least one arm")
    labels = [str(label) for label in raw_arms]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:  # `1:` and `'1':` are two YAML keys but one label
        raise UserError(f"{path}: arms: the label {twice[0]!r} is written twice (as text and as a number)")
    arms = {str(label): _arm(str(label), spec, axis, mode, path) for label, spec in raw_arms.items()}
    baseline = data.get("baseline", next(iter(arms)))
    if baseline not in arms:
        raise UserError(f"{path}: baseline {baseline!r} is not an arm{close_match(str(baseline), arms)}; arms: {', '.join(arms)}")
    n_trials = _tune(data, mode, path)
    if mode != "ablation" and not any(a.ranges for a in arms.values()) and len(arms) < 2:
        raise UserError(f"{path}: mode {mode} needs ranges to tune or at least two arms")
    for arm in (a for a in arms.values() if "recipe" in a.overrides):
        try:
            base.for_recipe(arm.overrides["recipe"])
        except UserError as e:
            raise UserError(f"{arm.source}.recipe: {e}") from None
    space = Space(name, path, str(data.get("question", "")), axis, mode, str(baseline), arms, n_trials, base,
                  _rope(data.get("rope", list(DEFAULT_ROPE)), path))
    check_runnable(space)
    return space


def _rope(value: Any, path: Path) -> tuple[float, float]:
    """`rope: 0.005` (symmetric) or `rope: [low, high]`, in accuracy units, low <= 0 <= high."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [-abs(value), abs(value)]
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not value[0] <= 0 <= value[1] or value[0] == value[1]:
        raise UserError(f"{path}: rope: expected a half-width (0.005) or [low, high] with low <= 0 <= high, "
                        f"in accuracy units, got {value!r}")
    return float(value[0]), float(value[1])


def _tune(data: dict[str, Any], mode: str, path: Path) -> int:
    if "tune" in data and mode == "ablation":
        raise UserError(f"{path}: tune: unused in mode ablation (every arm runs once); remove it or set mode: tune or both")
    tune = data.get("tune") or {}
    if not isinstance(tune, dict):
        raise UserError(f"{path}: tune: expected a mapping with n_trials")
    _check_keys(tune, ("n_trials",), f"{path}: tune")
    n_trials = tune.get("n_trials", 20)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise UserError(f"{path}: tune.n_trials: expected a positive integer, got {n_trials!r}")
    return n_trials


def check_runnable(space: Space) -> None:
    """Every arm resolves and builds under every preset, at the ends of its ranges too."""
    from ablate.parts import check_buildable

    for label, arm in space.arms.items():
        variants: list[dict[str, Any]] = [{}]
        for param, r in arm.ranges.items():
            variants += [{param: v} for v in r.ends()]
        for preset in space.base.presets:
            for tuned in variants:
                config = resolve(space.base, preset, arm, tuned).config
                at = "".join(f".ranges.{k}={v!r}" for k, v in tuned.items())
                check_buildable(config, f"{arm.source}{at} (preset {preset})")


def list_spaces(directory: Path | None = None) -> list[str]:
    directory = directory or spaces_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")


def recipe_config(preset: str, directory: Path | None = None, recipe: str = BASELINE) -> Any:
    """A recipe of base.yaml alone (no arm) under a preset: what `ablate finalize` starts from."""
    return resolve(load_base(directory or spaces_dir()).for_recipe(recipe), preset).config


def default_preset(directory: Path | None = None) -> str:
    return load_base(directory or spaces_dir()).default_preset
