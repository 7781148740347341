"""The typed records and the storage around them: studies of the previous version, masked storage
URLs, abandoned trials, a worker whose space file is out of date."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from ablate.errors import UserError
from ablate.study import queue, records
from ablate.study.runner import RunArgs, run, work
from ablate.study.storage import mask_url, open_storage, scrub
from conftest import TINY_SPACE as TINY

SECRET = "s3cret-Pw"


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://ablate:{SECRET}@db.example:5432/studies", "postgresql://ablate:***@db.example:5432/studies"),
    (f"postgresql://ablate:{SECRET}/x@h/db", "postgresql://ablate:***@h/db"),  # '/', '?', '#' in a password
    (f"postgresql://ablate:a?{SECRET}@h/db", "postgresql://ablate:***@h/db"),
    (f"postgresql://ablate:a#{SECRET}@h/db", "postgresql://ablate:***@h/db"),
    (f"postgresql+psycopg://ablate:{SECRET}:x@h/db", "postgresql+psycopg://ablate:***@h/db"),
    (f"postgresql://ablate@h/db?sslmode=require&password={SECRET}", "postgresql://ablate@h/db?sslmode=require&password=***"),
    (f"postgresql://ablate@h/db?sslpassword={SECRET}&x=1", "postgresql://ablate@h/db?sslpassword=***&x=1"),
    ("postgresql://ablate@h/db", "postgresql://ablate@h/db"),
    ("/data/studies.journal", "/data/studies.journal"),
])
def test_storage_urls_never_show_a_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert SECRET not in scrub(f"could not connect to {url}", url)


def _legacy_study(storage: str, fingerprint: str) -> None:
    """A study as the previous version left it: flat attributes, arms queued as an 'arm' parameter,
    and its storage attribute written with a ?password= in clear."""
    study = optuna.create_study(study_name="tiny-smoke", storage=open_storage(storage), direction="maximize")
    arms = ["ce", "ce_smooth", "focal"]
    attrs = {"space": "tiny", "question": "old", "axis": "loss", "mode": "ablation", "baseline": "ce", "arms": arms,
             "preset": "smoke", "seeds": 1, "folds": 5, "fold_seed": 0, "fingerprint": fingerprint,
             "fold_kind": "grouped", "data": {}, "recipe": {}, "n_trials": 20, "enqueued": True,
             "storage": f"postgresql://u@h/db?password={SECRET}"}
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    dist = CategoricalDistribution(arms)
    for i, arm in enumerate(arms[:2]):
        folds = [{"step": k, "seed": 0, "fold": k, "score": 0.3 + 0.01 * i + 0.002 * k, "n_train": 20, "n_val": 5,
                  "seconds": 1.0, "curve": {"val_acc": [0.3]}} for k in range(5)]
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.3 + 0.01 * i, params={"arm": arm},
                                     distributions={"arm": dist}, user_attrs={"arm": arm, "stage": "ablation",
                                                                              "folds": folds}))
    study.enqueue_trial({"arm": "focal"})


def test_a_study_of_the_previous_version_reports_but_is_not_resumed(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    """Its report still reads (with the password masked); resuming it is refused, writing nothing,
    because its numbers came from the per-sequence input path (see feed.DATA_PATH)."""
    from ablate.data.cache import Cache
    from ablate.report.writer import report_json

    storage = str(tmp_path / "s.journal")
    _legacy_study(storage, Cache(synth_cache).fingerprint)
    old = optuna.load_study(study_name="tiny-smoke", storage=open_storage(storage))
    report = json.dumps(report_json(old))
    assert SECRET not in report and [r["arm"] for r in json.loads(report)["arms"]] == ["ce", "ce_smooth", "focal"]
    before = Path(storage).read_bytes()
    with pytest.raises(UserError, match="per-sequence input path of earlier versions"):
        run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
    assert Path(storage).read_bytes() == before
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, study="tiny-new"))
    assert sorted(r.arm for r in records.trial_records(study) if r.state == "COMPLETE") == ["ce", "ce_smooth", "focal"]


def test_a_trial_no_worker_recorded_is_recovered_after_the_grace_period(spaces: Path, synth_cache: Path,
                                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = str(tmp_path / "s.journal")
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1))
    orphan = study.ask()  # RUNNING, and its worker killed before it could record itself
    monkeypatch.setattr(queue, "GRACE_S", 3600)
    assert queue.recover_stale(study) == 0  # a young one may still be recording itself
    monkeypatch.setattr(queue, "GRACE_S", -1)
    assert queue.recover_stale(study) == 1
    rec = next(r for r in records.trial_records(study) if r.number == orphan.number)
    assert rec.state == "FAIL" and rec.unfinished


def test_a_worker_whose_file_lacks_an_arm_gives_the_trial_back(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    """Another machine's space file (or this one, edited) no longer defines an arm the study has queued."""
    storage = str(tmp_path / "s.journal")
    args = RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1)
    run(args)  # ce ran; ce_smooth and focal wait
    (spaces / "tiny.yaml").write_text(TINY.replace("  ce_smooth: {}\n", "").replace("focal: {}", "focal: {params: {gamma: 3.0}}"))
    with pytest.raises(UserError, match=r"arm 'ce_smooth' is not defined in .*tiny.yaml as the study defines it"):
        work(args, str(synth_cache), "tiny-smoke")
    recs = _recs(storage)
    assert not any(r.fail_reason for r in recs)
    assert sorted(r.arm for r in recs if r.state == "WAITING") == ["ce_smooth", "focal"]  # given back, unrun
    (spaces / "tiny.yaml").write_text(TINY.replace("focal: {}", "focal: {params: {gamma: 3.0}}"))  # defined otherwise
    with pytest.raises(UserError, match="arm 'focal' is not defined in"):
        work(args, str(synth_cache), "tiny-smoke")
    assert sorted(r.arm for r in _recs(storage) if r.state == "WAITING") == ["ce_smooth", "focal"]


def _recs(storage: str) -> list[records.TrialRecord]:
    return records.trial_records(optuna.load_study(study_name="tiny-smoke", storage=open_storage(storage)))


def test_a_study_trained_on_another_input_path_is_not_resumed() -> None:
    """Numbers from the per-sequence path (before batches on the device) or another DATA_PATH
    have other augmentation draws: a resume across them would mix incomparable arms."""
    import dataclasses

    from ablate.errors import UserError
    from ablate.feed import DATA_PATH
    from ablate.study import setup
    from ablate.study.records import StudyMeta

    new = StudyMeta(space="s", question="q", axis="loss", mode="ablation", baseline="a", arms={}, preset="smoke",
                    seeds=1, folds=5, fold_seed=0, fold_kind="grouped", fingerprint="f", data={}, recipe={},
                    data_path=DATA_PATH)
    setup._check_same_question("s", dataclasses.replace(new), new)  # the same path: fine
    with pytest.raises(UserError, match="per-sequence input path of earlier versions.*--study NAME"):
        setup._check_same_question("s", dataclasses.replace(new, data_path=""), new)
