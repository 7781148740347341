"""Studies end to end on a tiny synthetic set: arms once each, paired folds, failures, resume, kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ablate.runner import RunArgs, run
from ablate.study import open_storage
from conftest import REPO

SPACE = """question: test space
axis: loss
mode: ablation
baseline: ce
arms:
  ce: {}
  ce_smooth: {}
  focal: {}
"""


@pytest.fixture
def spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "spaces"
    d.mkdir()
    shutil.copy(REPO / "search_spaces" / "base.yaml", d / "base.yaml")
    (d / "tiny.yaml").write_text(SPACE)
    monkeypatch.setenv("ABLATE_SPACES", str(d))
    return d


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials()


def test_ablation_runs_every_arm_once_on_the_same_folds(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
    trials = study.get_trials()
    assert sorted(t.user_attrs["arm"] for t in trials) == ["ce", "ce_smooth", "focal"]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert sorted(t.intermediate_values) == [0, 1, 2, 3, 4]  # one per fold
        assert t.user_attrs["fold_scores"] == [t.intermediate_values[i] for i in range(5)]
        assert t.value == pytest.approx(sum(t.user_attrs["fold_scores"]) / 5)
        assert t.user_attrs["config"]["loss"]["name"] == t.user_attrs["arm"]
        assert t.user_attrs["fingerprint"] == study.user_attrs["fingerprint"]
        assert [f["fold"] for f in t.user_attrs["folds"]] == [0, 1, 2, 3, 4]
        assert all(len(f["curve"]["val_acc"]) == 1 for f in t.user_attrs["folds"])
    # the same validation participants for every arm: fold sizes agree
    sizes = {tuple(f["n_val"] for f in t.user_attrs["folds"]) for t in trials}
    assert len(sizes) == 1
    # running again trains nothing
    again = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
    assert len(again.get_trials()) == 3
    import optuna_dashboard
    from optuna.artifacts import get_all_artifact_meta

    assert "| ce |" in optuna_dashboard.get_note(again)
    for t in trials:  # each trial's per-fold curves are attached for the dashboard
        assert [m.filename for m in get_all_artifact_meta(t, storage=open_storage(storage))] == [f"trial-{t.number}-curves.json"]


def test_dashboard_serves_the_study(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    storage = str(tmp_path / "s.journal")
    run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli("dashboard", "--storage", storage, "--port", str(port), env={}, cwd=tmp_path)
    try:
        body = None
        for _ in range(60):
            time.sleep(0.5)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/studies", headers={"Accept-Encoding": "gzip"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    body = r.read()
                break
            except OSError:
                continue
        assert body is not None, "optuna-dashboard did not answer"
        import gzip

        text = gzip.decompress(body).decode() if body[:2] == b"\x1f\x8b" else body.decode()
        assert "tiny-smoke" in json.dumps(json.loads(text))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_failing_arm_is_recorded_and_the_study_goes_on(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    # 5 heads cannot split the smoke preset's width of 32: the model fails to build inside the trial
    (spaces / "failing.yaml").write_text(
        "axis: model\nbaseline: transformer\narms:\n  transformer: {}\n"
        "  odd_heads: {name: transformer, params: {heads: 5}}\n")
    study = run(RunArgs("failing", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal")))
    by_arm = {t.user_attrs["arm"]: t for t in study.get_trials()}
    assert by_arm["transformer"].state == TrialState.COMPLETE
    assert by_arm["odd_heads"].state == TrialState.FAIL
    assert "heads" in by_arm["odd_heads"].user_attrs["fail_reason"]


def test_tune_mode_samples_conditional_params(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    (spaces / "tuned.yaml").write_text(
        "axis: loss\nmode: tune\nbaseline: ce_smooth\narms:\n  ce_smooth: {ranges: {label_smoothing: [0.0, 0.3]}}\n"
        "  focal: {ranges: {gamma: {low: 0.5, high: 4.0, log: true}}}\ntune: {n_trials: 3}\n")
    study = run(RunArgs("tuned", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal")))
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        arm = t.params["arm"]
        assert set(t.params) == {"arm", f"{arm}.{'label_smoothing' if arm == 'ce_smooth' else 'gamma'}"}
        tuned = t.params[f"{arm}.label_smoothing"] if arm == "ce_smooth" else t.params[f"{arm}.gamma"]
        assert t.user_attrs["config"]["loss"]["params"][("label_smoothing" if arm == "ce_smooth" else "gamma")] == tuned


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], env={**os.environ, **env}, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_trial_then_rerun_finishes_without_losing_anything(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    env = {"ABLATE_SPACES": str(spaces)}
    args = ("run", "tiny", "--preset", "smoke", "--data", str(synth_cache), "--storage", storage)
    proc = _cli(*args, env=env, cwd=tmp_path)
    name = "tiny-smoke"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for one finished trial and one trial mid-way
        time.sleep(0.5)
        try:
            trials = _trials(storage, name)
        except KeyError:
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("folds")]
        if done and running:
            break
    else:
        proc.kill()
        pytest.fail("the study never reached a finished trial and a running one")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.user_attrs["arm"], t.datetime_complete) for t in _trials(storage, name) if t.state == TrialState.COMPLETE}
    out, _ = _cli(*args, env=env, cwd=tmp_path).communicate(timeout=300)
    assert "1 stale recovered" in out, out
    assert (tmp_path / "reports" / "tiny-smoke.html").is_file() and (tmp_path / "reports" / "index.html").is_file()
    trials = _trials(storage, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["arm"] for t in complete) == ["ce", "ce_smooth", "focal"]
    for number, (arm, finished) in before.items():  # nothing that had finished was trained again
        t = trials[number]
        assert t.state == TrialState.COMPLETE and t.datetime_complete == finished
    stale = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stale) == 1 and stale[0].user_attrs.get("stale") and "fail_reason" not in stale[0].user_attrs


def test_two_workers_on_postgres_run_every_arm_exactly_once(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    url = os.environ.get("ABLATE_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: set ABLATE_TEST_POSTGRES (.ci/run starts one with .ci/postgres.sh)")
    try:
        open_storage(url)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"PostgreSQL at {url} not reachable: {e}")
    name = f"tiny-pg-{os.getpid()}-{int(time.time())}"
    args = ("run", "tiny", "--preset", "smoke", "--data", str(synth_cache), "--storage", url, "--study", name)
    env = {"ABLATE_SPACES": str(spaces)}
    procs = [_cli(*args, env=env, cwd=tmp_path) for _ in range(2)]  # two processes, as two machines would
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trials = _trials(url, name)
    assert sorted(t.user_attrs["arm"] for t in trials) == ["ce", "ce_smooth", "focal"], outs
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_local_workers_share_one_study(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal"), workers=2))
    trials = study.get_trials()
    assert sorted(t.user_attrs["arm"] for t in trials) == ["ce", "ce_smooth", "focal"]
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_leaky_folds_study_feeds_the_leakage_panel(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.report.analysis import analyze
    from ablate.report.writer import write_report

    storage = str(tmp_path / "s.journal")
    grouped = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1))
    leaky = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage, n_trials=1, leaky_folds=True))
    assert leaky.study_name == "tiny-smoke-leaky" and leaky.user_attrs["fold_kind"] == "ungrouped-leaky"
    done = [t for t in leaky.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].user_attrs["config"]["fold_kind"] == "ungrouped-leaky"
    a = analyze(grouped)
    row = next(r for r in a["arms"] if r["arm"] == done[0].user_attrs["arm"])
    assert row["leakage"]["ungrouped"] == done[0].user_attrs["fold_scores"]
    assert row["leakage"]["grouped"] == row["scores"]
    assert "Leakage check" in write_report(grouped, tmp_path / "reports").read_text()


def test_both_mode_tunes_each_arm_then_compares_with_fresh_seeds(spaces: Path, synth_cache: Path, tmp_path: Path) -> None:
    from ablate.report.analysis import analyze

    (spaces / "both.yaml").write_text(
        "axis: loss\nmode: both\nbaseline: ce_smooth\narms:\n  ce_smooth: {ranges: {label_smoothing: [0.0, 0.3]}}\n"
        "  focal: {ranges: {gamma: [0.5, 4.0]}}\ntune: {n_trials: 1}\n")
    study = run(RunArgs("both", preset="smoke", data=str(synth_cache), storage=str(tmp_path / "s.journal")))
    trials = study.get_trials()
    stages = sorted((t.user_attrs["stage"], t.user_attrs["arm"]) for t in trials)
    assert stages == [("compare", "ce_smooth"), ("compare", "focal"), ("tune", "ce_smooth"), ("tune", "focal")]
    for t in trials:
        if t.user_attrs["stage"] == "compare":
            tuned = trials[t.user_attrs["tuned_in"]]
            assert t.params == tuned.params  # the best tuned parameters, evaluated again
            assert t.user_attrs["config"]["seed"] != tuned.user_attrs["config"]["seed"]  # with fresh seeds
    rows = {r["arm"]: r for r in analyze(study)["arms"]}
    compare = {t.user_attrs["arm"]: t for t in trials if t.user_attrs["stage"] == "compare"}
    assert all(rows[a]["trial"] == compare[a].number for a in rows)
