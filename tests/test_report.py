"""HTML reports: the same numbers as the JSON, escaped user text, offline pages, the index.

Most tests use studies written by hand into in-memory storage (fast, with chosen verdicts); one
real tiny study checks the whole path from `ablate.runner.run`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ablate.report.html import render_report, verdict_summary
from ablate.report.writer import git_commit, report_json, write_index, write_report
from conftest import REPO, spaces_folder
from studies import add, meta, new_study

K, S, E = 5, 2, 6  # folds, seeds, epochs of the hand-made studies
EVIL = "<script>alert(1)</script>"
BASE = [0.50, 0.55, 0.60, 0.52, 0.58, 0.51, 0.56, 0.61, 0.50, 0.57]
NOISE = [0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.015, -0.015, 0.0]


def fake_study(name: str, arms: dict[str, tuple[TrialState, list[float | None]]], question: str = "q?",
               mode: str = "ablation", tuned: int = 0) -> optuna.Study:
    """A finished study as the runner leaves it; `tuned` > 0 adds that many tune trials per arm."""
    recipe = {"features": {"name": "seed828", "params": {"max_len": 384, "keep_z": False}},
              "loss": {"name": "ce", "params": {}}, "augmentations": [{"name": "hflip", "params": {}}],
              "epochs": E, "batch_size": 64}
    study = new_study(name, meta(name, list(arms), question=question, mode=mode, preset="quick", seeds=S, folds=K,
                                 fingerprint="abc123", recipe=recipe,
                                 data={"source": "/data", "sequences": 120, "signs": 6, "participants": 5}))
    for arm, (state, scores) in arms.items():
        n = max(tuned, 1)
        for j in range(n):
            params = {"gamma": (0.5 + j, FloatDistribution(0.1, 10.0))} if tuned else {}
            # each tune trial 0.05 better than the one before; the last has `scores` and stands for the arm
            mine = [None if v is None else v + 0.05 * (j - n + 1) for v in scores]
            stage = "tune" if mode != "ablation" else "ablation"
            if state == TrialState.FAIL:
                add(study, state, arm, [], stage=stage, tuned=params, fail_reason=f"RuntimeError: {EVIL} boom")
            else:
                add(study, state, arm, mine, stage=stage, tuned=params, epochs=E)
    return study


def rich_study(name: str = "rich") -> optuna.Study:
    return fake_study(name, {
        "ce": (TrialState.COMPLETE, BASE),
        "better": (TrialState.COMPLETE, [b + 0.08 + n for b, n in zip(BASE, NOISE)]),
        "worse": (TrialState.COMPLETE, [b - 0.10 + n for b, n in zip(BASE, NOISE)]),
        "same": (TrialState.COMPLETE, [b + n for b, n in zip(BASE, NOISE)]),
        "pruned": (TrialState.PRUNED, BASE[:3] + [None] * 7),
        "x<b>": (TrialState.FAIL, []),
    }, question=f'Which loss? {EVIL} "&\'')


class _Rows(HTMLParser):
    """The summary table's cells: {arm: {cell class: text}}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.arm: str | None = None
        self.cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-arm") is not None:
            self.arm = a["data-arm"]
            self.rows[self.arm] = {}
        elif tag == "td" and self.arm is not None:
            self.cell = (a.get("class") or "").split()[-1]
            self.rows[self.arm][self.cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.arm = None
        if tag == "td":
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.arm is not None and self.cell is not None:
            self.rows[self.arm][self.cell] += data


def summary_rows(text: str) -> dict[str, dict[str, str]]:
    p = _Rows()
    p.feed(text)
    return p.rows


def _f(v: float | None, spec: str = ".4f") -> str:
    return "–" if v is None else format(v, spec)


def _ci(v: float | None, low: float | None, high: float | None, spec: str = ".4f") -> str:
    return _f(v, spec) if low is None else f"{_f(v, spec)} [{_f(low, spec)}, {_f(high, spec)}]"


def check_same_numbers(text: str, a: dict[str, Any]) -> None:
    rows = summary_rows(text.split('id="details-table"')[0])
    assert list(rows) == [r["arm"] for r in a["arms"]]
    for r in a["arms"]:
        cells = rows[r["arm"]]
        assert cells["mean"] == _ci(r["mean"], r["ci_low"], r["ci_high"])
        assert cells["verdict"] == r["verdict"]
        assert cells["n"] == f"{r['n_units']} of {a['folds'] * (a.get('repeats') or 1)}"
        if r["verdict"] == "baseline":
            assert cells["diff"] == "baseline" and cells["probs"] == "" and cells["mde"] == ""
            continue
        assert cells["diff"] == _ci(r["diff"], r["diff_low"], r["diff_high"], "+.4f")
        probs = "–" if r["p_better"] is None else f"{r['p_worse']:.3f} / {r['p_equivalent']:.3f} / {r['p_better']:.3f}"
        assert cells["probs"] == probs and cells["mde"] == _f(r["mde"], "+.4f")
    details = summary_rows(text[text.index('id="details-table"'):])
    for r in a["arms"][1:]:
        assert details[r["arm"]]["p-holm"] == _f(r["p_corrected_holm"], ".3g")


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("reports")
    study = rich_study()
    path = write_report(study, out)
    return path, report_json(study)


def test_summary_table_shows_the_json_numbers(rich: tuple[Path, dict[str, Any]]) -> None:
    path, a = rich
    verdicts = {r["arm"]: r["verdict"] for r in a["arms"]}
    # the hand-made scores exercise every kind of row
    assert verdicts == {"ce": "baseline", "better": "better", "worse": "worse", "same": "undecided",
                        "pruned": "incomplete", "x<b>": "incomplete"}
    text = path.read_text()
    check_same_numbers(text, a)
    summary = summary_rows(text.split('id="details-table"')[0])
    assert summary["x<b>"]["trials"] == "0 / 0 / 1" and summary["pruned"]["trials"] == "0 / 1 / 0"
    # the JSON beside the page is the same dict, strict JSON
    beside = json.loads(path.with_suffix(".json").read_text())
    assert [r["mean"] for r in beside["arms"]] == [r["mean"] for r in a["arms"]]


def test_report_json_is_strict_and_complete(rich: tuple[Path, dict[str, Any]]) -> None:
    _, a = rich
    json.dumps(a, allow_nan=False)
    for key in ("study", "question", "axis", "mode", "baseline", "preset", "folds", "seeds", "repeats", "fingerprint",
                "data", "recipe", "storage", "alpha", "rope", "decision", "sensitivity", "n_train", "n_test",
                "finished", "arms", "warnings", "versions", "commit"):
        assert key in a, key
    assert set(a["versions"]) >= {"python", "torch", "optuna", "scipy", "numpy", "ablate"}
    for r in a["arms"]:
        for key in ("arm", "n", "n_units", "mean", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "p_better",
                    "p_equivalent", "p_worse", "mde", "effect_size", "p_corrected", "p_corrected_holm", "verdict",
                    "trials", "scores", "train_seconds", "curves", "warnings"):
            assert key in r, key
        assert r["verdict"] in ("baseline", "better", "worse", "equivalent", "undecided", "incomplete")
        assert not any("wilcoxon" in k for k in r)


def test_an_empty_study_still_reports(tmp_path: Path) -> None:
    study = fake_study("empty", {"ce": (TrialState.FAIL, []), "focal": (TrialState.FAIL, [])})
    a = report_json(study)
    assert a["n_train"] is None  # nan in analyze, None in JSON
    json.dumps(a, allow_nan=False)
    text = write_report(study, tmp_path).read_text()
    assert "No finished folds yet" in text


def test_user_text_is_escaped_everywhere(rich: tuple[Path, dict[str, Any]]) -> None:
    path, _ = rich
    text = path.read_text()
    assert EVIL not in text and "x<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&amp;&#x27;" in text  # the question's "&'
    assert "x&lt;b&gt;" in text
    # the chart data cannot close its script element, and plotly gets escaped labels
    data = re.search(r'<script id="figures" type="application/json">(.*?)</script>', text, re.S).group(1)
    assert "<" not in data and ">" not in data
    figures = json.loads(data)
    assert "x<b>" not in json.dumps(figures) and "x&lt;b&gt;" in json.dumps(figures)


def test_the_page_works_offline(rich: tuple[Path, dict[str, Any]]) -> None:
    path, _ = rich
    text = path.read_text()
    links = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', text)
    assert links and not [u for u in links if re.match(r"(https?:)?//", u)], links
    assert '<script src="plotly.min.js">' in text
    js = path.parent / "plotly.min.js"
    assert js.is_file() and js.stat().st_size > 1_000_000
    assert path.stat().st_size < 5_000_000
    assert not list(path.parent.glob(".*.tmp"))


def test_plotly_js_is_written_once(tmp_path: Path) -> None:
    study = fake_study("two", {"ce": (TrialState.COMPLETE, BASE), "b": (TrialState.COMPLETE, BASE)})
    write_report(study, tmp_path)
    js = tmp_path / "plotly.min.js"
    before = js.stat().st_mtime_ns
    write_report(study, tmp_path)
    assert js.stat().st_mtime_ns == before


def test_index_links_every_report_with_its_question(rich: tuple[Path, dict[str, Any]]) -> None:
    path, _ = rich
    out = path.parent
    other = fake_study("other study/2", {"ce": (TrialState.COMPLETE, BASE), "b": (TrialState.COMPLETE, BASE)},
                       question="Is b any good?")
    other_path = write_report(other, out)
    assert re.fullmatch(r"other_study_2-[0-9a-f]{6}\.html", other_path.name)  # a digest keeps odd names apart
    text = write_index(out).read_text()
    hrefs = re.findall(r'href="([^"]*)"', text)
    assert sorted(hrefs) == [other_path.name, "rich.html"]
    assert all((out / h).is_file() for h in hrefs)
    assert "Is b any good?" in text and "Which loss? &lt;script&gt;" in text
    assert "better: better; worse: worse; undecided: 1 arm; incomplete: 2 arms" in text


def test_verdict_summary_by_hand() -> None:
    rows = [{"arm": "b", "verdict": "baseline"}, {"arm": "hflip", "verdict": "better"}] + [
        {"arm": f"a{i}", "verdict": "undecided"} for i in range(5)] + [{"arm": "p", "verdict": "incomplete"}]
    assert verdict_summary({"arms": rows}) == "better: hflip; worse: none; undecided: 5 arms; incomplete: 1 arm"
    assert verdict_summary({"arms": rows[:1]}) == "no results yet"


def test_leakage_panel_shows_the_over_statement(rich: tuple[Path, dict[str, Any]]) -> None:
    _, a = rich
    text = render_report(a | {"leakage": {"grouped": [0.5, 0.6], "ungrouped": [0.7, 0.8]}}, [], "now", "x.json")
    assert "Leakage check" in text and "+0.2000 (+20.0 points)" in text
    assert "Leakage check" not in render_report(a, [], "now", "x.json")


def test_rope_band_and_equivalent_verdict(tmp_path: Path) -> None:
    study = fake_study("rope", {"ce": (TrialState.COMPLETE, BASE),
                                "same": (TrialState.COMPLETE, [b + n * 0.1 for b, n in zip(BASE, NOISE)])})
    a = report_json(study, rope=(-0.02, 0.02))
    assert a["arms"][1]["verdict"] == "equivalent"
    text = write_report(study, tmp_path, rope=(-0.02, 0.02)).read_text()
    check_same_numbers(text, a)
    assert "ROPE [-0.02, 0.02]" in text and "ROPE [-0.02, +0.02]" in text
    forest = json.loads(re.search(r'type="application/json">(.*?)</script>', text, re.S).group(1))["forest"]
    assert [s["type"] for s in forest["layout"]["shapes"]] == ["rect", "line"]


def _figures(text: str) -> dict[str, Any]:
    return json.loads(re.search(r'type="application/json">(.*?)</script>', text, re.S).group(1))


def test_tune_mode_adds_history_and_importance(tmp_path: Path) -> None:
    study = fake_study("tuned", {"ce": (TrialState.COMPLETE, BASE), "x<b>": (TrialState.COMPLETE, BASE)},
                       mode="tune", tuned=3)
    text = write_report(study, tmp_path).read_text()
    figs = _figures(text)
    assert {"folds", "forest", "curves", "time", "history", "importance"} <= set(figs)
    names = json.dumps(figs["importance"]["data"])
    assert "x&lt;b&gt;.gamma" in names and "x<b>" not in names
    assert "Tuned parameters" in text and "<td>x&lt;b&gt;</td><td class=\"num\">5</td><td>gamma = 2.5" in text


def test_tune_mode_with_one_trial_explains_the_missing_importance(tmp_path: Path) -> None:
    study = fake_study("one", {"ce": (TrialState.COMPLETE, BASE)}, mode="tune", tuned=1)
    text = write_report(study, tmp_path).read_text()
    assert "history" in _figures(text) and "importance" not in _figures(text)
    assert "Needs at least 2 completed trials" in text


def test_git_commit_names_this_checkout() -> None:
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?|unknown", git_commit())
    if (REPO / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert git_commit().startswith(head)


def test_renders_in_a_headless_browser_without_console_errors(rich: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        pytest.skip("no headless Chromium installed (apt-get install chromium)")
    path, _ = rich
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                          f"--user-data-dir={tmp_path / 'profile'}",  # its own: another test's browser may run at once
                          "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    # every chart div was drawn by plotly
    assert run.stdout.count('class="plot-container') == len(_figures(path.read_text())) > 0


SPACE = f"""question: 'Does label smoothing help? {EVIL} "&'''
axis: loss
baseline: ce
arms:
  ce: {{}}
  x<b>: {{name: ce_smooth}}
"""


@pytest.fixture(scope="module")
def real_study(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> optuna.Study:
    from ablate.study.runner import RunArgs, run

    d = spaces_folder(tmp_path_factory.mktemp("spaces"), tiny=SPACE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_SPACES", str(d))
        mp.setenv("ABLATE_HOME", str(tmp_path_factory.mktemp("home")))
        return run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=str(d / "s.journal")))


def test_a_real_study_reports_end_to_end(real_study: optuna.Study, tmp_path: Path) -> None:
    path = write_report(real_study, tmp_path)
    write_index(tmp_path)
    a = report_json(real_study)
    assert a["finished"] and [r["arm"] for r in a["arms"]] == ["ce", "x<b>"]
    text = path.read_text()
    check_same_numbers(text, a)
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert {"folds", "forest", "curves", "time"} <= set(_figures(text))
    assert "from preset smoke" in text  # where the recipe's values came from (ablate.resolve)
    assert "What each arm changes" in text and "loss: arm x&lt;b&gt;" in text
    index = (tmp_path / "index.html").read_text()
    assert f'href="{path.name}"' in index and "Does label smoothing help?" in index


def test_study_names_that_share_a_file_name_get_files_of_their_own(tmp_path: Path) -> None:
    paths = [write_report(fake_study(name, {"ce": (TrialState.COMPLETE, BASE)}), tmp_path) for name in ("exp 1", "exp_1", "exp/1")]
    assert len({p.name for p in paths}) == 3 and paths[1].name == "exp_1.html"
    write_index(tmp_path)
    index = (tmp_path / "index.html").read_text()
    assert all(f'href="{p.name.replace(" ", "%20")}"' in index for p in paths)
    assert {json.loads(p.with_suffix(".json").read_text())["study"] for p in paths} == {"exp 1", "exp_1", "exp/1"}
