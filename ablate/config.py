"""The typed training configuration: every field required, every value checked.

Configuration holds names and numbers only. Its values come from `search_spaces/base.yaml` (the
only source of recipe defaults) through `ablate.resolve.resolve`, which also records where each
value came from. `Config.from_dict` refuses a missing or unknown key (with the closest known
one), a value of the wrong type, out of range, NaN or infinite, an unknown enum value, and any
component name or parameter its registry does not know.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ablate.errors import UserError, close_match

# Component axes: config key -> registry kind (see ablate.components.REGISTRIES).
AXES = {"features": "features", "model": "models", "loss": "losses", "optimizer": "optimizers",
        "schedule": "schedules"}

Amp = Literal["auto", "off", "bf16", "fp16"]
FoldKind = Literal["grouped", "ungrouped-leaky"]
_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


@dataclass(frozen=True)
class Component:
    """A registered component chosen by name, with its own parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}


# Recipe keys added after studies and final folders were first written, with the value that
# behaves as before they existed: a record without one is read as having that value. cuda_graphs:
# its default, which changes nothing on the CPU and on CUDA only rounding and dropout's draws (as
# feed.DATA_PATH counts changes), so earlier studies and final folders go on with it.
ADDED_KEYS: dict[str, Any] = {"drop_participants": [], "drop_messiest": 0, "late_dropout": 0.0, "pretrain_ce": 0.0,
                              "ema": 0.0, "awp": 0.0, "awp_from": 0.0, "cuda_graphs": True}


def _min(low: float) -> dict[str, Any]:
    return {"min": low}


@dataclass(frozen=True)
class Config:
    """One training configuration (the baseline's values are in search_spaces/base.yaml)."""

    features: Component
    model: Component
    loss: Component
    optimizer: Component
    schedule: Component
    augmentations: tuple[Component, ...]
    epochs: int = field(metadata=_min(1))
    batch_size: int = field(metadata=_min(1))
    grad_clip: float = field(metadata=_min(0))  # max global gradient norm; 0 disables clipping
    early_stopping: int = field(metadata=_min(0))  # patience in epochs without a better val accuracy; 0 disables
    amp: Amp  # auto: fp16/bf16 on CUDA, bf16 on CPUs where it is faster, else fp32
    device: str = field(metadata={"pattern": _DEVICE, "expected": "auto, cpu, cuda or cuda:N"})
    seed: int = field(metadata=_min(0))  # model init, batch order and augmentation randomness
    folds: int = field(metadata=_min(2))  # K of the participant-grouped folds
    fold_seed: int = field(metadata=_min(0))  # seed of the fold assignment (shared by every trial)
    fold_kind: FoldKind  # "ungrouped-leaky" only to measure how much leakage flatters
    max_train_batches: int = field(metadata=_min(0))  # cap on batches per epoch (0 = all); smoke tests only
    compile: bool  # torch.compile the model (see the README for what it measured)
    cuda_graphs: bool  # on CUDA (not with compile), training steps as CUDA graphs: whole (stepgraphs.py), else the model's pass (graphs.py)
    deterministic: bool  # deterministic GPU kernels: bit-reproducible on a GPU, and slower
    drop_participants: tuple[int, ...]  # participant ids left out of every training fold (validated on as usual)
    drop_messiest: int = field(metadata=_min(0))  # also leave out the k with the most frames without any hand
    late_dropout: float = field(metadata={"min": 0, "below": 1})  # share of the epochs trained with dropout off
    pretrain_ce: float = field(metadata={"min": 0, "below": 1})  # share of the epochs trained with a softmax head first
    ema: float = field(metadata={"min": 0, "below": 1})  # decay per step of the weights' moving average; 0: none
    awp: float = field(metadata=_min(0))  # adversarial weight perturbation per tensor (L2 norm); 0: none
    awp_from: float = field(metadata={"min": 0, "below": 1})  # share of the epochs trained before AWP starts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Component):
                out[f.name] = v.to_dict()
            elif f.name == "augmentations":
                out[f.name] = [c.to_dict() for c in v]
            elif isinstance(v, tuple):
                out[f.name] = list(v)
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> Config:
        """Build and validate a Config; every problem is a one-line UserError naming the key."""
        from ablate.components import REGISTRIES

        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                raise UserError(f"{where}: unknown key {key!r}{close_match(str(key), fields)}; known: {', '.join(fields)}")
        missing = [k for k in fields if k not in data]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)} (search_spaces/base.yaml's recipe sets every key)")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            at = f"{where}.{key}"
            if key in AXES:
                kwargs[key] = component(value, REGISTRIES[AXES[key]], at)
            elif key == "augmentations":
                if not isinstance(value, list):
                    raise UserError(f"{at}: expected a list of augmentations, got {type(value).__name__}")
                kwargs[key] = tuple(component(v, REGISTRIES["augmentations"], f"{at}[{i}]") for i, v in enumerate(value))
            else:
                kwargs[key] = _field_value(value, hints[key], fields[key].metadata, at)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def check_value(cls, key: str, value: Any, where: str) -> Any:
        """One scalar field's value, checked as from_dict checks it (a preset sets a few of them)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return _field_value(value, typing.get_type_hints(cls)[key], fields[key].metadata, where)


def _field_value(value: Any, hint: Any, meta: Any, where: str) -> Any:
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]: a list of distinct values of one kind
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        items = tuple(scalar(v, typing.get_args(hint)[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(set(items)) < len(items):
            raise UserError(f"{where}: {next(v for v in items if items.count(v) > 1)!r} is listed twice")
        return items
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise UserError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {value!r}"
                            f"{close_match(str(value), map(str, allowed))}")
        return value
    value = scalar(value, hint, where)
    if "min" in meta and value < meta["min"]:
        raise UserError(f"{where}: expected a value >= {meta['min']}, got {value!r}")
    if "below" in meta and value >= meta["below"]:
        raise UserError(f"{where}: expected a value below {meta['below']}, got {value!r}")
    if "pattern" in meta and not meta["pattern"].match(value):
        raise UserError(f"{where}: expected {meta['expected']}, got {value!r}")
    return value


def component(value: Any, registry: Any, where: str) -> Component:
    """'name' or {'name': ..., 'params': {...}} -> Component, checked against the registry."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"{where}: expected a component name or {{name: ..., params: {{...}}}}, got {value!r}")
    extra = set(value) - {"name", "params"}
    if extra:
        raise UserError(f"{where}: unknown key {sorted(map(str, extra))[0]!r}; expected 'name' and 'params'")
    raw = value.get("params")
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{where}.params: expected a mapping of parameter names to values, got {raw!r}")
    try:
        entry = registry.get(value["name"])
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    params = dict(raw or {})
    entry.check_params(params, where)
    for k, v in params.items():
        params[k] = param_value(entry, k, v, f"{where}.params.{k}")
    return Component(entry.name, params)


def param_value(entry: Any, key: str, value: Any, where: str) -> Any:
    """A component parameter checked against the type of its default (ranges: YAML gives lists)."""
    default = entry.params[key]
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise UserError(f"{where}: expected a list of {len(default)} numbers, got {value!r}")
        return tuple(scalar(x, type(d), where) for x, d in zip(value, default))
    if default is None:
        return value
    return scalar(value, type(default), where)


def scalar(value: Any, kind: Any, where: str) -> Any:
    """Check a plain value against a type (an int is accepted for a float; NaN and inf never are)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: expected {kind.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: expected a finite number, got {value!r}")
    return value
