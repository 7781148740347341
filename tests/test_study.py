"""Studies end to end on a tiny synthetic set: arms once each, paired folds, failures, resume, kills,
growing a study, device failures, several workers and machines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from ablate.study import records
from ablate.study.records import TrialRecord
from ablate.study.runner import RunArgs, run, run_with_status
from ablate.study.storage import open_storage
from conftest import TINY_SPACE as SPACE

def _records(storage: str, name: str) -> list[TrialRecord]:
    return records.trial_records(optuna.load_study(study_name=name, storage=open_storage(storage)))


def _arms(recs: list[TrialRecord], state: str = "COMPLETE") -> list[str]:
    return sorted(str(r.arm) for r in recs if r.state == state)


def test_ablation_runs_every_arm_once_on_the_same_folds(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
    recs = records.trial_records(study)
    meta = records.read_meta(study)
    assert _arms(recs) == ["ce", "ce_smooth", "focal"] and len(recs) == 3
    for t, r in zip(study.get_trials(), recs):
        assert sorted(t.intermediate_values) == [0, 1, 2, 3, 4]  # one per fold
        assert [f.score for f in r.folds] == [t.intermediate_values[i] for i in range(5)]
        assert r.value == pytest.approx(sum(f.score for f in r.folds) / 5)
        assert r.config["loss"]["name"] == r.arm and r.fingerprint == meta.fingerprint
        assert [f.fold for f in r.folds] == [0, 1, 2, 3, 4] and all(len(f.curve["val_acc"]) == 1 for f in r.folds)
        assert r.sources["loss"] == ("base.yaml" if r.arm == "subcenter_arcface" else f"arm {r.arm}")
        assert r.sources["epochs"] == "preset smoke"
    assert len({tuple(f.n_val for f in r.folds) for r in recs}) == 1  # the same validation participants
    again = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))  # trains nothing
    assert len(again.get_trials()) == 3
    import optuna_dashboard
    from optuna.artifacts import get_all_artifact_meta

    assert "| ce |" in optuna_dashboard.get_note(again)
    for t in study.get_trials():  # each trial's per-fold curves are attached for the dashboard
        assert [m.filename for m in get_all_artifact_meta(t, storage=open_storage(storage))] == [f"trial-{t.number}-curves.json"]


def test_growing_a_study_runs_only_the_new_arm(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    first = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
    before = {r.number: r.completed for r in records.trial_records(first)}
    with open(spaces / "tiny.yaml", "a") as f:
        f.write("  arcface: {params: {label_smoothing: 0.1}}\n")
    grown = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
    recs = records.trial_records(grown)
    assert _arms(recs) == ["arcface", "ce", "ce_smooth", "focal"] and len(recs) == 4
    assert {r.number: r.completed for r in recs if r.number in before} == before  # nothing retrained
    new = next(r for r in recs if r.arm == "arcface")
    assert [f.n_val for f in new.folds] == [f.n_val for f in recs[0].folds]  # the same folds
    assert new.config["seed"] == recs[0].config["seed"]  # the same seeds
    from ablate.report.analysis import analyze

    assert [r["arm"] for r in analyze(grown)["arms"]] == ["ce", "ce_smooth", "focal", "arcface"]


def test_a_changed_or_removed_arm_is_refused_with_what_changed(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.errors import UserError

    storage = str(tmp_path / "s.journal")
    args = RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1)
    run(args)
    (spaces / "tiny.yaml").write_text(SPACE.replace("focal: {}", "focal: {params: {gamma: 3.0}}"))
    with pytest.raises(UserError, match=r"arm 'focal' changed .*loss.params.gamma: '\(none\)' -> 3.0.*--study NAME"):
        run(args)
    (spaces / "tiny.yaml").write_text(SPACE.replace("  focal: {}\n", ""))
    with pytest.raises(UserError, match="arm 'focal' was removed"):
        run(args)
    (spaces / "tiny.yaml").write_text(SPACE.replace("focal: {}", "focal: {name: focal}  # same arm, written out"))
    assert len(run(args).get_trials()) == 3  # an equivalent spelling is the same arm


def test_a_failing_arm_is_recorded_and_the_study_goes_on(spaces: Path, synth_cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.study import objective

    real = objective.train_fold

    def broken_for_focal(cfg, *a, **k):  # type: ignore[no-untyped-def]
        if cfg.loss.name == "focal":
            raise ValueError("focal is broken in this test")
        return real(cfg, *a, **k)

    monkeypatch.setattr(objective, "train_fold", broken_for_focal)
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal")))
    by_arm = {r.arm: r for r in records.trial_records(study)}
    assert by_arm["ce"].state == "COMPLETE" and by_arm["focal"].state == "FAIL"
    assert by_arm["focal"].fail_reason == "ValueError: focal is broken in this test"


def test_device_failures_are_retried_and_a_broken_device_stops_the_worker(spaces: Path, synth_cache: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA out-of-memory and fatal CUDA errors, raised on the CPU the way torch raises them."""
    import torch

    from ablate.study import objective

    real = objective.train_fold
    calls = {"ce_smooth": 0, "focal": 0}

    def flaky(cfg, *a, **k):  # type: ignore[no-untyped-def]
        name = cfg.loss.name
        if name in calls:
            calls[name] += 1
            if name == "ce_smooth" and calls[name] == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if name == "focal" and calls[name] == 1:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(cfg, *a, **k)

    monkeypatch.setattr(objective, "train_fold", flaky)
    args = RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal"))
    _, broken = run_with_status(args)
    assert broken  # the fatal error stopped the worker instead of failing every arm (`ablate run` exits 3)
    recs = _records(args.storage, "tiny-smoke")  # type: ignore[arg-type]
    assert _arms(recs) == ["ce"] and not any(r.fail_reason for r in recs), "neither counts as a result"
    assert _arms(recs, "WAITING") == ["ce_smooth", "focal"], "both are queued again, for a healthy worker"
    assert [r.retries for r in recs if r.state == "WAITING"] == [1, 1]
    study = run(args)  # the next run finishes it
    recs = records.trial_records(study)
    assert _arms(recs) == ["ce", "ce_smooth", "focal"]
    assert not any(r.fail_reason for r in recs) and sum(r.unfinished for r in recs) == 2


