"""A second base recipe (the 1st place's) and its tricks: recipes in base.yaml, `--recipe`, the
spaces that vary the tricks, AWP, the weights' moving average, drop path and Lookahead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate.components import MODELS, OPTIMIZERS, SCHEDULES
from ablate.components._layers import DropPath
from ablate.errors import UserError
from ablate.parts import Parts, build_parts
from ablate.resolve import load_base, resolve
from ablate.spaces import list_spaces, load_space, recipe_config
from ablate.step import Awp, Ema, Step
from conftest import REPO, ablate_cli, spaces_folder

SHIPPED = REPO / "search_spaces"


def test_the_winner_recipe_is_the_baseline_with_its_changes_and_says_so() -> None:
    base = load_base(SHIPPED)
    assert base.recipe_names() == ["baseline", "winner"] and base.for_recipe("baseline") is base
    full = resolve(base.for_recipe("winner"), "full")
    c = full.config
    assert (c.features.name, c.model.name, c.loss.name, c.optimizer.name) == \
        ("lag118", "conv1d_transformer", "ce_smooth", "lookahead")
    assert c.model.params["stacks"] == 2 and c.model.params["width"] == 192 and c.model.params["drop_path"] == 0.2
    assert (c.ema, c.awp, c.late_dropout, c.loss.params["label_smoothing"]) == (0.999, 0.2, 0.1, 0.1)
    assert c.epochs == 300 and full.sources["epochs"] == "preset full"  # the recipe's own full preset
    assert full.sources["model.params.width"] == "base.yaml recipe winner"
    assert c.folds == 5 and c.grad_clip == 1.0  # what it does not change is the baseline's
    parts = build_parts(c, 250)
    n = sum(p.numel() for m in (parts.model, parts.head) for p in m.parameters())
    assert 1.6e6 < n < 1.8e6, n  # "about 1.7 M" in base.yaml's description
    assert resolve(base.for_recipe("winner"), "quick").config.epochs == 8  # other presets as shared


@pytest.mark.parametrize(("change", "message"), [
    ("recipes: {winner: {changes: {modle: transformer}}}", "recipes.winner.changes: unknown key 'modle' (did you mean 'model'?)"),
    ("recipes: {winner: {changes: {model: transformr}}}", "recipes.winner.changes.model: unknown model 'transformr' (did you mean 'transformer'?)"),
    ("recipes: {winner: {chenges: {}}}", "recipes.winner: unknown key 'chenges' (did you mean 'changes'?)"),
    ("recipes: {winner: {presets: {ful: {epochs: 3}}}}", "unknown preset 'ful' (did you mean 'full'?)"),
    ("recipes: {winner: {presets: {full: {epoch: 3}}}}", "recipes.winner.presets.full: unknown key 'epoch'"),
    ("recipes: {baseline: {}}", "recipes.baseline: expected a mapping of description, changes and presets"),
    ("recipes: {winner: {changes: {ema: 1.5}}}", "recipes.winner (preset smoke).ema: expected a value below 1"),
])
def test_bad_recipes_are_one_clear_line(tmp_path: Path, change: str, message: str) -> None:
    text = (SHIPPED / "base.yaml").read_text()
    start, end = text.index("recipes:\n"), text.index("# Training budgets.")
    folder = spaces_folder(tmp_path, x="axis: loss\narms: {ce: {}}\n")
    (folder / "base.yaml").write_text(text[:start] + change + "\n" + text[end:])
    with pytest.raises(UserError) as e:
        load_space("x", folder)
    assert "\n" not in str(e.value) and message in str(e.value), str(e.value)


def test_an_unknown_recipe_is_named_with_the_known_ones(synth_cache: Path, tmp_path: Path) -> None:
    r = ablate_cli("run", "losses", "--recipe", "winer", "--preset", "smoke", "--data", str(synth_cache),
                   "--storage", str(tmp_path / "s.journal"), env={"ABLATE_SPACES": str(SHIPPED)})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "ablate: error: --recipe: unknown recipe 'winer' (did you mean 'winner'?); known: baseline, winner "
        f"(in {SHIPPED / 'base.yaml'})"]
    assert not (tmp_path / "s.journal").exists()  # nothing written


def test_finalize_from_a_space_of_another_recipe_says_which(tmp_path: Path) -> None:
    import optuna

    from ablate.final.compose import compose
    from ablate.study.storage import open_storage

    optuna.create_study(study_name="other", storage=open_storage(str(tmp_path / "s.journal")))
    with pytest.raises(UserError, match=r"--from winner_tricks: its file's arms change recipe 'winner' .*; "
                                        r"finalize with --recipe winner"):
        compose(["winner_tricks"], "smoke", storage=str(tmp_path / "s.journal"))


def test_every_space_loads_on_every_recipe_it_can_run_on() -> None:
    for name in list_spaces(SHIPPED):
        for recipe in ("baseline", "winner"):
            if name == "winner_tricks" and recipe == "baseline":  # it changes the winner's own Lookahead
                with pytest.raises(UserError, match="unknown parameter 'base' for 'ranger'"):
                    load_space(name, SHIPPED, recipe)
                continue
            assert load_space(name, SHIPPED, recipe).base.recipe_name == recipe


@pytest.mark.parametrize(("space", "recipe", "study"), [
    ("recipes", None, "recipes-smoke"),
    ("regularisation", None, "regularisation-smoke"),
    ("regularisation", "winner", "regularisation-winner-smoke"),
    ("winner_tricks", None, "winner_tricks-winner-smoke"),  # its file's recipe: winner
])
def test_each_new_space_and_recipe_runs_on_the_smoke_preset(space: str, recipe: str | None, study: str,
                                                             synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    env = {"ABLATE_SPACES": str(SHIPPED)}
    args = ["run", space, "--preset", "smoke", "--data", str(synth_cache), "--storage", storage] + \
        (["--recipe", recipe] if recipe else [])
    r = ablate_cli(*args, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    report = ablate_cli("report", study, "--storage", storage, "--format", "json", env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    a = json.loads(report.stdout)
    assert a["recipe_name"] == (recipe or ("winner" if space == "winner_tricks" else "baseline"))
    arms = {row["arm"]: row for row in a["arms"]}
    assert set(arms) == set(load_space(space, SHIPPED, recipe).arms)
    assert all(row["n"] == 5 and None not in row["scores"] for row in arms.values()), arms
    if space == "recipes":  # the two arms trained two different recipes, and the report says which
        assert arms["winner"]["sources"]["model"] == "base.yaml recipe winner"
        assert a["sources"]["model"] == "base.yaml" and "grad_clip" not in arms["winner"]["sources"]  # unchanged
        # the recipe axis changes the inference graph: each arm's exported model was timed
        assert all(row["latency_ms"] > 0 and row["parameters"] > 1000 for row in arms.values()), arms
        assert a["speed"]["runtime"].startswith("onnxruntime") and len(a["speed"]["lengths"]) == 12
        assert a["speed"]["pareto"] and set(a["speed"]["pareto"]) <= set(arms)
        html = (tmp_path / "reports" / f"{study}.html").read_text()
        assert "Accuracy and latency" in html and "Pareto front" in html
    else:
        assert a["speed"] is None and all(row["latency_ms"] is None for row in arms.values())


def test_regularisation_arms_change_the_recipes_own_parts() -> None:
    for recipe, model, opt in (("baseline", "transformer", "ranger"), ("winner", "conv1d_transformer", "lookahead")):
        space = load_space("regularisation", SHIPPED, recipe)
        drop = resolve(space.base, "quick", space.arms["drop_path"]).config
        assert drop.model.name == model and drop.model.params["drop_path"] == 0.2
        assert resolve(space.base, "quick", space.arms["baseline"]).config.optimizer.name == opt
    tricks = load_space("winner_tricks", SHIPPED)
    no_la = resolve(tricks.base, "full", tricks.arms["no_lookahead"]).config
    assert no_la.optimizer.params == {"base": "radam", "lr": 5e-4, "weight_decay": 0.1, "alpha": 1.0}
    assert type(OPTIMIZERS.build("lookahead", no_la.optimizer.params, weights=[nn.Parameter(torch.ones(2))])) \
        is torch.optim.RAdam  # alpha 1: the base optimizer alone, at the recipe's lr and decay


def test_the_pareto_front_keeps_the_arms_nothing_beats_on_both() -> None:
    from ablate.study.speed import pareto, quantile_lengths

    points = {"a": (0.80, 10.0), "b": (0.85, 20.0), "c": (0.84, 25.0), "d": (0.80, 12.0), "e": (0.90, 40.0),
              "f": (0.90, 40.0)}
    assert pareto(points) == ["a", "b", "e", "f"]  # c: b is better and faster; d: a as good and faster
    assert pareto({}) == [] and pareto({"x": (0.5, 1.0)}) == ["x"]
    import numpy as np

    assert quantile_lengths(np.arange(1, 101), 4) == [13, 38, 63, 88]


class _Quadratic(nn.Module):
    """A 'model' whose embedding is its weight and a 'head' whose loss is 0.5 |w|^2: gradient = w."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0, 4.0]))
        self.out_dim = 2

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], 2)


