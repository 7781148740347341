"""`ablate finalize`: composing the recipe from studies, its refusals, resumable fold training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ablate.cli import main
from ablate.errors import UserError
from ablate.final.compose import compose
from ablate.spaces import load_space
from ablate.study import queue
from ablate.study.storage import open_storage
from studies import add, meta, new_study

K = 5
BASE = [0.50, 0.55, 0.48, 0.52, 0.60]


def make_study(storage: str, space: str, preset: str, scores: dict[str, list[float]],
               waiting: tuple[str, ...] = (), tuned: dict[str, dict[str, float]] | None = None,
               compared: bool = True, latency: dict[str, float] | None = None) -> None:
    """A study as `ablate run SPACE --preset PRESET` leaves it, with the given fold scores per arm
    (and `latency`: each arm's measured latency in ms)."""
    sp = load_space(space)
    study = new_study(f"{space}-{preset}", meta(space, list(sp.arms), axis=sp.axis, mode=sp.mode, baseline=sp.baseline,
                                                preset=preset), open_storage(storage))
    for arm, s in scores.items():
        values = {k: (v, FloatDistribution(1e-6, 1.0, log=True)) for k, v in (tuned or {}).get(arm, {}).items()}
        stage = ("compare" if compared else "tune") if sp.mode == "both" else sp.mode  # compare trials stand for arms
        speed = {"parameters": 1000, "latency_ms": latency[arm], "lengths": [10], "runtime": "onnxruntime test",
                 "load": 0.5, "note": ""} if latency else None
        add(study, TrialState.COMPLETE, arm, s, stage=stage, tuned=values, speed=speed)
    for arm in waiting:
        queue.enqueue(study, arm, "ablation")


SMALL_NOISE = [0.004, -0.003, 0.002, -0.001, 0.003]
LARGE_NOISE = [0.05, -0.04, 0.03, -0.05, 0.02]


def all_arms(space: str, shift: dict[str, float], noise: list[float] = SMALL_NOISE) -> dict[str, list[float]]:
    """Every arm at the baseline's scores plus a per-arm shift, with fold noise on the shifted arms."""
    return {a: [b + shift.get(a, 0.0) + (n if a in shift else 0.0) for b, n in zip(BASE, noise)]
            for a in load_space(space).arms}


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return str(tmp_path / "studies.journal")


def test_a_better_arm_is_taken_with_its_evidence(storage: str) -> None:
    make_study(storage, "losses", "smoke", all_arms("losses", {"ce": 0.15, "focal": 0.01}))
    r = compose(["losses"], "smoke", storage=storage)
    assert r.config.loss.name == "ce"
    (choice,) = r.choices
    assert choice.chosen == "ce" and "better" in choice.reason
    assert choice.changes == {"loss": {"name": "ce", "params": {}}}
    ce = next(e for e in choice.evidence if e["arm"] == "ce")
    assert ce["verdict"] == "better" and ce["diff"] == pytest.approx(0.15 + 0.001, abs=1e-9)
    assert r.config.optimizer.name == "ranger"  # the rest stays the base recipe


TINY_NOISE = [0.001, -0.001, 0.0005, -0.0005, 0.0]


@pytest.mark.parametrize(("winner_ms", "taken"), [(6.0, True), (8.5, False)])
def test_prefer_faster_takes_an_equivalent_arm_only_when_it_is_clearly_faster(storage: str, winner_ms: float,
                                                                              taken: bool) -> None:
    make_study(storage, "recipes", "smoke", all_arms("recipes", {"winner": 0.0}, TINY_NOISE),
               latency={"baseline": 10.0, "winner": winner_ms})
    kept = compose(["recipes"], "smoke", storage=storage)
    assert kept.choices[0].chosen == "baseline"  # without the flag equivalence is not enough
    r = compose(["recipes"], "smoke", storage=storage, faster=True)
    (choice,) = r.choices
    row = next(e for e in choice.evidence if e["arm"] == "winner")
    assert row["verdict"] == "equivalent" and row["latency_ms"] == winner_ms
    if taken:
        assert choice.chosen == "winner" and r.config.model.name == "conv1d_transformer"
        assert "equivalent to baseline" in choice.reason and "6.00 ms against 10.00 ms" in choice.reason
        assert "--prefer faster-if-equivalent" in choice.reason
    else:  # 85% of the baseline's latency: within the timing noise measured here
        assert choice.chosen == "baseline"


def test_no_detectable_difference_keeps_the_base_unless_prefer_mean(storage: str) -> None:
    make_study(storage, "losses", "smoke", all_arms("losses", {"focal": 0.01}, LARGE_NOISE))
    kept = compose(["losses"], "smoke", storage=storage)
    assert kept.config.loss.name == "subcenter_arcface"
    assert "kept subcenter_arcface" in kept.choices[0].reason and "--prefer-mean" in kept.choices[0].reason
    taken = compose(["losses"], "smoke", storage=storage, prefer_mean=True)
    assert taken.config.loss.name == "focal"
    assert "its verdict against subcenter_arcface is undecided, not better" in taken.choices[0].reason


def test_choices_from_two_studies_compose(storage: str) -> None:
    make_study(storage, "losses", "smoke", all_arms("losses", {"ce": 0.15}))
    make_study(storage, "augmentations", "smoke", all_arms("augmentations", {"none": 0.2}))
    r = compose(None, "smoke", storage=storage)  # default: every space with a study
    assert [c.space for c in r.choices] == ["augmentations", "losses"]
    assert r.config.loss.name == "ce" and r.config.augmentations == ()
    lines = "\n".join(r.describe())
    assert "from losses-smoke: ce is better" in lines and "augmentations (none)" in lines


def test_tuned_parameters_of_the_winner_are_carried(storage: str) -> None:
    make_study(storage, "optimizers", "smoke", all_arms("optimizers", {"adamw": 0.2}), tuned={"adamw": {"lr": 0.00042}})
    r = compose(["optimizers"], "smoke", storage=storage)
    assert r.config.optimizer.name == "adamw"
    assert r.config.optimizer.params["lr"] == pytest.approx(0.00042)


@pytest.mark.parametrize(("setup", "args", "message"), [
    (lambda s: None, ["losses"], "no such journal file"),
    (lambda s: make_study(s, "optimizers", "smoke", all_arms("optimizers", {})), ["losses"], "no study 'losses-smoke'"),
    (lambda s: make_study(s, "losses", "smoke", {"subcenter_arcface": BASE}, waiting=("ce",)), ["losses"],
     "unfinished: 1 trial(s) still waiting"),
    (lambda s: make_study(s, "losses", "smoke", {"subcenter_arcface": BASE, "ce": BASE}), ["losses"],
     "unfinished: no finished trial for arm(s) arcface, arcface_focal"),
    (lambda s: make_study(s, "losses", "smoke", all_arms("losses", {})), ["lossez"], "did you mean 'losses'"),
    (lambda s: make_study(s, "optimizers", "smoke", all_arms("optimizers", {}), compared=False), ["optimizers"],
     "unfinished: no finished trial in the compare stage for arm(s) ranger, adamw"),
    (lambda s: make_study(s, "model", "smoke", {"transformer": BASE}), ["model"],
     "unfinished: 1 of its 20 tuning trials finished"),
    (lambda s: make_study(s, "losses", "quick", all_arms("losses", {})), ["losses"], "losses-quick (choose with --study-preset or --recipe)"),
])
def test_refusals_name_the_study_and_what_to_do(storage: str, setup: Any, args: list[str], message: str) -> None:
    setup(storage)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose(args, "smoke", storage=storage)


def test_finalize_cli_refuses_an_unfinished_study_with_exit_2(storage: str, tmp_path: Path, capsys: Any) -> None:
    make_study(storage, "losses", "smoke", {"subcenter_arcface": BASE}, waiting=("ce",))
    out = tmp_path / "final"
    code = main(["finalize", "--from", "losses", "--preset", "smoke", "--storage", storage, "--out", str(out),
                 "--no-export"])
    err = capsys.readouterr().err
    assert code == 2 and "unfinished" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_folds_train_once_and_resume(synth_cache: Path, tmp_path: Path) -> None:
    from ablate.data.cache import Cache
    from ablate.final.folds import check_or_claim, load_folds, out_of_fold, train_all
    from ablate.spaces import recipe_config

    from ablate.config import Component

    # a tuple parameter: stored as a JSON list, it must still compare equal on the next run
    cfg = recipe_config("smoke").replace(augmentations=(Component("scale", {"scale": (0.9, 1.1)}),))
    data = Cache(synth_cache)
    out = tmp_path / "final"
    check_or_claim(out, cfg, data, {})
    first = train_all(cfg, data, out)
    assert [r.resumed for r in first] == [False] * K
    stamp = (out / "folds" / "fold2.pt").stat().st_mtime_ns
    (out / "folds" / "fold3.json").unlink()  # as if the run had died while writing fold 3
    check_or_claim(out, cfg, data, {})  # the same recipe again: accepted
    again = train_all(cfg, data, out)
    assert [r.resumed for r in again] == [True, True, True, False, True]
    assert (out / "folds" / "fold2.pt").stat().st_mtime_ns == stamp
    import torch

    state = torch.load(out / "folds" / "fold0.pt", weights_only=True)
    assert set(state) == {"model", "head"}
    assert len(load_folds(cfg, data.num_classes, out)) == K
    oof = out_of_fold(cfg, data, out)
    assert oof["n"] == len(data) and sum(f["n"] for f in oof["folds"]) == len(data)
    assert oof["pooled"] == pytest.approx(sum(f["acc"] * f["n"] for f in oof["folds"]) / len(data))
    with pytest.raises(UserError, match="holds folds of another run"):
        check_or_claim(out, cfg.replace(epochs=3), data, {})


def test_checks_failing_stops_finalize_without_a_deliverable(storage: str, synth_cache: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import ablate.export.build as build
    import ablate.final.run as run

    make_study(storage, "losses", "smoke", all_arms("losses", {}))
    monkeypatch.setattr(run, "EXPORT_MODULES", {})  # this test needs no converter
    monkeypatch.setattr(build, "export_and_check", lambda *a, **k: {"broken": ["latency: 250.0 ms > 100 ms"]})
    out = tmp_path / "final"
    code = main(["finalize", "--from", "losses", "--preset", "smoke", "--storage", storage, "--data", str(synth_cache),
                 "--out", str(out), "--reports", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert code == 1 and "checks failed: latency: 250.0 ms > 100 ms" in err
    assert not (out / "model.tflite").exists()
    assert json.loads((out / "final.json").read_text())["export"]["broken"] == ["latency: 250.0 ms > 100 ms"]
    assert "NOT READY" in (tmp_path / "reports" / "final.html").read_text()


def test_a_missing_export_package_is_named_before_any_training(storage: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import ablate.final.run as run

    make_study(storage, "losses", "smoke", all_arms("losses", {}))
    monkeypatch.setattr(run, "EXPORT_MODULES", {**run.EXPORT_MODULES, "no_such_module_xyz": "no-such-package"})
    out = tmp_path / "final"
    code = main(["finalize", "--from", "losses", "--preset", "smoke", "--storage", storage, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "export needs no-such-package" in err and "--no-export" in err
    assert not out.exists()


def test_a_bad_check_file_is_refused_before_training(storage: str, tmp_path: Path, capsys: Any) -> None:
    make_study(storage, "losses", "smoke", all_arms("losses", {}))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    out = tmp_path / "final"
    code = main(["finalize", "--from", "losses", "--preset", "smoke", "--storage", storage, "--out", str(out),
                 "--check-files", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
