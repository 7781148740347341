"""`ablate finalize --ensemble mean|vote|max --seeds-per-fold N --full-data`: the rules, several
seeds per fold (resumable), the rules compared on out-of-fold predictions, models on all the data.
The rules in the exported graph: tests/test_export_models.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ablate.cli import main
from ablate.export.ensemble import RULES, Ensemble, combine
from test_finalize import all_arms, make_study

# three members, three classes: the mean picks class 1, the vote class 1 (two of three members),
# the maximum class 0 (member 0's 0.6 is the highest single probability)
MEMBERS = torch.tensor([[0.6, 0.4, 0.0], [0.1, 0.5, 0.4], [0.2, 0.45, 0.35]])


def test_the_rules_by_hand() -> None:
    picks = {r: int(combine(MEMBERS, r).argmax()) for r in RULES}
    assert picks == {"mean": 1, "vote": 1, "max": 0}
    for r in RULES:
        assert float(combine(MEMBERS, r).sum()) == pytest.approx(1.0)
    torch.testing.assert_close(combine(MEMBERS, "mean"), MEMBERS.mean(0))
    # one vote each for classes 0 and 1: the tie goes to the higher mean probability (class 1)
    assert int(combine(MEMBERS[:2], "vote").argmax()) == 1
    assert int(combine(MEMBERS[[0, 0, 1]], "vote").argmax()) == 0  # two votes beat any mean
    # batched: [M, B, C] -> [B, C]
    assert combine(torch.stack([MEMBERS, MEMBERS.flip(0)], dim=1), "max").shape == (2, 3)
    with pytest.raises(ValueError, match="expected one of mean, vote, max"):
        combine(MEMBERS, "median")


def test_seeds_per_fold_train_resume_and_compare_the_rules(synth_cache: Path, tmp_path: Path, capsys: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import ablate.final.run as run

    storage = str(tmp_path / "s.journal")
    make_study(storage, "losses", "smoke", all_arms("losses", {}))
    monkeypatch.setattr(run, "EXPORT_MODULES", {})
    out = tmp_path / "final"
    args = ["finalize", "--from", "losses", "--preset", "smoke", "--storage", storage, "--data", str(synth_cache),
            "--out", str(out), "--reports", str(tmp_path / "reports"), "--no-export"]
    assert main([*args, "--seeds-per-fold", "1"]) == 0
    single = json.loads((out / "final.json").read_text())["training"]["oof"]
    assert "rules" not in single and single["seeds"] == 1
    capsys.readouterr()
    assert main([*args, "--seeds-per-fold", "2", "--ensemble", "vote"]) == 0
    printed = capsys.readouterr()
    assert "ensemble rules on the out-of-fold predictions of each fold's 2 seeds: mean" in printed.out
    assert "(exported: vote)" in printed.out
    summary = json.loads((out / "final.json").read_text())
    assert [(f["fold"], f["seed"], f["resumed"]) for f in summary["training"]["folds"]] == \
        [(k, s, s == 0) for k in range(5) for s in range(2)]  # seed 0 of each fold from the first run
    oof = summary["training"]["oof"]
    assert set(oof["rules"]) == set(RULES) and oof["rule"] == "vote" and oof["pooled"] == oof["rules"]["vote"]["pooled"]
    assert summary["ensemble"] == {"rule": "vote", "seeds_per_fold": 2, "full_data": False, "members": 10}
    a = torch.load(out / "folds" / "fold0.pt", weights_only=True)["model"]
    b = torch.load(out / "folds" / "fold0.seed1.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[n], b[n]) for n in a)  # another seed: other weights
    page = (tmp_path / "reports" / "final.html").read_text()
    assert 'id="rules-table"' in page and "vote (exported)" in page


def test_a_fold_with_another_seeds_sequences_is_refused(synth_cache: Path, tmp_path: Path) -> None:
    from ablate.data.cache import Cache
    from ablate.errors import UserError
    from ablate.final.folds import out_of_fold
    from ablate.spaces import recipe_config

    cfg, data, d = recipe_config("smoke"), Cache(synth_cache), tmp_path / "folds"
    d.mkdir()
    for k in range(cfg.folds):
        for stem, idx in ((f"fold{k}", [0, 1]), (f"fold{k}.seed1", [0, 2 if k == 3 else 1])):
            np.savez(d / f"{stem}.oof.npz", indices=np.array(idx), probs=np.full((2, data.num_classes), 0.1, np.float32))
    with pytest.raises(UserError, match=r"fold3\.seed1\.oof\.npz: holds other sequences than seed 0's"):
        out_of_fold(cfg, data, tmp_path, seeds=2)


def test_full_data_trains_on_every_sequence_and_has_no_estimate(synth_cache: Path, tmp_path: Path, capsys: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import ablate.final.run as run
    from ablate.data.cache import Cache
    from ablate.errors import UserError
    from ablate.final.folds import load_folds
    from ablate.spaces import recipe_config
    from ablate.train import train_fold

    storage = str(tmp_path / "s.journal")
    make_study(storage, "losses", "smoke", all_arms("losses", {}))
    monkeypatch.setattr(run, "EXPORT_MODULES", {})
    out, data = tmp_path / "final", Cache(synth_cache)
    args = ["finalize", "--from", "losses", "--preset", "smoke", "--storage", storage, "--data", str(synth_cache),
            "--out", str(out), "--reports", str(tmp_path / "reports"), "--no-export", "--full-data", "--seeds-per-fold", "2"]
    assert main(args) == 0
    assert "no out-of-fold accuracy: every model was trained on all the data" in capsys.readouterr().out
    summary = json.loads((out / "final.json").read_text())
    assert summary["training"]["oof"] is None and summary["training"]["full_data"] is True
    assert summary["ensemble"] == {"rule": "mean", "seeds_per_fold": 2, "full_data": True, "members": 2}
    assert json.loads((out / "full" / "seed1.json").read_text())["n_train"] == len(data)
    assert not (out / "folds").exists() or not list((out / "folds").glob("*.pt"))
    assert 'id="no-oof"' in (tmp_path / "reports" / "final.html").read_text()
    assert main(args) == 0  # resumed, not retrained
    assert [f["resumed"] for f in json.loads((out / "final.json").read_text())["training"]["folds"]] == [True, True]
    cfg = recipe_config("smoke")
    assert [len(g) for g in load_folds(cfg, data.num_classes, out, 2, full_data=True)] == [2]
    with pytest.raises(UserError, match="early_stopping must be 0"):
        train_fold(cfg.replace(early_stopping=2), data, cfg.folds)
