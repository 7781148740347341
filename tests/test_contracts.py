"""Contract tests parametrized over every registry: a new entry is tested the day it is added."""

from __future__ import annotations

import inspect
import pkgutil

import numpy as np
import pytest
import torch

import ablate.components
from ablate.components import AUGMENTATIONS, FEATURES, LOSSES, MODELS, OPTIMIZERS, REGISTRIES, SCHEDULES
from ablate.config import Component
from ablate.parts import SignModel, build_parts
from ablate.spaces import recipe_config
from ablate.registry import Registry
from conftest import points_for

ALL = [(kind, e.name) for kind, reg in REGISTRIES.items() for e in reg]
# small sizes so the contract tests stay fast on 2 cores
SMALL_MODEL = {"transformer": {"width": 32, "heads": 4}, "lstm": {"hidden": 16}, "conv1d_transformer": {"width": 32, "heads": 4},
               "graph": {"channels": 4, "blocks": 2, "width": 32}}


def test_every_component_module_is_registered() -> None:
    """A module in ablate/components/ that defines a Registry must be reachable from REGISTRIES."""
    regs = {id(r) for r in REGISTRIES.values()}
    for mod in pkgutil.iter_modules(ablate.components.__path__):
        module = __import__(f"ablate.components.{mod.name}", fromlist=["_"])
        for value in vars(module).values():
            if isinstance(value, Registry):
                assert id(value) in regs, f"registry {value.kind!r} in {mod.name} is not in REGISTRIES"


@pytest.mark.parametrize("kind, name", ALL)
def test_entries_are_described_and_typed(kind: str, name: str) -> None:
    e = REGISTRIES[kind].get(name)
    assert e.description and not e.description.endswith(":"), "a one-line description"
    assert set(e.types) == set(e.params), f"every param of {name} needs a type annotation"
    for p, default in e.params.items():
        assert isinstance(default, (int, float, bool, str, tuple, type(None))), f"{name}.{p} must be a plain value"


def _raw(t: int, seed: int = 0) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(seed).uniform(0.2, 0.8, (t, 543, 3)).astype(np.float32))
    x[:, 468:489] = float("nan")  # left hand never detected
    x[: t // 2, 522:543] = float("nan")
    return x


@pytest.mark.parametrize("name", FEATURES.names())
def test_feature_sets(name: str) -> None:
    f = FEATURES.build(name)
    for t in (1, 2, 50, 400):
        out = f(_raw(t))
        assert out.shape == (min(t, FEATURES.get(name).params["max_len"]), f.out_dim)
        assert torch.isfinite(out).all()
    assert torch.isfinite(f(torch.full((5, 543, 3), float("nan")))).all()
    assert not list(f.parameters()), "feature sets have no learned parameters"


@pytest.mark.parametrize("name", MODELS.names())
def test_models(name: str) -> None:
    torch.manual_seed(0)
    m = MODELS.build(name, SMALL_MODEL.get(name, {}), in_dim=20, frames=384, points=points_for(20))
    x = torch.randn(3, 9, 20)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 5:] = False
    out = m(x, mask)
    assert out.shape == (3, m.out_dim) and torch.isfinite(out).all()
    m(torch.zeros(1, 1, 20), torch.ones(1, 1, dtype=torch.bool))  # a one-frame clip