def test_tune_mode_samples_conditional_params_and_grows(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    (spaces / "tuned.yaml").write_text(
        "axis: loss\nmode: tune\nbaseline: ce_smooth\narms:\n  ce_smooth: {ranges: {label_smoothing: [0.0, 0.3]}}\n"
        "  focal: {ranges: {gamma: {low: 0.5, high: 4.0, log: true}}}\ntune: {n_trials: 3}\n")
    args = RunArgs("tuned", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal"))
    study = run(args)
    recs = records.trial_records(study)
    assert len(recs) == 3 and all(r.state == "COMPLETE" for r in recs)
    for r in recs:
        name = "label_smoothing" if r.arm == "ce_smooth" else "gamma"
        assert set(r.params) == {name} and r.config["loss"]["params"][name] == r.params[name]
        assert r.sources[f"loss.params.{name}"] == "tuned"
    # an arm added to a tune study gets a trial of its own, on top of the budget
    (spaces / "tuned.yaml").write_text((spaces / "tuned.yaml").read_text().replace("tune:", "  ce: {}\ntune:"))
    grown = records.trial_records(run(args))
    assert len(grown) == 4 and [r.arm for r in grown][-1] == "ce" and grown[-1].state == "COMPLETE"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], env={**os.environ, **env}, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_stop(stop_file: Path, proc: subprocess.Popen[str], lines: int = 1) -> list[str]:
    """Block until the process reports reaching its checkpoint (ablate.checkpoints): no clock involved."""
    while True:
        text = stop_file.read_text() if stop_file.exists() else ""
        if text.count("\n") >= lines:
            return text.splitlines()
        if proc.poll() is not None:
            pytest.fail(f"the process ended before its checkpoint: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.05)


def test_sigkill_mid_trial_then_rerun_finishes_without_losing_anything(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    stop = tmp_path / "stop"
    args = ("run", "tiny", "--preset", "smoke", "--data", str(synth_cache), "--storage", storage)
    # the 7th stored fold: trial 0 has finished its 5, trial 1 is half-way through its 2nd
    proc = _cli(*args, env={"ABLATE_SPACES": str(spaces), "ABLATE_STOP_AT": "trial:fold-stored:7",
                            "ABLATE_STOP_FILE": str(stop)}, cwd=tmp_path)
    wait_for_stop(stop, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    recs = _records(storage, "tiny-smoke")
    before = {r.number: r.completed for r in recs if r.state == "COMPLETE"}
    assert len(before) == 1 and [len(r.folds) for r in recs if r.state == "RUNNING"] == [2]
    out, _ = _cli(*args, env={"ABLATE_SPACES": str(spaces)}, cwd=tmp_path).communicate(timeout=300)
    assert "1 stale recovered" in out, out
    assert (tmp_path / "reports" / "tiny-smoke.html").is_file() and (tmp_path / "reports" / "index.html").is_file()
    recs = _records(storage, "tiny-smoke")
    assert _arms(recs) == ["ce", "ce_smooth", "focal"]
    assert {r.number: r.completed for r in recs if r.number in before} == before  # nothing finished ran again
    stale = [r for r in recs if r.state == "FAIL"]
    assert len(stale) == 1 and stale[0].unfinished and stale[0].fail_reason is None


def test_killing_the_main_process_stops_its_workers(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    stop = tmp_path / "stop"
    proc = _cli("run", "tiny", "--preset", "smoke", "--data", str(synth_cache), "--storage", storage, "--workers", "2",
                env={"ABLATE_SPACES": str(spaces), "ABLATE_STOP_AT": "trial:fold-stored", "ABLATE_STOP_FILE": str(stop)},
                cwd=tmp_path)
    lines = wait_for_stop(stop, proc, lines=2)  # both workers are inside a trial
    workers = [int(line.split()[1]) for line in lines]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pid in workers:  # the kernel tells them (PR_SET_PDEATHSIG); each queues its trial again and exits
        while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
            time.sleep(0.05)
    recs = _records(storage, "tiny-smoke")
    assert not [r for r in recs if r.state == "RUNNING"], "a worker's trial was left running"
    assert sum(r.unfinished for r in recs) == 2 and sum(r.state == "WAITING" for r in recs) == 3


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_two_workers_on_postgres_run_every_arm_exactly_once(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    """The README's form, postgresql://user:pass@host/db, against a real server (.ci/run starts one)."""
    url = os.environ.get("ABLATE_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: set ABLATE_TEST_POSTGRES (.ci/run starts one with .ci/postgres.sh)")
    password = url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    name = f"tiny-pg-{os.getpid()}-{int(time.time())}"
    args = ("run", "tiny", "--preset", "smoke", "--data", str(synth_cache), "--storage", url, "--study", name)
    env = {"ABLATE_SPACES": str(spaces)}
    procs = [_cli(*args, env=env, cwd=tmp_path) for _ in range(2)]  # two processes, as two machines would
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    recs = _records(url, name)
    assert _arms(recs) == ["ce", "ce_smooth", "focal"] and len([r for r in recs if not r.unfinished]) == 3, outs
    report = subprocess.run([sys.executable, "-m", "ablate", "report", name, "--storage", url, "--format", "json"],
                            capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp_path)
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    import json

    panel = json.loads(report.stdout)  # per-sequence predictions reach the report through the database
    assert len(panel["participants"]) == 5 and all(len(r["arms"]) == 3 for r in panel["participants"]), report.stderr
    import optuna_dashboard

    if password:  # the password appears nowhere: output, report, attributes, dashboard note
        for text in [*outs, report.stdout, str(study.user_attrs), optuna_dashboard.get_note(study)]:
            assert password not in text


def test_local_workers_share_one_study(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal"), workers=2,
                        devices="cpu,cpu"))
    recs = records.trial_records(study)
    assert _arms(recs) == ["ce", "ce_smooth", "focal"]
    assert {(f.device, f.amp) for r in recs for f in r.folds} == {("cpu", "off")}  # each fold says where it ran
    assert all(r.config["device"] == "cpu" and r.sources["device"] == "run setting" for r in recs)


def test_a_duplicate_queued_arm_runs_once(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    """Two processes resuming at once may both queue a missing arm: the later copy is discarded unrun."""
    from ablate.study import queue

    storage = str(tmp_path / "s.journal")
    args = RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1)
    study = run(args)  # trial 0 ran; trials 1 and 2 wait
    queue.enqueue(study, "focal", "ablation")  # the second process's copy
    recs = records.trial_records(run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage)))
    assert _arms(recs) == ["ce", "ce_smooth", "focal"]
    dup = [r for r in recs if r.state == "FAIL"]
    assert len(dup) == 1 and dup[0].unfinished and not dup[0].folds


def test_leaky_folds_study_feeds_the_leakage_panel(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.report.analysis import analyze
    from ablate.report.writer import write_report

    storage = str(tmp_path / "s.journal")
    grouped = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1))
    leaky = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1, leaky_folds=True))
    assert leaky.study_name == "tiny-smoke-leaky" and records.read_meta(leaky).fold_kind == "ungrouped-leaky"
    done = [r for r in records.trial_records(leaky) if r.state == "COMPLETE"]
    assert len(done) == 1 and done[0].config["fold_kind"] == "ungrouped-leaky"
    assert done[0].sources["fold_kind"] == "run setting"
    row = next(r for r in analyze(grouped)["arms"] if r["arm"] == done[0].arm)
    assert row["leakage"]["ungrouped"] == [f.score for f in done[0].folds]
    assert row["leakage"]["grouped"] == row["scores"]
    assert "Leakage check" in write_report(grouped, tmp_path / "reports").read_text()


