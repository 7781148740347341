"""The throughput benchmarks stay alive: each runs, small, on the CPU and ends with its JSON line.
The figures they print are not checked here (a busy CI machine would make such checks race the
clock); the README and the closing notes quote full runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(script: str, *args: str, home: Path) -> dict:
    env = {**os.environ, "ABLATE_HOME": str(home)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-home")


def test_input_pipeline(home: Path) -> None:
    out = run("input_pipeline.py", "--batches", "3", "--repeat", "1", home=home)
    assert set(out) == {"per_sequence", "batched", "ratio"} and out["per_sequence"] > 0 and out["batched"] > 0


def test_trainer_overhead(home: Path) -> None:
    out = run("trainer_overhead.py", "--epochs", "1", "--preset", "smoke", home=home)
    assert set(out) == {"trainer", "bare_step", "share"} and out["trainer"] > 0 and out["bare_step"] > 0


def test_gpu_throughput_runs_small_on_cpu(home: Path) -> None:
    out = run("gpu_throughput.py", "--small", home=home)
    assert out["device"] == "cpu" and out["trainer"] > 0 and out["bare_step"] > 0 and out["resident"] is True
    assert out["sequences"] == 120 and out["full_data_epoch_seconds"] > 0 and out["feed"] > 0 and out["batch_size"] == 16


def test_gpu_whole_step_runs_small_on_cpu(home: Path) -> None:
    out = run("gpu_whole_step.py", "--small", home=home)
    assert out["device"] == "cpu" and not out["captured"] and out["trainer_step"] > 0 and out["whole_step"] > 0
    assert out["whole_step_trained"] is True and "radam_step" not in out  # no separate eager figure on a CPU
    assert out["ratio"] == pytest.approx(out["whole_step"] / out["trainer_step"], rel=1e-2)


def test_known_answers_spaces_copy_keeps_the_asked_arms(tmp_path: Path) -> None:
    """known_answers --arms: the studied space keeps its baseline and those arms; the others whole."""
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("known_answers", REPO / "benchmarks" / "known_answers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    dst = mod.known_spaces(tmp_path, ["augmentations"], ["no_scale_rotate"])
    augs = yaml.safe_load((dst / "augmentations.yaml").read_text())
    assert list(augs["arms"]) == ["baseline", "no_scale_rotate"]
    assert len(yaml.safe_load((dst / "features.yaml").read_text())["arms"]) > 2
    assert yaml.safe_load((dst / "base.yaml").read_text())["presets"]["known"]["epochs"] == 20
    with pytest.raises(SystemExit, match="no_such_arm in none of augmentations"):
        mod.known_spaces(tmp_path, ["augmentations"], ["no_such_arm"])
