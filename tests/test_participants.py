"""Who an arm helps: participant facts derived from the landmarks, per-sequence predictions stored
with each trial, the participant panel and its group effects, on hand-made and real tiny studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

from ablate.data.cache import Cache
from ablate.data.participants import GENERATOR_FILE, participant_facts, read_generator_file, sequence_table
from ablate.errors import UserError
from ablate.report.analysis import analyze
from ablate.report.html import render_report
from ablate.study import predictions, records
from studies import folds, meta, new_study

K = 5


def test_synthetic_facts_beside_train_csv_and_the_derived_dominant_hand(synth_cache: Path) -> None:
    data = Cache(synth_cache)
    facts = participant_facts(data)
    assert [f["participant"] for f in facts] == sorted(set(data.participants.tolist()))
    assert sum(f["n_sequences"] for f in facts) == len(data)
    truth = [f["generator"]["left_handed"] for f in facts]
    assert sum(truth) == 2  # round(0.3 * 5)
    # the landmarks alone find the generator's left-handers (they sign mirrored: left hand dominant)
    assert [f["dominant_hand"] == "left" for f in facts] == truth
    assert all(0 < f["no_hand_share"] < 1 and f["median_length"] > 0 for f in facts)
    who = sequence_table(data, facts)
    assert (np.array([facts[i]["participant"] for i in who]) == data.participants).all()


def test_a_malformed_generator_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / GENERATOR_FILE
    path.write_text("participant_id,left_handed,scale,tilt_deg,speed\n12,1,0.3,five,1\n")
    with pytest.raises(UserError, match=r"participants.csv: line 2: expected columns"):
        read_generator_file(path)


def test_generator_file_without_a_roll_column_reads_as_none_planted(tmp_path: Path) -> None:
    path = tmp_path / GENERATOR_FILE
    path.write_text("participant_id,left_handed,scale,tilt_deg,speed\n12,1,0.3,-4.5,1\n")
    assert read_generator_file(path) == {12: {"left_handed": True, "scale": 0.3, "tilt_deg": -4.5, "speed": 1.0,
                                              "roll_deg": 0.0}}


def test_a_short_row_of_a_file_with_the_roll_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / GENERATOR_FILE
    path.write_text("participant_id,left_handed,scale,tilt_deg,speed,roll_deg\n12,1,0.3,-4.5,1\n")
    with pytest.raises(UserError, match=r"participants.csv: line 2: expected columns"):
        read_generator_file(path)


def test_generator_file_round_trips_the_planted_roll(tmp_path: Path) -> None:
    from ablate.data.participants import generator_csv, synth_facts
    from ablate.data.synth import SynthConfig

    cfg = SynthConfig(n_signs=2, n_participants=10, reps=1, tilted_share=0.3)
    path = tmp_path / GENERATOR_FILE
    path.write_text(generator_csv(cfg))
    back = read_generator_file(path)
    assert sorted(abs(f["roll_deg"]) for f in back.values()) == [0.0] * 7 + [25.0] * 3
    assert back == synth_facts(cfg)


def test_the_panel_groups_a_planted_roll_as_rolled_and_level_cameras() -> None:
    from ablate.report.participants import _groups

    def facts(rolls: list[float]) -> list[dict]:
        return [{"dominant_hand": "right", "median_length": 20.0, "no_hand_share": 0.1,
                 "generator": {"left_handed": False, "tilt_deg": 2.0 * i + r, "roll_deg": r}} for i, r in enumerate(rolls)]

    name_a, name_b, member = _groups(facts([0.0, 25.0, 0.0, -25.0, 0.0, 0.0]))["camera tilt (generator)"]
    assert (name_a, name_b, member.tolist()) == ("camera rolled (planted)", "camera level", [0, 1, 0, 1, 0, 0])
    name_a, _, member = _groups(facts([0.0] * 6))["camera tilt (generator)"]  # none planted: the median split
    assert name_a == "tilted more than the median" and member.tolist() == [0, 0, 0, 1, 1, 1]


def test_predictions_round_trip() -> None:
    rng = np.random.default_rng(0)
    index = rng.permutation(1000)[:300]
    pred, p = rng.integers(0, 250, 300), rng.random(300).astype(np.float32)
    name, value = predictions.encode(7, index, pred, p)
    assert name == "pred:7" and sum(len(v) for v in value.values()) < 300 * 5 * 4 / 3 + 100

    class T:
        user_attrs = {name: value}

    (back,) = predictions.predictions(T()).values()  # type: ignore[arg-type]
    order = np.argsort(index)
    assert (back.index == index[order]).all() and (back.predicted == pred[order]).all()
    np.testing.assert_allclose(back.p_true, p[order], atol=5e-4)


def _hand_made_study(n_p: int = 10, lefties: int = 3):  # noqa: ANN202
    """n_p participants x 10 sequences, labels 0/1, fold = sequence % 5; the first `lefties` are
    left-dominant. The baseline is right on every sequence but each participant's first;
    'lefty_bad' is wrong on every sequence of the left-dominant participants, like the baseline
    elsewhere; 'null' is the baseline plus one miss."""
    n = 10 * n_p
    who = np.repeat(np.arange(n_p), 10)
    labels = np.arange(n) % 2
    facts = [{"participant": 100 + p, "n_sequences": 10, "dominant_hand": "left" if p < lefties else "right",
              "median_length": 20.0 + p, "no_hand_share": 0.01 * p} for p in range(n_p)]
    base = np.ones(n, bool)
    base[::10] = False
    arms = {"base": base, "lefty_bad": base & (who >= lefties), "null": base.copy()}
    arms["null"][5] = False
    study = new_study("panel", meta("panel", list(arms)))
    predictions.write_sequences(study, who, labels, facts)
    fold = np.arange(n) % K
    for arm, ok in arms.items():
        scores = [float(ok[fold == k].mean()) + 1e-3 * ((k * 7 + len(arm)) % 3) for k in range(K)]
        t = records.made_trial(TrialState.COMPLETE, arm, folds(scores))
        for k in range(K):
            idx = np.flatnonzero(fold == k)
            t.set_user_attr(*predictions.encode(k, idx, np.where(ok[idx], labels[idx], 1 - labels[idx]),
                                                np.where(ok[idx], 0.9, 0.1)))
        study.add_trial(t)
    return study


def test_participant_panel_by_hand() -> None:
    a = analyze(_hand_made_study())
    rows = {r["participant"]: r for r in a["participants"]}
    assert list(rows) == list(range(100, 110))
    for pid in (100, 101, 102):
        assert rows[pid]["arms"]["base"] == {"accuracy": pytest.approx(0.9), "difference": 0.0}
        assert rows[pid]["arms"]["lefty_bad"]["accuracy"] == 0.0
        assert rows[pid]["arms"]["lefty_bad"]["difference"] == pytest.approx(-0.9)
    assert rows[103]["arms"]["lefty_bad"]["difference"] == 0.0 and rows[100]["arms"]["null"]["difference"] == pytest.approx(-0.1)
    for r in a["participants"]:  # the JSON contract
        assert {"participant", "dominant_hand", "n_sequences", "arms"} <= set(r)
        assert r["dominant_hand"] in ("left", "right")
        assert all({"accuracy", "difference"} <= set(v) for v in r["arms"].values())
    by = {(e["arm"], e["attribute"]): e for e in a["participant_effects"]}
    hand = by[("lefty_bad", "dominant hand")]
    # the 3 left-dominant participants hold the 3 lowest differences: 1 relabelling of C(10, 3) = 120
    assert hand["p"] == pytest.approx(1 / 120) and hand["differs"] and not hand["too_few"]
    assert hand["gap"] == pytest.approx(-0.9) and hand["groups"]["left-dominant"]["difference"] == pytest.approx(-0.9)
    assert "lefty_bad is worse mostly for left-dominant signers" in hand["text"]
    assert not by[("null", "dominant hand")]["differs"]
    assert hand["level"] == pytest.approx(1 - 0.05 / 3)  # Bonferroni over the arm's 3 attributes
    page = render_report(a | {"versions": {}, "commit": "x"}, [], "now", "x.json")
    assert 'id="participants-table"' in page and "lefty_bad is worse mostly for left-dominant signers" in page


def test_too_few_participants_cannot_say() -> None:
    a = analyze(_hand_made_study(n_p=4, lefties=2))
    hand = next(e for e in a["participant_effects"] if e["arm"] == "lefty_bad" and e["attribute"] == "dominant hand")
    assert hand["too_few"] and not hand["differs"]  # C(4, 2) = 6 relabellings: p >= 1/3


def test_permutation_p_by_hand() -> None:
    from ablate.report.participants import permutation_p

    rng = np.random.default_rng(0)
    v = np.array([3.0, 1.0, 2.0, 0.0])
    # group {0}: gap |3 - 1| = 2; relabellings {0}:2, {1}:|1-5/3|=2/3, {2}:2/3, {3}:2 -> 2 of 4 reach 2
    assert permutation_p(v, np.array([True, False, False, False]), rng) == (0.5, 0.25)
    big = rng.normal(size=30)
    p, smallest = permutation_p(big, np.arange(30) < 10, rng)  # C(30, 10) > 20,000: random relabellings
    assert 0 < p <= 1 and smallest == pytest.approx(1 / 20_001)


def test_a_study_from_before_the_panel_says_so() -> None:
    study = new_study("old", meta("old", ["a", "b"]))
    study.add_trial(records.made_trial(TrialState.COMPLETE, "a", folds([0.5, 0.6, 0.55, 0.52, 0.58])))
    a = analyze(study)
    assert a["participants"] == [] and "did not record its sequences" in a["participant_note"]
