"""Shared fixtures: small Kaggle-layout data sets made here, and the real sample from ../shared."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ablate.data import kaggle

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: test processes share the cores; more threads would contend
    import torch

    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # and the processes tests start
    torch.set_num_threads(_threads)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("ABLATE_SAMPLE", REPO.parent / "shared" / "data" / "asl-signs-sample"))
SAMPLE_FILE = SAMPLE / "train_landmark_files" / "16069" / "100015657.parquet"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ./.ablate from a test."""
    monkeypatch.setenv("ABLATE_HOME", str(tmp_path_factory.mktemp("ablate_home")))


TINY_SPACE = "question: test space\naxis: loss\nmode: ablation\nbaseline: ce\narms:\n  ce: {}\n  ce_smooth: {}\n  focal: {}\n"


def points_for(in_dim: int) -> Any:
    """A point layout for a model built without a feature set: the left hand's first in_dim // 2
    points (at most 21) as x, y pairs, the other columns extra."""
    from ablate.components._graph import PointLayout
    from ablate.data import landmarks as lm

    n = min(in_dim // 2, 21)
    return PointLayout(tuple(lm.LEFT_HAND_IDX[:n]), 2, tuple(range(2 * n)), tuple(range(2 * n, in_dim)))


def spaces_folder(root: Path, **files: str) -> Path:
    """A search_spaces/ folder: the shipped base.yaml plus the given <name>.yaml files."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "search_spaces" / "base.yaml", root / "base.yaml")
    for name, text in files.items():
        (root / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture
def spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$ABLATE_SPACES: the shipped base.yaml and tiny.yaml (three loss arms, ablation mode)."""
    d = spaces_folder(tmp_path / "spaces", tiny=TINY_SPACE)
    monkeypatch.setenv("ABLATE_SPACES", str(d))
    return d


@pytest.fixture
def sample() -> Path:
    if not SAMPLE_FILE.is_file():
        pytest.skip(f"real asl-signs sample not found at {SAMPLE} (set ABLATE_SAMPLE)")
    return SAMPLE


def random_frames(rng: np.random.Generator, n_frames: int, nan_left: bool = True) -> np.ndarray:
    frames = rng.uniform(0, 1, size=(n_frames, 543, 3)).astype(np.float32)
    if nan_left:
        frames[: n_frames // 2, 468:489] = np.nan
    return frames


def make_dataset(root: Path, n_participants: int = 5, n_signs: int = 3, reps: int = 2, seed: int = 0) -> Path:
    """A tiny random data set in the Kaggle layout (random values; for format and cache tests)."""
    rng = np.random.default_rng(seed)
    signs = [f"sign{i}" for i in range(n_signs)]
    lines = ["path,participant_id,sequence_id,sign"]
    sid = 1000
    for p in range(n_participants):
        pid = 20000 + p
        for s in signs:
            for _ in range(reps):
                sid += 1
                rel = f"train_landmark_files/{pid}/{sid}.parquet"
                kaggle.write_landmarks(root / rel, random_frames(rng, int(rng.integers(1, 12))), int(rng.integers(0, 300)))
                lines.append(f"{rel},{pid},{sid},{s}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "sign_to_prediction_index_map.json").write_text(json.dumps({s: i for i, s in enumerate(signs)}))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set (6 signs x 5 participants x 4 reps), generated and ingested once."""
    from ablate.data.ingest import ingest
    from ablate.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root / "data", SynthConfig(n_signs=6, n_participants=5, reps=4, seed=11))
    ingest(root / "data", root / "cache")
    return root / "cache"


def drop_file_capabilities() -> None:
    """A subprocess preexec_fn: as root (CI), give up the capabilities that bypass file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so that chmod 000 and read-only folders mean for the
    command what they mean for a user. A no-op for other users."""
    import ctypes

    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # linux/capability.h
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the bounding set, so after exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def ablate_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, unprivileged: bool = False,
               file_limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m ablate ARGS` in a process of its own: for exit codes, permissions and limits."""
    import resource
    import sys

    def setup() -> None:
        if unprivileged:
            drop_file_capabilities()
        if file_limit is not None:  # writes past it fail with EFBIG: a full disk, for one process
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO, timeout=timeout, preexec_fn=setup)


def tree_state(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file under the roots with its size and digest (lock files aside): 'nothing was written or lost'."""
    import hashlib

    out = {}
    for root in roots:
        if root.is_file():
            files = [root]
        else:
            files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        for p in files:
            if p.name.endswith(".lock"):
                continue
            try:
                out[str(p)] = (p.stat().st_size, hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest())
            except PermissionError:  # a chmod-000 file, for a developer who is not root: size and time
                out[str(p)] = (p.stat().st_size, str(p.stat().st_mtime_ns))
    return out