class _HalfSquare(nn.Module):
    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * (emb[0] ** 2).sum()


def _step(awp: Awp | None, ema: Ema | None = None) -> tuple[Step, nn.Parameter]:
    model, head = _Quadratic(), _HalfSquare()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = SCHEDULES.build("constant", optimizer=opt, epochs=1, steps_per_epoch=1)
    parts = Parts(nn.Identity(), model, head)
    return Step(parts, model, opt, sched, None, None, torch.device("cpu"), 0.0, False, [], torch.Generator(),
                awp, ema), model.w


def test_awp_steps_with_the_gradient_at_the_perturbed_weights_and_puts_them_back() -> None:
    x, mask, y = torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, dtype=torch.long)
    step, w = _step(None)
    step(x, mask, y)
    assert torch.allclose(w.detach(), torch.zeros(2))  # plain SGD, lr 1: w - w
    awp = Awp(0.5, 0.0, 1, [])
    step, w = _step(awp)
    awp.params = [w]
    awp.set(0)
    step(x, mask, y)
    # gradient at w + 0.5 * w / |w| = (3, 4) * 1.1; the step from w = (3, 4): -(0.3, 0.4)
    assert torch.allclose(w.detach(), torch.tensor([-0.3, -0.4])), w
    w.grad = torch.tensor([0.0, 2.0])
    before = w.detach().clone()
    kept = awp.perturb()
    assert torch.allclose(w.detach(), before + torch.tensor([0.0, 0.5]))
    Awp.restore(kept)
    assert torch.equal(w.detach(), before)  # exactly: from a copy