def test_both_mode_tunes_each_arm_then_compares_with_fresh_seeds(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.report.analysis import analyze

    (spaces / "both.yaml").write_text(
        "axis: loss\nmode: both\nbaseline: ce_smooth\narms:\n  ce_smooth: {ranges: {label_smoothing: [0.0, 0.3]}}\n"
        "  focal: {ranges: {gamma: [0.5, 4.0]}}\ntune: {n_trials: 1}\n")
    study = run(RunArgs("both", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal")))
    recs = records.trial_records(study)
    assert sorted((r.stage, r.arm) for r in recs) == [("compare", "ce_smooth"), ("compare", "focal"),
                                                      ("tune", "ce_smooth"), ("tune", "focal")]
    for r in recs:
        if r.stage == "compare":
            tuned = recs[r.tuned_in]  # type: ignore[index]
            assert r.params == tuned.params  # the best tuned parameters, evaluated again
            assert r.config["seed"] != tuned.config["seed"]  # with fresh seeds
            assert "compare stage" in r.sources["seed"]
    rows = {r["arm"]: r for r in analyze(study)["arms"]}
    compare = {r.arm: r for r in recs if r.stage == "compare"}
    assert all(rows[a]["trial"] == compare[a].number for a in rows)


def test_repeats_repartition_by_participant_and_pair_by_unit(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.data.cache import Cache
    from ablate.errors import UserError
    from ablate.report.analysis import analyze

    (spaces / "two.yaml").write_text("question: q\naxis: loss\nmode: ablation\nbaseline: ce\nrope: 0.01\n"
                                     "arms:\n  ce: {}\n  focal: {}\n")
    storage = str(tmp_path / "s.journal")
    study = run(RunArgs("two", preset="smoke", data=str(synth_cache), storage=storage, repeats=2))
    meta = records.read_meta(study)
    assert meta.repeats == 2 and meta.rope == [-0.01, 0.01]
    for t, r in zip(study.get_trials(), records.trial_records(study)):
        assert sorted(t.intermediate_values) == list(range(10))
        assert [(f.repeat, f.fold, f.step) for f in r.folds] == [(i // 5, i % 5, i) for i in range(10)]
    data = Cache(synth_cache)
    parts = [data.folds(5, 0), data.folds(5, 1)]  # base.yaml's fold seed 0, plus the repeat
    assert not np.array_equal(parts[0], parts[1])  # re-partitioned
    for fold in parts:
        for k in range(5):  # within a repeat, no participant in two folds
            inside = set(data.participants[fold == k].tolist())
            assert not inside & set(data.participants[fold != k].tolist())
    from ablate.study import predictions

    for t in study.get_trials():  # each fold's validation predictions, stored in the trial
        preds = predictions.predictions(t)
        assert sorted(preds) == list(range(10))
        for step, p in preds.items():
            assert (p.index == np.flatnonzero(parts[step // 5] == step % 5)).all()
            assert ((0 <= p.p_true) & (p.p_true <= 1)).all() and (p.predicted < data.num_classes).all()
    a = analyze(study)
    assert len(a["participants"]) == 5 and all(r["generator"] for r in a["participants"])
    assert a["repeats"] == 2 and a["rope"] == [-0.01, 0.01]
    assert [r["n_units"] for r in a["arms"]] == [10, 10]  # full design; smoke scores may still tie (zero variance)
    assert a["arms"][1]["verdict"] != "incomplete" or "zero variance" in " ".join(a["arms"][1]["warnings"])
    assert a["sensitivity"]["units"] == 10
    with pytest.raises(UserError, match="repeats=2"):
        run(RunArgs("two", preset="smoke", data=str(synth_cache), storage=storage))


def test_ablation_never_prunes(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.errors import UserError

    with pytest.raises(UserError, match="ablation mode, which never prunes"):
        run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal"), pruning="on"))
    assert not (tmp_path / "s.journal").exists()
