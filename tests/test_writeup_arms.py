"""The write-up's experiments that are arms now: the transformer's parts (activation, embedding
depth, feed-forward width, pooling) and leaving participants out of training (the data axis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.components.models import MODELS
from ablate.data.cache import Cache
from ablate.data.drop import dropped_participants
from ablate.data.participants import participant_facts
from ablate.errors import UserError
from ablate.spaces import list_spaces, load_space, recipe_config
from conftest import REPO, ablate_cli

SHIPPED = REPO / "search_spaces"
NEW_SPACES = ["transformer_parts", "data", "training", "preprocessing", "arcface_parts"]


@pytest.mark.parametrize("name", NEW_SPACES)
def test_each_new_space_runs_on_the_smoke_preset(name: str, synth_cache: Path, tmp_path: Path) -> None:
    assert name in list_spaces(SHIPPED)
    storage = str(tmp_path / "s.journal")
    r = ablate_cli("run", name, "--preset", "smoke", "--data", str(synth_cache), "--storage", storage,
                   "--no-speed", env={"ABLATE_SPACES": str(SHIPPED)})  # speed: test_recipes times the recipes'
    assert "latency" not in r.stderr
    assert r.returncode == 0, r.stderr[-2000:]
    report = ablate_cli("report", f"{name}-smoke", "--storage", storage, "--format", "json",
                        env={"ABLATE_SPACES": str(SHIPPED)})
    assert report.returncode == 0, report.stderr[-2000:]
    import json

    arms = {a["arm"]: a for a in json.loads(report.stdout)["arms"]}  # one study: one object
    assert set(arms) == set(load_space(name, SHIPPED).arms)
    # every arm trained every fold (a smoke run's scores may tie: zero variance is "incomplete" then)
    assert all(a["n"] == 5 and None not in a["scores"] for a in arms.values()), arms


@pytest.mark.parametrize("options", [
    {"embedding": "linear"}, {"embedding": "deep"}, {"pooling": "mean"}, {"pooling": "attention"},
    {"ff_mult": 4, "activation": "relu"},
])
def test_transformer_options_ignore_padding(options: dict) -> None:
    torch.manual_seed(0)
    model = MODELS.build("transformer", {"width": 32, "heads": 4, "max_len": 64, **options}, in_dim=12, frames=384).eval()
    lengths = [5, 1, 9]
    x = torch.randn(3, 20, 12)
    mask = torch.arange(20)[None, :] < torch.tensor(lengths)[:, None]
    junk = torch.where(mask[..., None], x, torch.full_like(x, float("nan")))
    with torch.no_grad():
        batch = model(junk, mask)
        alone = torch.cat([model(x[i : i + 1, :n], torch.ones(1, n, dtype=torch.bool)) for i, n in enumerate(lengths)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    assert torch.isfinite(batch).all()


def test_transformer_option_sizes_and_names() -> None:
    def count(**kw: object) -> int:
        return sum(p.numel() for p in MODELS.build("transformer", {"width": 32, "heads": 4, **kw}, in_dim=12, frames=384).parameters())

    base = count()
    assert count(embedding="linear") == base - (32 * 32 + 32 + 2 * 32)  # one Linear + LayerNorm fewer
    assert count(embedding="deep") == base + (32 * 32 + 32 + 2 * 32)
    assert count(pooling="mean") == base  # the CLS token stays (an attention register; see the model)
    assert count(pooling="attention") == base + 33  # plus a score Linear(32, 1)
    assert count(ff_mult=4) == base + 2 * (32 * 32 * 2) + 32 * 2
    with pytest.raises(UserError, match=r"unknown pooling 'max' .*known: attention, cls, mean"):
        MODELS.build("transformer", {"pooling": "max"}, in_dim=12, frames=384)
    with pytest.raises(UserError, match=r"embedding.*'mpl'.*did you mean 'mlp'"):
        MODELS.build("transformer", {"embedding": "mpl"}, in_dim=12, frames=384)


def test_the_baseline_transformer_is_unchanged_by_the_options() -> None:
    """The defaults (MLP embedding, CLS token) build the layers of before the options existed, under
    the same names and from the same random draws: studies and checkpoints stay comparable."""
    from torch import nn

    torch.manual_seed(0)
    model = MODELS.build("transformer", {"width": 32, "heads": 4}, in_dim=12, frames=384)
    torch.manual_seed(0)
    embed = nn.Sequential(nn.Linear(12, 32), nn.LayerNorm(32), nn.SiLU(), nn.Dropout(0.4), nn.Linear(32, 32),
                          nn.LayerNorm(32), nn.SiLU())
    cls, pos = torch.randn(1, 1, 32) * 0.02, torch.randn(385, 32) * 0.02
    mine = {k[len("embed."):]: v for k, v in model.state_dict().items() if k.startswith("embed.")}
    assert mine.keys() == embed.state_dict().keys()
    for k, v in embed.state_dict().items():
        torch.testing.assert_close(mine[k], v)
    torch.testing.assert_close(model.cls.data, cls)
    torch.testing.assert_close(model.pos.data, pos)


def _config(**changes: object):  # noqa: ANN202
    return recipe_config("smoke", SHIPPED).replace(**changes)


def test_the_messiest_participants_are_the_ones_with_most_frames_without_hands(synth_cache: Path) -> None:
    data = Cache(synth_cache)
    facts = sorted(participant_facts(data), key=lambda f: (-f["no_hand_share"], f["participant"]))
    assert dropped_participants(_config(), data).size == 0
    assert dropped_participants(_config(drop_messiest=2), data).tolist() == sorted(f["participant"] for f in facts[:2])
    first = facts[0]["participant"]
    both = dropped_participants(_config(drop_participants=(first,), drop_messiest=1), data)
    assert both.tolist() == sorted([first, facts[1]["participant"]])  # k more besides those named
    with pytest.raises(UserError, match=r"drop_participants: participant 123 is not in the data .*ablate data info"):
        dropped_participants(_config(drop_participants=(123,)), data)
    with pytest.raises(UserError, match="drop_messiest: 5 would leave no participant"):
        dropped_participants(_config(drop_messiest=5), data)


def test_dropped_participants_leave_training_but_not_validation(synth_cache: Path) -> None:
    from ablate.train import train_fold

    data = Cache(synth_cache)
    folds = data.folds(5, 0)
    val_pid = int(data.participants[folds == 0][0])
    other = int(next(p for p in np.unique(data.participants) if p != val_pid))
    base = train_fold(_config(amp="off"), data, 0, progress=False)
    cut = train_fold(_config(amp="off", drop_participants=(other, val_pid)), data, 0, progress=False)
    assert cut.n_val == base.n_val  # the validation participant is still validated on
    assert base.n_train - cut.n_train == int((data.participants == other).sum())


@pytest.mark.parametrize(("value", "message"), [
    ("12", "drop_participants: expected a list, got '12'"),
    ([1, 1], "drop_participants: 1 is listed twice"),
    (["a"], "drop_participants[0]: expected int, got 'a'"),
])
def test_bad_drop_lists_are_named(value: object, message: str, tmp_path: Path) -> None:
    from conftest import spaces_folder

    text = f"axis: data\narms:\n  everyone: {{}}\n  bad: {{drop_participants: {value!r}}}\n".replace("'", '"')
    d = spaces_folder(tmp_path / "sp", bad=text)
    with pytest.raises(UserError, match=f"bad.yaml: arms.bad .*{message.replace('[', '.').replace(']', '.')}"):
        load_space("bad", d)


@pytest.mark.parametrize(("arm", "message"), [
    ("{drop_participants: [424242]}", "participant 424242 is not in the data"),
    ("{drop_messiest: 4}", "no training sequence"),  # 5 participants, one per fold: one fold has nobody left
])
def test_bad_drops_stop_the_run_before_anything_is_written(arm: str, message: str, synth_cache: Path,
                                                           tmp_path: Path) -> None:
    from conftest import spaces_folder

    d = spaces_folder(tmp_path / "sp", drops=f"axis: data\narms:\n  everyone: {{}}\n  bad: {arm}\n")
    storage = tmp_path / "s.journal"
    r = ablate_cli("run", "drops", "--preset", "smoke", "--data", str(synth_cache), "--storage", str(storage),
                   env={"ABLATE_SPACES": str(d)})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "arms.bad" in r.stderr and message in r.stderr
    assert not storage.exists()


def test_data_info_lists_participants_messiest_first(synth_cache: Path) -> None:
    r = ablate_cli("data", "info", str(synth_cache))
    assert r.returncode == 0, r.stderr
    rows = r.stdout.split("participant  sequences")[1].strip().splitlines()[1:]
    shares = [float(line.split()[3].rstrip("%")) for line in rows]
    assert len(rows) == 5 and shares == sorted(shares, reverse=True)
    facts = {f["participant"]: f for f in participant_facts(Cache(synth_cache))}
    first = facts[int(rows[0].split()[0])]
    assert f"{100 * first['no_hand_share']:.1f}%" in rows[0] and first["dominant_hand"] in rows[0]


def test_training_arms_scale_the_learning_rate_with_the_batch_and_say_so() -> None:
    from ablate.resolve import resolve

    space = load_space("training", SHIPPED)
    base = resolve(space.base, "quick", space.arms["baseline"])
    lr, batch = base.config.optimizer.params["lr"], base.config.batch_size
    for arm, factor in (("batch_16", 16 / batch), ("batch_128", 128 / batch), ("batch_128_sqrt", (128 / batch) ** 0.5)):
        r = resolve(space.base, "quick", space.arms[arm])
        assert r.config.optimizer.params["lr"] == pytest.approx(lr * factor), arm
        assert "scaled" in r.sources["optimizer.params.lr"] and f"{batch} -> " in r.sources["optimizer.params.lr"]
    full = resolve(space.base, "full", space.arms["batch_16"]).config  # another preset: its own batch size
    bare = resolve(space.base, "full", space.arms["baseline"]).config
    assert full.optimizer.params["lr"] == pytest.approx(bare.optimizer.params["lr"] * 16 / bare.batch_size)
    assert resolve(space.base, "quick", space.arms["amp_off"]).config.amp == "off"


def test_lr_scaling_needs_a_batch_size_and_a_known_rule(tmp_path: Path) -> None:
    from conftest import spaces_folder

    for arm, message in (("{lr_scaling: linear}", "lr_scaling needs batch_size"),
                         ("{batch_size: 8, lr_scaling: cubic}", "lr_scaling: expected one of linear, sqrt, none")):
        d = spaces_folder(tmp_path / arm.replace(" ", "_").replace(":", ""), t=f"axis: training\narms:\n  a: {{}}\n  b: {arm}\n")
        with pytest.raises(UserError, match=message):
            load_space("t", d)


def test_late_dropout_switches_dropout_on_after_its_share_of_the_epochs(synth_cache: Path) -> None:
    """No dropout while the share of epochs lasts (the same numbers as a dropout-free model), then on."""
    from ablate.train import train_fold

    data = Cache(synth_cache)
    base = _config(amp="off", epochs=2)
    params = {**base.model.params, "dropout": 0.5}
    with_late = base.replace(model=base.model.__class__("transformer", params), late_dropout=0.5)
    without = base.replace(model=base.model.__class__("transformer", {**params, "dropout": 0.0}))
    always = base.replace(model=base.model.__class__("transformer", params))
    late, none, on = (train_fold(c, data, 0, progress=False) for c in (with_late, without, always))
    assert late.epochs[0].train_loss == none.epochs[0].train_loss  # epoch 0: dropout off
    assert late.epochs[0].train_loss != on.epochs[0].train_loss
    assert late.epochs[1].train_loss != none.epochs[1].train_loss  # epoch 1: on


def test_late_dropout_counts_whole_epochs_and_always_ends_with_dropout() -> None:
    from torch import nn

    from ablate.parts import LateDropout

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3))
    assert LateDropout(model, 0.07, 100).off == 7  # 0.07 * 100 is 7.000000000000001 in floats
    assert LateDropout(model, 0.9, 8).off == 7 and LateDropout(model, 0.5, 1).off == 0
    assert LateDropout(model, 0.9999999999, 10).off == 9
    late = LateDropout(model, 0.5, 4)
    late.set(1)
    assert model[1].p == 0.0
    late.set(2)
    assert model[1].p == 0.3


def test_pretraining_trains_a_softmax_head_first_then_the_recipes_head(synth_cache: Path) -> None:
    """Epoch 0 of pretrain_ce 0.5 (of 2) trains and validates a plain softmax head: a cross-entropy
    of about ln(classes), where sub-center ArcFace at scale 45 starts far higher; epoch 1 and the
    kept model use the recipe's head."""
    from ablate.components._heads import CosineHead
    from ablate.parts import Pretraining, build_parts
    from ablate.train import train_fold

    data = Cache(synth_cache)
    base = _config(amp="off", epochs=2)
    staged = train_fold(base.replace(pretrain_ce=0.5), data, 0, progress=False, keep_model=True)
    plain = train_fold(base, data, 0, progress=False)
    assert staged.epochs[0].train_loss < 1.5 * np.log(data.num_classes) < plain.epochs[0].train_loss
    assert staged.epochs[1].train_loss > 2 * staged.epochs[0].train_loss  # the ArcFace stage
    assert staged.parts is not None and isinstance(staged.parts.head, CosineHead)
    parts = build_parts(base, 5)
    assert Pretraining(parts, 0.0, 10, 5).head is None and Pretraining(parts, 0.07, 100, 5).epochs == 7
    pre = Pretraining(parts, 0.5, 4, 5)
    assert pre.parts(parts, 1).head is pre.head and pre.parts(parts, 2) is parts
    assert Pretraining(parts, 0.9999999999, 10, 5).epochs == 9  # the recipe's head always trains


def test_early_stopping_waits_for_the_recipes_head(synth_cache: Path) -> None:
    """Patience 1 would stop a flat smoke run at epoch 1, inside the softmax stage, leaving the
    recipe's head untrained; it counts from the switch (epoch 2 of 4) instead."""
    from ablate.train import train_fold

    r = train_fold(_config(amp="off", epochs=4, pretrain_ce=0.5, early_stopping=1), Cache(synth_cache), 0, progress=False)
    assert len(r.epochs) >= 3


def test_a_final_folder_from_before_the_new_keys_is_still_recognised(synth_cache: Path, tmp_path: Path) -> None:
    import json

    from ablate.config import ADDED_KEYS
    from ablate.final.folds import RECIPE, check_or_claim

    data, config = Cache(synth_cache), _config()
    check_or_claim(tmp_path, config, data, {})
    stored = json.loads((tmp_path / RECIPE).read_text())
    for key in ADDED_KEYS:
        del stored["config"][key]
    (tmp_path / RECIPE).write_text(json.dumps(stored))
    check_or_claim(tmp_path, config, data, {})  # the neutral values: the same run
    with pytest.raises(UserError, match="config differs in drop_messiest"):
        check_or_claim(tmp_path, config.replace(drop_messiest=1), data, {})
