"""The competition file format: the real sample, the schema, and every way a file can be bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ablate.data import kaggle
from ablate.errors import UserError
from conftest import SAMPLE_FILE, random_frames


def test_real_sample_loads_like_the_competition_loader(sample: Path) -> None:
    frames = kaggle.read_landmarks(SAMPLE_FILE)
    assert frames.shape == (105, 543, 3) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames, kaggle.load_relevant_data_subset(SAMPLE_FILE))
    # the right hand is never detected in this clip; the left hand only in some frames
    assert np.isnan(frames[:, 522:543]).all()
    left_missing = np.isnan(frames[:, 468:489]).all(axis=(1, 2))
    assert 0 < left_missing.sum() < 105
    assert not np.isnan(frames[:, :468]).any()  # the face is always there
    for f in sorted((sample / "unlabeled").glob("*.parquet")):
        np.testing.assert_array_equal(kaggle.read_landmarks(f), kaggle.load_relevant_data_subset(f))


def test_written_files_have_the_real_schema(sample: Path, tmp_path: Path) -> None:
    real = kaggle.read_landmarks(SAMPLE_FILE)
    out = tmp_path / "x.parquet"
    kaggle.write_landmarks(out, real, first_frame=103)
    assert pq.read_schema(out).remove_metadata().equals(pq.read_schema(SAMPLE_FILE).remove_metadata())
    assert pq.read_metadata(out).schema.equals(pq.read_metadata(SAMPLE_FILE).schema)  # physical types
    ours, theirs = pq.read_table(out), pq.read_table(SAMPLE_FILE)
    for col in ("frame", "row_id", "type", "landmark_index"):
        assert ours.column(col).equals(theirs.column(col)), col
    np.testing.assert_array_equal(kaggle.read_landmarks(out), real)


def _write_table(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "file not found"),
        ("truncated", "not a readable parquet file"),
        ("text", "not a readable parquet file"),
        ("empty", "no rows"),
        ("no_z", "missing column(s) z"),
        ("string_x", "column 'x' has type string"),
        ("ragged", "not a multiple of 543"),
    ],
)
def test_bad_files_give_a_reason(tmp_path: Path, case: str, reason: str) -> None:
    good = kaggle.frames_table(random_frames(np.random.default_rng(0), 3))
    path = tmp_path / f"{case}.parquet"
    if case == "truncated":
        _write_table(path, good)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "text":
        path.write_text("path,participant_id\n")
    elif case == "empty":
        _write_table(path, good.slice(0, 0))
    elif case == "no_z":
        _write_table(path, good.drop_columns(["z"]))
    elif case == "string_x":
        _write_table(path, good.set_column(4, "x", pa.array(["a"] * len(good))))
    elif case == "ragged":
        _write_table(path, good.slice(0, 543 * 2 + 7))
    with pytest.raises(kaggle.BadFile, match=reason.replace("(", r"\(").replace(")", r"\)")):
        kaggle.read_landmarks(path)


def test_train_csv_with_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("path,sequence_id,sign\na.parquet,1,x\n")
    with pytest.raises(UserError, match=r"train.csv: missing column\(s\) participant_id"):
        kaggle.read_train_csv(tmp_path)


def test_sign_map_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sign_to_prediction_index_map.json: file not found"):
        kaggle.read_sign_map(tmp_path)
    (tmp_path / kaggle.SIGN_MAP).write_text('{"a": 0, "b": 2}')
    with pytest.raises(UserError, match="indices must be 0..1"):
        kaggle.read_sign_map(tmp_path)
    (tmp_path / kaggle.SIGN_MAP).write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        kaggle.read_sign_map(tmp_path)
