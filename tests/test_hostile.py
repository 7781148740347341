"""A catalogue of hostile inputs across data, search spaces, storage, reports, finalize and predict.

Each case runs the command line on a fresh copy of a small workspace (data, its cache, search
spaces, a study journal with finished studies, a report folder) and asserts: exit code 2, exactly
one line on stderr that names the culprit, no traceback, and nothing written or lost (every file
of the workspace is byte for byte what it was). Cases about permissions run in a process of their
own without the capabilities that let root ignore file modes; the full disk is a file-size limit.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ablate.cli import main
from conftest import REPO, TINY_SPACE as TINY, ablate_cli, make_dataset, spaces_folder, tree_state

PASSWORD = "hunter2-secret"


@dataclass
class W:
    """The workspace of one case."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / {"data": "data", "cache": "cache", "spaces": "spaces", "storage": "s.journal",
                            "reports": "reports", "home": "home", "final": "final"}[name]

    @property
    def env(self) -> dict[str, str]:
        return {"ABLATE_HOME": str(self.home), "ABLATE_SPACES": str(self.spaces)}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data + cache + spaces + a journal holding finished studies tiny-smoke and losses-smoke + a report."""
    import optuna
    from optuna.trial import TrialState

    from ablate.data.cache import Cache
    from ablate.data.ingest import ingest
    from ablate.report.writer import write_index, write_report
    from ablate.spaces import load_space
    from ablate.study import records
    from ablate.study.setup import new_meta
    from ablate.study.storage import open_storage
    from studies import add

    root = tmp_path_factory.mktemp("hostile")
    w = W(root)
    make_dataset(w.data)
    ingest(w.data, w.cache)
    spaces_folder(w.spaces, tiny=TINY, losses=(REPO / "search_spaces" / "losses.yaml").read_text())
    data = Cache(w.cache)
    storage = open_storage(str(w.storage))
    for space_name in ("tiny", "losses"):
        space = load_space(space_name, w.spaces)
        study = optuna.create_study(study_name=f"{space_name}-smoke", storage=storage, direction="maximize")
        records.write_meta(study, new_meta(space, "smoke", data, 1, "grouped", str(w.storage)))
        records.mark_enqueued(study)
        for i, arm in enumerate(space.arms):
            # fold noise (odd arms) so that differences have a spread: zero variance gets no verdict
            add(study, TrialState.COMPLETE, arm, [0.3 + 0.01 * i + 0.002 * k + 0.002 * ((i + k) % 2) for k in range(5)])
    write_report(optuna.load_study(study_name="tiny-smoke", storage=storage), w.reports)
    write_index(w.reports)
    (w.home).mkdir()
    return root


@dataclass
class Case:
    id: str
    argv: Callable[[W], list[str]]
    needles: tuple[str, ...]
    setup: Callable[[W], Any] | None = None
    process: dict[str, Any] = field(default_factory=dict)  # ablate_cli options: unprivileged, file_limit


def _write(path_of: Callable[[W], Path], content: str | bytes) -> Callable[[W], None]:
    def setup(w: W) -> None:
        p = path_of(w)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    return setup


def _chmod(path_of: Callable[[W], Path], mode: int) -> Callable[[W], None]:
    return lambda w: path_of(w).chmod(mode)


def _replace_dir_with_file(path_of: Callable[[W], Path]) -> Callable[[W], None]:
    def setup(w: W) -> None:
        p = path_of(w)
        p.unlink()
        p.mkdir()
    return setup


def _meta(w: W) -> dict[str, Any]:
    return json.loads((w.cache / "meta.json").read_text())


def _space(text: str) -> Callable[[W], None]:
    return _write(lambda w: w.spaces / "bad.yaml", text)


def _base(old: str, new: str) -> Callable[[W], None]:
    def setup(w: W) -> None:
        p = w.spaces / "base.yaml"
        assert old in p.read_text(), old
        p.write_text(p.read_text().replace(old, new, 1))
    return setup


def _run(*extra: str, space: str = "tiny") -> Callable[[W], list[str]]:
    return lambda w: ["run", space, "--preset", "smoke", "--data", str(w.cache), "--storage", str(w.storage), *extra]


def _bad_weights(w: W) -> None:
    """A finished-looking final folder whose fold 0 weights file is not a weights file."""
    import numpy as np

    from ablate.data.cache import Cache
    from ablate.final.compose import compose
    from ablate.final.folds import check_or_claim

    os.environ["ABLATE_SPACES"] = str(w.spaces)
    config = compose(["losses"], "smoke", storage=str(w.storage)).config
    data = Cache(w.cache)
    check_or_claim(w.final, config, data, {})
    (w.final / "folds").mkdir()
    folds = data.folds(5, 0)
    for k in range(5):
        idx = np.flatnonzero(folds == k)
        np.savez(w.final / "folds" / f"fold{k}.oof.npz", indices=idx, probs=np.full((len(idx), 3), 1 / 3, np.float32))
        (w.final / "folds" / f"fold{k}.json").write_text(json.dumps({"last_acc": 0.3, "seconds": 1.0}))
        (w.final / "folds" / f"fold{k}.pt").write_bytes(b"\x80\x02 this is not a weights file")


def _waiting_trial(w: W) -> None:
    import optuna

    from ablate.study import queue
    from ablate.study.storage import open_storage

    queue.enqueue(optuna.load_study(study_name="losses-smoke", storage=open_storage(str(w.storage))), "ce", "ablation")


def _bad_participants_csv(w: W) -> None:
    """A malformed generator file beside this workspace's train.csv (the cache names its source)."""
    meta = json.loads((w.cache / "meta.json").read_text())
    (w.cache / "meta.json").write_text(json.dumps(meta | {"source": str(w.data)}))
    (w.data / "participants.csv").write_text("participant_id,left_handed\nx,1\n")


