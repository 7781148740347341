"""The command line end to end, as a user types it: exit codes, one-line errors, speed of --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from conftest import REPO


def ablate(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO, timeout=300)


def test_help_is_fast_and_lists_the_commands() -> None:
    """Fast because nothing heavy is imported before a command runs (checked directly: a timing
    would depend on how busy the machine is)."""
    r = ablate("--help")
    assert r.returncode == 0
    for cmd in ("data", "list", "run", "report", "dashboard", "finalize", "predict"):
        assert f"    {cmd}" in r.stdout
    heavy = subprocess.run([sys.executable, "-c", "import sys, ablate.cli; print(sorted(m for m in ('torch','pyarrow','sklearn','optuna','tensorflow') if m in sys.modules))"],
                           capture_output=True, text=True, cwd=REPO)
    assert heavy.stdout.strip() == "[]"


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    _one_line_error(ablate("data", "ingest", str(tmp_path / "nope")), str(tmp_path / "nope"), "not a directory")
    (tmp_path / "train.csv").write_text("path,sequence_id\nx,1\n")
    (tmp_path / "sign_to_prediction_index_map.json").write_text('{"a": 0}')
    _one_line_error(ablate("data", "ingest", str(tmp_path)), "train.csv", "missing column(s) participant_id, sign")
    _one_line_error(ablate("data", "info", str(tmp_path / "empty")), "no ablate cache here")
    _one_line_error(ablate("data", "frobnicate"), "invalid choice: 'frobnicate'")
    _one_line_error(ablate("list", "modles"), "unknown component kind 'modles'", "did you mean 'models'")
    _one_line_error(ablate("run", "loses", "--storage", str(tmp_path / "s.journal")), "unknown search space 'loses'", "did you mean 'losses'")
    _one_line_error(ablate("run", "losses", "--preset", "quik", "--storage", str(tmp_path / "s.journal")), "unknown preset 'quik'")
    _one_line_error(ablate("report", "losses", "--storage", str(tmp_path / "s.journal")), "s.journal: no such journal file")
    _one_line_error(ablate("run", "losses", "--workers", "0"), "argument --workers: expected a positive integer, got '0'")


def test_ingest_info_and_folds(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r = ablate("data", "ingest", str(dataset), "--cache", str(cache))
    assert r.returncode == 0 and "30 read" in r.stdout, r.stdout + r.stderr
    assert "already up to date" in ablate("data", "ingest", str(dataset), "--cache", str(cache)).stdout
    info = ablate("data", "info", str(cache))
    assert info.returncode == 0
    assert "sequences    30" in info.stdout and "participants 5" in info.stdout
    folds = ablate("data", "folds", str(cache))
    assert folds.returncode == 0 and folds.stdout.count("1 participants") == 5
    leaky = ablate("data", "folds", str(cache), "--ungrouped-leaky")
    assert "UNGROUPED (leaky)" in leaky.stdout