@pytest.mark.parametrize("name", LOSSES.names())
def test_losses_step_reduces_the_loss(name: str) -> None:
    torch.manual_seed(0)
    head = LOSSES.build(name, emb_dim=8, num_classes=4)
    emb = torch.nn.Parameter(torch.randn(12, 8))
    y = torch.arange(12) % 4
    opt = torch.optim.SGD([emb, *head.parameters()], lr=0.05)
    head.eval()  # AdaCos adapts its scale in train mode; a fixed scale makes the losses comparable
    before = float(head(emb, y).detach())
    head(emb, y).backward()
    opt.step()
    assert head.logits(emb).shape == (12, 4)
    assert float(head(emb, y).detach()) < before
    # per-sample losses (mixup weights them) average to the batch loss
    per_sample = head(emb, y, reduction="none")
    assert per_sample.shape == (12,) and float(per_sample.mean().detach()) == pytest.approx(float(head(emb, y).detach()), rel=1e-5)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizers_step_reduces_the_loss(name: str) -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6))
    opt = OPTIMIZERS.build(name, {"lr": 1e-2}, weights=[w])
    loss = lambda: ((w - 1.0) ** 2).sum()  # noqa: E731
    before = float(loss())
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        if "two_pass" in OPTIMIZERS.get(name).tags:
            opt.first_step(zero_grad=True)
            loss().backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
    assert float(loss()) < before


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedules_keep_the_rate_positive_and_bounded(name: str) -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-3)
    sched = SCHEDULES.build(name, optimizer=opt, epochs=3, steps_per_epoch=4)
    for _ in range(12):
        assert 0 < opt.param_groups[0]["lr"] <= 1e-3 + 1e-12
        opt.step()
        sched.step()


@pytest.mark.parametrize("name", AUGMENTATIONS.names(tag="sequence"))
def test_sequence_augmentations(name: str) -> None:
    """Every raw-landmark augmentation takes a batch with a pending map and gives one the
    features of every feature set can be made from (tests/test_augmentations.py holds the rest)."""
    from ablate.components.augmentations import compose
    from ablate.data.resident import raw_batch

    for feature_set in FEATURES.names():
        features = FEATURES.build(feature_set, {"max_len": 16})
        clips = [_raw(30).numpy(), _raw(3).numpy()]
        raw = compose([("hflip", {"p": 1.0}), (name, {"p": 1.0})])(raw_batch(clips, features.layout()))
        x, mask = features.batched(raw)
        assert x.dtype == torch.float32 and x.shape[2] == features.out_dim and torch.isfinite(x).all()
        assert mask.shape == x.shape[:2] and bool(mask[:, 0].all())


@pytest.mark.parametrize("name", FEATURES.names())
def test_whole_model_on_all_nan_input(name: str) -> None:
    cfg = recipe_config("smoke").replace(features=Component(name))
    model = SignModel(build_parts(cfg, 7)).eval()
    for t in (1, 3):
        p = model(torch.full((t, 543, 3), float("nan")))
        assert p.shape == (7,) and torch.isfinite(p).all() and abs(float(p.sum()) - 1) < 1e-5


def test_registries_list_their_kinds() -> None:
    assert {"features", "augmentations", "models", "losses", "optimizers", "schedules"} == set(REGISTRIES)
    assert inspect.isfunction(FEATURES.get("seed828").builder)


@pytest.mark.parametrize("aug", AUGMENTATIONS.names(tag="batch"))
@pytest.mark.parametrize("loss", LOSSES.names())
def test_every_loss_trains_with_every_batch_augmentation(loss: str, aug: str) -> None:
    """Two real training steps, as the trainer takes them (a head with state, AdaCos, included)."""
    from ablate.step import Step

    torch.manual_seed(0)
    cfg = recipe_config("smoke").replace(loss=Component(loss), augmentations=(Component(aug, {"p": 1.0}),))
    parts = build_parts(cfg, 5)
    weights = [*parts.model.parameters(), *parts.head.parameters()]
    opt = OPTIMIZERS.build("adamw", {"lr": 1e-2}, weights=weights)
    sched = SCHEDULES.build("constant", optimizer=opt, epochs=1, steps_per_epoch=2)
    from ablate.parts import build_augmentations

    step = Step(parts, parts.model, opt, sched, None, None, torch.device("cpu"), 1.0, False,
                build_augmentations(cfg).batch, torch.Generator().manual_seed(0))
    x, mask, y = torch.randn(8, 6, parts.features.out_dim), torch.ones(8, 6, dtype=torch.bool), torch.arange(8) % 5
    before = [w.detach().clone() for w in weights]
    assert all(bool(torch.isfinite(step(x, mask, y))) for _ in range(2))
    assert any(not torch.equal(b, w) for b, w in zip(before, weights)), "the step changed no weight"