def _finalize(*extra: str) -> Callable[[W], list[str]]:
    return lambda w: ["finalize", "--from", "losses", "--preset", "smoke", "--storage", str(w.storage), "--data",
                      str(w.cache), "--out", str(w.final), "--reports", str(w.reports), *extra]


SAMPLE = REPO.parent / "shared" / "data" / "asl-signs-sample" / "train_landmark_files" / "16069" / "100015657.parquet"
LOSSY_SPACE = "question: q\naxis: loss\narms:\n  ce: {}\n"
CASES: list[Case] = [
    # ---- data ----------------------------------------------------------------------------------
    Case("ingest-no-dir", lambda w: ["data", "ingest", str(w.root / "nope")], ("nope", "not a directory")),
    Case("ingest-no-csv", lambda w: ["data", "ingest", str(w.data)], ("train.csv", "file not found"),
         lambda w: (w.data / "train.csv").unlink()),
    Case("ingest-csv-unreadable", lambda w: ["data", "ingest", str(w.data), "--cache", str(w.cache)],
         ("train.csv", "Permission denied"), _chmod(lambda w: w.data / "train.csv", 0), {"unprivileged": True}),
    Case("ingest-csv-columns", lambda w: ["data", "ingest", str(w.data)], ("train.csv", "missing column(s) participant_id"),
         _write(lambda w: w.data / "train.csv", "path,sequence_id,sign\nx,1,a\n")),
    Case("ingest-csv-binary", lambda w: ["data", "ingest", str(w.data)], ("train.csv",),
         _write(lambda w: w.data / "train.csv", b"\x00\xff\xfe" * 100)),
    Case("ingest-csv-empty-value", lambda w: ["data", "ingest", str(w.data)], ("train.csv", "empty value"),
         _write(lambda w: w.data / "train.csv", "path,participant_id,sequence_id,sign\nx,,1,sign0\n")),
    Case("ingest-csv-bad-id", lambda w: ["data", "ingest", str(w.data)], ("train.csv", "cannot parse"),
         _write(lambda w: w.data / "train.csv", "path,participant_id,sequence_id,sign\nx,abc,1,sign0\n")),
    Case("ingest-map-missing", lambda w: ["data", "ingest", str(w.data)], ("sign_to_prediction_index_map.json", "file not found"),
         lambda w: (w.data / "sign_to_prediction_index_map.json").unlink()),
    Case("ingest-map-dir", lambda w: ["data", "ingest", str(w.data)], ("sign_to_prediction_index_map.json", "Is a directory"),
         _replace_dir_with_file(lambda w: w.data / "sign_to_prediction_index_map.json")),
    Case("ingest-map-unreadable", lambda w: ["data", "ingest", str(w.data), "--cache", str(w.cache)],
         ("sign_to_prediction_index_map.json", "Permission denied"),
         _chmod(lambda w: w.data / "sign_to_prediction_index_map.json", 0), {"unprivileged": True}),
    Case("ingest-map-json", lambda w: ["data", "ingest", str(w.data)], ("sign_to_prediction_index_map.json", "not valid JSON"),
         _write(lambda w: w.data / "sign_to_prediction_index_map.json", "{oops")),
    Case("ingest-map-types", lambda w: ["data", "ingest", str(w.data)], ("sign_to_prediction_index_map.json", "integer indices"),
         _write(lambda w: w.data / "sign_to_prediction_index_map.json", '{"a": "zero"}')),
    Case("ingest-map-indices", lambda w: ["data", "ingest", str(w.data)], ("sign_to_prediction_index_map.json", "indices must be 0..1"),
         _write(lambda w: w.data / "sign_to_prediction_index_map.json", '{"a": 0, "b": 5}')),
    Case("ingest-map-binary", lambda w: ["data", "ingest", str(w.data)], ("sign_to_prediction_index_map.json", "not a text file"),
         _write(lambda w: w.data / "sign_to_prediction_index_map.json", b"\xff\xfe\x00\x81")),
    Case("ingest-cache-is-file", lambda w: ["data", "ingest", str(w.data), "--cache", str(w.data / "train.csv")],
         ("--cache", "train.csv", "is a file")),
    Case("ingest-workers-negative", lambda w: ["data", "ingest", str(w.data), "--workers", "-2"],
         ("--workers", "expected a positive integer, got '-2'")),
    Case("ingest-workers-zero", lambda w: ["data", "ingest", str(w.data), "--workers", "0"], ("--workers", "got '0'")),
    Case("ingest-disk-full", lambda w: ["data", "ingest", str(w.data), "--cache", str(w.cache), "--rebuild"],
         ("landmarks-", "File too large"), None, {"file_limit": 20_000}),
    Case("ingest-cache-parent-read-only", lambda w: ["data", "ingest", str(w.data), "--cache", str(w.home / "c")],
         ("home", "Permission denied"), _chmod(lambda w: w.home, 0o555), {"unprivileged": True}),
    Case("info-on-file", lambda w: ["data", "info", str(w.data / "train.csv")], ("train.csv", "not a directory")),
    Case("info-empty-dir", lambda w: ["data", "info", str(w.home)], ("home", "no ablate cache here")),
    Case("info-meta-truncated", lambda w: ["data", "info", str(w.cache)], ("meta.json", "not valid JSON", "damaged"),
         lambda w: (w.cache / "meta.json").write_text((w.cache / "meta.json").read_text()[:50])),
    Case("info-meta-fields", lambda w: ["data", "info", str(w.cache)], ("meta.json", "missing fields"),
         _write(lambda w: w.cache / "meta.json", '{"version": 2}')),
    Case("info-meta-version", lambda w: ["data", "info", str(w.cache)], ("meta.json", "cache version 99"),
         lambda w: (w.cache / "meta.json").write_text(json.dumps(_meta(w) | {"version": 99}))),
    Case("info-frames-missing", lambda w: ["data", "info", str(w.cache)], ("landmarks-", "missing", "damaged"),
         lambda w: (w.cache / _meta(w)["frames"]).unlink()),
    Case("info-frames-truncated", lambda w: ["data", "info", str(w.cache)], ("landmarks-", "truncated"),
         lambda w: os.truncate(w.cache / _meta(w)["frames"], 1000)),
    Case("info-index-not-parquet", lambda w: ["data", "info", str(w.cache)], ("index-", "not a readable parquet index"),
         lambda w: (w.cache / _meta(w)["index"]).write_text("not parquet")),
    Case("folds-bad-k", lambda w: ["data", "folds", str(w.cache), "--k", "0"], ("--k", "positive integer")),
    Case("folds-damaged", lambda w: ["data", "folds", str(w.cache)], ("meta.json", "not valid JSON"),
         _write(lambda w: w.cache / "meta.json", "{")),
    Case("verify-on-file", lambda w: ["data", "verify", str(w.data / "train.csv")], ("train.csv", "not a directory")),
    Case("synth-zero-signs", lambda w: ["data", "synth", "--out", str(w.home / "s"), "--signs", "0"], ("--signs", "positive")),
    Case("synth-too-many-rolled", lambda w: ["data", "synth", "--out", str(w.home / "s"), "--signs", "2",
                                             "--tilted-share", "0.9"], ("tilted", "outnumber")),
    Case("synth-out-is-file", lambda w: ["data", "synth", "--out", str(w.data / "train.csv"), "--signs", "2",
                                         "--participants", "2", "--reps", "1"], ("train.csv",)),
    Case("home-read-only", lambda w: ["data", "info"], ("home", "Permission denied"),
         _chmod(lambda w: w.home, 0o555), {"unprivileged": True}),
    # ---- search spaces and run arguments -------------------------------------------------------------
    Case("run-unknown-space", _run(space="tiyn"), ("unknown search space 'tiyn'", "did you mean 'tiny'")),
    Case("run-unknown-preset", lambda w: ["run", "tiny", "--preset", "smok"], ("unknown preset 'smok'", "did you mean 'smoke'")),
    Case("space-duplicate-arm", _run(space="bad"), ("bad.yaml", "line 5", "duplicate key 'ce'"),
         _space("axis: loss\narms:\n  ce: {}\n  focal: {}\n  ce: {seed_offset: 3}\n")),
    Case("space-duplicate-top-key", _run(space="bad"), ("bad.yaml", "duplicate key 'arms'"),
         _space("axis: loss\narms: {ce: {}}\narms: {focal: {}}\n")),
    Case("space-choices-type", _run(space="bad"), ("bad.yaml", "arms.transformer.ranges.heads.choices[0]", "expected int"),
         _space("axis: model\nmode: tune\narms: {transformer: {ranges: {heads: {choices: [four, 8]}}}}\n")),
    Case("space-out-of-range", _run(space="bad"), ("bad.yaml", "arms.transformer", "dropout must be in [0, 1)"),
         _space("axis: model\narms: {transformer: {params: {dropout: 1.5}}}\n")),
    Case("space-nan", _run(space="bad"), ("bad.yaml", "arms.focal.params.gamma", "finite"),
         _space("axis: loss\narms: {focal: {params: {gamma: .nan}}}\n")),
    Case("space-unused-key", _run(space="bad"), ("bad.yaml", "arms.ce", "unknown key 'augmentations'", "loss axis"),
         _space("axis: loss\narms: {ce: {augmentations: [hflip]}}\n")),
    Case("space-params-list", _run(space="bad"), ("bad.yaml", "arms.focal.params", "expected a mapping"),
         _space("axis: loss\narms: {focal: {params: [gamma, 2.0]}}\n")),
    Case("space-alias-bomb", _run(space="bad"), ("bad.yaml", "anchors (&name) are not allowed"),
         _space(LOSSY_SPACE + "a: &a [x, x, x, x, x, x, x, x]\n"
                + "".join(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}' if i else '*a'] * 9)}]\n" for i in range(8)))),
    Case("space-not-yaml", _run(space="bad"), ("bad.yaml", "not valid YAML"), _space("axis: loss\narms: {ce: {}\n")),
    Case("space-code-tag", _run(space="bad"), ("bad.yaml", "not valid YAML"),
         _space("axis: loss\narms: {ce: !!python/object/apply:os.system [echo pwned]}\n")),
    Case("base-batch-size", _run(), ("base.yaml", "presets.smoke.batch_size", ">= 1, got -4"),
         _base("    batch_size: 16", "    batch_size: -4")),
    Case("base-epochs-zero", _run(), ("base.yaml", "presets.smoke.epochs", ">= 1, got 0"), _base("    epochs: 1\n", "    epochs: 0\n")),
    Case("base-amp", _run(), ("base.yaml", "amp", "'bf61'", "did you mean 'bf16'"), _base("  amp: auto ", "  amp: bf61 ")),
    Case("base-missing", _run(), ("base.yaml", "file not found"), lambda w: (w.spaces / "base.yaml").unlink()),
    Case("run-n-trials-negative", _run("--n-trials", "-1"), ("--n-trials", "positive integer, got '-1'")),
    Case("run-n-trials-zero", _run("--n-trials", "0"), ("--n-trials", "got '0'")),
    Case("run-timeout-negative", _run("--timeout", "-5"), ("--timeout", "positive number of seconds, got '-5'")),
    Case("run-timeout-zero", _run("--timeout", "0"), ("--timeout", "got '0'")),
    Case("run-timeout-nan", _run("--timeout", "nan"), ("--timeout", "got 'nan'")),
    Case("run-seeds-zero", _run("--seeds", "0"), ("--seeds", "got '0'")),
    Case("run-repeats-zero", _run("--repeats", "0"), ("--repeats", "got '0'")),
    Case("run-pruning-in-ablation", _run("--pruning", "on"), ("--pruning on", "ablation mode, which never prunes")),
    Case("space-rope", _run(space="bad"), ("bad.yaml", "rope", "low <= 0 <= high"),
         _space("axis: loss\nrope: [0.01, 0.02]\narms: {ce: {}}\n")),
    Case("run-participants-csv", _run(), ("participants.csv", "line 2", "expected columns"), _bad_participants_csv),
    Case("run-data-missing", lambda w: ["run", "tiny", "--preset", "smoke", "--data", str(w.root / "nodata")],
         ("nodata", "no ablate cache here")),
    Case("run-data-file", lambda w: ["run", "tiny", "--preset", "smoke", "--data", str(w.data / "train.csv")],
         ("train.csv", "not a directory")),
    Case("run-changed-arm", _run(), ("arm 'focal' changed", "loss.params.gamma", "--study NAME"),
         _write(lambda w: w.spaces / "tiny.yaml", TINY.replace("focal: {}", "focal: {params: {gamma: 1.0}}"))),
    Case("run-removed-arm", _run(), ("arm 'focal' was removed",), _write(lambda w: w.spaces / "tiny.yaml", TINY.replace("  focal: {}\n", ""))),
    Case("run-changed-base", _run(), ("base.yaml changed since the study began", "batch_size"),
         _base("    batch_size: 16", "    batch_size: 8")),
    Case("run-other-seeds", _run("--seeds", "2"), ("started with seeds=1", "this run has seeds=2", "--study NAME")),
    # ---- storage -------------------------------------------------------------------------------------
    Case("storage-directory", lambda w: ["run", "tiny", "--preset", "smoke", "--data", str(w.cache), "--storage", str(w.reports)],
         ("reports", "is a directory", "journal file")),
    Case("storage-corrupt-journal", _run(), ("s.journal", "not an Optuna journal"),
         _write(lambda w: w.storage, "this is not a journal\n")),
    Case("storage-journal-read-only", lambda w: ["run", "tiny", "--preset", "smoke", "--data", str(w.cache),
                                                 "--storage", str(w.home / "s.journal")],
         ("home", "Permission denied"), _chmod(lambda w: w.home, 0o555), {"unprivileged": True}),
    Case("storage-refused-with-password", lambda w: ["report", "--storage", f"postgresql://ablate:{PASSWORD}@127.0.0.1:9/db"],
         ("postgresql://ablate:***@127.0.0.1:9/db", "cannot open")),
    Case("storage-query-password", lambda w: ["report", "--storage", f"postgresql://ablate@127.0.0.1:9/db?password={PASSWORD}"],
         ("password=***", "cannot open")),
    Case("storage-unknown-driver", lambda w: ["report", "--storage", f"nosuchdb://u:{PASSWORD}@h/db"], ("nosuchdb://u:***@h/db",)),
    Case("storage-missing-journal", lambda w: ["report", "--storage", str(w.root / "none.journal")],
         ("none.journal", "no such journal file")),
    Case("report-unknown-space", lambda w: ["report", "lossez", "--storage", str(w.storage)], ("lossez", "did you mean 'losses'")),
    # ---- reports -------------------------------------------------------------------------------------
    Case("report-out-is-file", lambda w: ["report", "--storage", str(w.storage), "--out", str(w.data / "train.csv")],
         ("--out", "train.csv", "is a file")),
    Case("report-out-read-only", lambda w: ["report", "--storage", str(w.storage), "--out", str(w.reports)],
         ("reports", "Permission denied"), _chmod(lambda w: w.reports, 0o555), {"unprivileged": True}),
    Case("report-alpha", lambda w: ["report", "--storage", str(w.storage), "--alpha", "2"], ("--alpha", "between 0 and 1")),
    Case("report-rope-order", lambda w: ["report", "--storage", str(w.storage), "--rope", "0.1", "-0.1"], ("--rope", "LOW < HIGH")),
    Case("report-rope-beside-zero", lambda w: ["report", "--storage", str(w.storage), "--rope", "0.01", "0.02"],
         ("--rope", "LOW <= 0 <= HIGH")),
    Case("report-rope-nan", lambda w: ["report", "--storage", str(w.storage), "--rope", "nan", "1"], ("--rope", "finite")),
    Case("report-format", lambda w: ["report", "--storage", str(w.storage), "--format", "xml"], ("--format", "invalid choice: 'xml'")),
    # ---- finalize ------------------------------------------------------------------------------------
    Case("finalize-unknown-space", lambda w: ["finalize", "--from", "lossez", "--preset", "smoke", "--storage", str(w.storage)],
         ("lossez", "did you mean 'losses'")),
    Case("finalize-no-study", lambda w: ["finalize", "--from", "losses", "--preset", "quick", "--storage", str(w.storage)],
         ("no study 'losses-quick'", "--study-preset")),
    Case("finalize-check-sequences", _finalize("--check-sequences", "100"), ("--check-sequences", "at least 200")),
    Case("finalize-check-file-missing", _finalize("--check-files", "/nonexistent/x.parquet"), ("x.parquet", "file not found")),
    Case("finalize-out-is-file", lambda w: ["finalize", "--from", "losses", "--preset", "smoke", "--storage", str(w.storage),
                                            "--data", str(w.cache), "--out", str(w.data / "train.csv"), "--no-export"],
         ("--out", "train.csv", "is a file")),
    Case("finalize-unfinished", _finalize("--no-export"), ("unfinished", "waiting or running"), _waiting_trial),
    Case("finalize-recipe-damaged", _finalize("--no-export"), ("recipe.json", "unreadable"),
         lambda w: (w.final.mkdir(), (w.final / "recipe.json").write_text("{"))),
    # the baseline arm: finalize checks it whichever arm wins
    Case("finalize-changed-arm", _finalize("--no-export"), ("arm 'subcenter_arcface' changed", "sub_centers", "restore it"),
         _write(lambda w: w.spaces / "losses.yaml", (REPO / "search_spaces" / "losses.yaml").read_text().replace(
             "subcenter_arcface: {}", "subcenter_arcface: {params: {sub_centers: 2}}"))),
    Case("finalize-bad-weights", _finalize(), ("fold0.pt", "not a PyTorch weights file", "delete it to train fold 0 again"), _bad_weights),
    # ---- predict -------------------------------------------------------------------------------------
    Case("predict-no-model", lambda w: ["predict", str(w.root / "m.tflite"), str(SAMPLE)], ("m.tflite", "no such model file")),
    Case("predict-not-tflite", lambda w: ["predict", str(w.data / "train.csv"), str(SAMPLE),
                                          "--sign-map", str(w.data / "sign_to_prediction_index_map.json")],
         ("train.csv", "not a usable TFLite model")),
    Case("predict-no-sign-map", lambda w: ["predict", str(w.reports / "index.html"), str(SAMPLE)],
         ("reports/sign_to_prediction_index_map.json", "sign map not found")),
    Case("predict-top-zero", lambda w: ["predict", str(w.data / "train.csv"), str(SAMPLE), "--top", "0"], ("--top", "got '0'")),
    Case("predict-threads", lambda w: ["predict", str(w.data / "train.csv"), str(SAMPLE), "--threads", "-1"], ("--threads",)),
    # ---- components ----------------------------------------------------------------------------------
    Case("list-unknown-kind", lambda w: ["list", "modles"], ("unknown component kind 'modles'", "did you mean 'models'")),
]


def test_the_catalogue_is_large() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    w = W(tmp_path / "w")
    shutil.copytree(template, w.root)
    for k, v in w.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(w.root)
    if case.setup:
        case.setup(w)
    before = tree_state(w.root)
    argv = case.argv(w)
    try:
        if case.process:
            r = ablate_cli(*argv, env=w.env, cwd=w.root, **case.process)
            code, err, out = r.returncode, r.stderr, r.stdout
        else:
            code = main(argv)
            out, err = capsys.readouterr()
    finally:
        for p in (w.home, w.reports, w.data / "train.csv", w.data / "sign_to_prediction_index_map.json"):
            if p.exists() and not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), err
    assert "Traceback" not in err + out
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    assert PASSWORD not in err + out
    assert tree_state(w.root) == before, "the command wrote or removed files"
