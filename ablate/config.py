"""The typed training configuration: defaults (the baseline recipe) <- file <- command line.

Configuration holds names and numbers only. `Config.from_dict` refuses unknown keys with the
closest known one and checks every component name and parameter against its registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ablate.errors import UserError, close_match

# Component axes: config key -> registry kind (see ablate.components.REGISTRIES).
AXES = {"features": "features", "model": "models", "loss": "losses", "optimizer": "optimizers",
        "schedule": "schedules"}


@dataclass(frozen=True)
class Component:
    """A registered component chosen by name, with its own parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


def _baseline_augs() -> tuple[Component, ...]:
    return tuple(Component(n) for n in ("shift", "scale", "rotate", "hflip"))


@dataclass(frozen=True)
class Config:
    """One training configuration. Defaults are the baseline recipe (a published top-50 solution)."""

    features: Component = Component("seed828")
    model: Component = Component("transformer")
    loss: Component = Component("subcenter_arcface")
    optimizer: Component = Component("ranger")
    schedule: Component = Component("warmup_cosine")
    augmentations: tuple[Component, ...] = field(default_factory=_baseline_augs)
    epochs: int = 100
    batch_size: int = 64
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    early_stopping: int = 0  # patience in epochs without a better val accuracy; 0 disables
    amp: str = "auto"  # auto | off | bf16 | fp16 (auto: fp16/bf16 on CUDA, bf16 on CPU if faster)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # model init, batch order and augmentation randomness
    folds: int = 5  # K of the participant-grouped folds
    fold_seed: int = 0  # seed of the fold assignment (shared by every trial of every study)
    fold_kind: str = "grouped"  # or "ungrouped-leaky": only to measure how much leakage flatters
    workers: int = -1  # data loader processes; -1 = automatic
    max_train_batches: int = 0  # cap on batches per epoch (0 = all); for smoke tests only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Component):
                out[f.name] = v.to_dict()
            elif f.name == "augmentations":
                out[f.name] = [c.to_dict() for c in v]
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> Config:
        """Build and validate a Config; unknown keys, names and params raise a one-line UserError."""
        from ablate.components import REGISTRIES

        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                raise UserError(f"{where}: unknown key {key!r}{close_match(key, fields)}; known: {', '.join(fields)}")
            at = f"{where}.{key}"
            if key in AXES:
                kwargs[key] = _component(value, REGISTRIES[AXES[key]], at)
            elif key == "augmentations":
                if not isinstance(value, list):
                    raise UserError(f"{at}: expected a list of augmentations, got {type(value).__name__}")
                kwargs[key] = tuple(_component(v, REGISTRIES["augmentations"], f"{at}[{i}]") for i, v in enumerate(value))
            else:
                kwargs[key] = _scalar(value, type(fields[key].default), at)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _component(value: Any, registry: Any, where: str) -> Component:
    """'name' or {'name': ..., 'params': {...}} -> Component, checked against the registry."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise UserError(f"{where}: expected a component name or {{name: ..., params: {{...}}}}")
    extra = set(value) - {"name", "params"}
    if extra:
        raise UserError(f"{where}: unknown key {sorted(extra)[0]!r}; expected 'name' and 'params'")
    params = dict(value.get("params") or {})
    if not isinstance(value.get("params") or {}, dict):
        raise UserError(f"{where}.params: expected a mapping of parameter names to values")
    try:
        entry = registry.get(value["name"])
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    entry.check_params(params, where)
    for k, v in params.items():
        default = entry.params[k]
        if isinstance(default, tuple):  # ranges: YAML gives lists
            if not isinstance(v, (list, tuple)) or len(v) != len(default):
                raise UserError(f"{where}.params.{k}: expected a list of {len(default)} numbers, got {v!r}")
            params[k] = tuple(_scalar(x, type(d), f"{where}.params.{k}") for x, d in zip(v, default))
        elif default is not None:
            params[k] = _scalar(v, type(default), f"{where}.params.{k}")
    return Component(entry.name, dict(params))


def _scalar(value: Any, kind: type, where: str) -> Any:
    """Check a plain value against the type of its default (an int is accepted for a float)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value