def test_awp_starts_after_its_share_of_the_epochs() -> None:
    awp = Awp(0.2, 0.05, 100, [])
    awp.set(4)
    assert not awp.on
    awp.set(5)
    assert awp.on
    off = Awp(0.0, 0.0, 10, [])
    off.set(3)
    assert not off.on
    assert Awp(0.2, 0.99, 3, []).start == 2  # at least the last epoch


def test_ema_averages_the_weights_validates_with_them_and_keeps_them() -> None:
    model, head = _Quadratic(), nn.Linear(2, 2)
    parts = Parts(nn.Identity(), model, head)
    ema = Ema(parts, 0.5)
    with torch.no_grad():
        model.w.copy_(torch.tensor([1.0, 0.0]))
    ema.update()  # decay min(0.5, 1 / 10): 0.1 * (3, 4) + 0.9 * (1, 0)
    assert torch.allclose(ema.parts(parts).model.w, torch.tensor([1.2, 0.4]))
    for _ in range(30):  # past the warm-up, decay 0.5: halfway to the live weights each update
        ema.update()
    with torch.no_grad():
        model.w.copy_(torch.tensor([3.0, 2.0]))
    ema.update()
    checked = ema.parts(parts)
    assert checked.model is not model and torch.allclose(checked.model.w, torch.tensor([2.0, 1.0]), atol=1e-6)
    other_head = Parts(parts.features, model, nn.Linear(2, 2))  # a pretraining head: not averaged
    assert ema.parts(other_head) is other_head
    ema.copy_into(parts)
    assert torch.allclose(model.w.detach(), torch.tensor([2.0, 1.0]), atol=1e-6)
    with torch.no_grad():
        model.w.copy_(torch.tensor([5.0, 5.0]))
    ema.restart()  # the recipe's head takes over after pretraining: the average starts again
    assert torch.equal(ema.parts(parts).model.w, model.w) and ema.updates == 0
    none = Ema(parts, 0.0)
    none.update()
    assert none.parts(parts) is parts


def test_drop_path_skips_whole_sequences_in_training_only() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.5)
    x = torch.ones(400, 3, 2)
    y = layer(x)
    kept = y[:, 0, 0] != 0
    assert torch.all(y[kept] == 2.0) and torch.all(y[~kept] == 0.0)  # scaled by 1 / (1 - p)
    assert 150 < int(kept.sum()) < 250
    assert torch.equal(layer.eval()(x), x)


def test_stacked_conv_model_sizes_and_old_weights_still_load() -> None:
    one = MODELS.build("conv1d_transformer", {"width": 32, "heads": 4, "conv_blocks": 1}, in_dim=10, frames=20)
    state = {k.replace("attns.0.", "attn."): v for k, v in one.state_dict().items()}  # as saved before stacks
    again = MODELS.build("conv1d_transformer", {"width": 32, "heads": 4, "conv_blocks": 1}, in_dim=10, frames=20)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), again.state_dict().values()))
    two = MODELS.build("conv1d_transformer", {"width": 32, "heads": 4, "conv_blocks": 2, "stacks": 2}, in_dim=10,
                       frames=20)
    assert len(two.convs) == 4 and len(two.attns) == 2
    with pytest.raises(UserError, match="model parameter drop_path must be in"):
        MODELS.build("conv1d_transformer", {"drop_path": 1.0}, in_dim=10, frames=20)


def test_the_winner_recipe_trains_a_fold(synth_cache: Path) -> None:
    """AWP, EMA, drop path, late dropout and Lookahead together, through the real trainer."""
    from ablate.data.cache import Cache
    from ablate.train import train_fold

    cfg = recipe_config("smoke", SHIPPED, "winner").replace(epochs=2, max_train_batches=3)
    r = train_fold(cfg, Cache(synth_cache), 0, keep_model=True, keep_predictions=True)
    assert len(r.epochs) == 2 and all(torch.isfinite(torch.tensor(e.train_loss)) for e in r.epochs)
    assert r.val_probs is not None and r.parts is not None and r.parts.model.attns[0].path.p == 0.2
