"""The Kaggle asl-signs file format: train.csv, landmark parquet files, the sign map.

Layout of a data directory:
    train.csv                                   path, participant_id, sequence_id, sign
    train_landmark_files/<pid>/<sid>.parquet    543 rows per frame
    sign_to_prediction_index_map.json           {"sign": index}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.data.landmarks import N_LANDMARKS, PARTS
from ablate.errors import UserError, first_line

TRAIN_CSV = "train.csv"
SIGN_MAP = "sign_to_prediction_index_map.json"
CSV_COLUMNS = ("path", "participant_id", "sequence_id", "sign")

# The schema of the competition's parquet files, read off the real sample (pyarrow 8 wrote them).
SCHEMA = pa.schema(
    [
        ("frame", pa.int16()),
        ("row_id", pa.string()),
        ("type", pa.string()),
        ("landmark_index", pa.int16()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("z", pa.float64()),
    ]
)
XYZ = ["x", "y", "z"]


class BadFile(Exception):
    """A landmark file that cannot be used; the message is the reason."""


def load_relevant_data_subset(path: str | os.PathLike[str]) -> np.ndarray:
    """The competition's own reference loader (pandas), kept as the ground truth to compare with."""
    import pandas as pd

    data = pd.read_parquet(path, columns=XYZ)
    n_frames = int(len(data) / N_LANDMARKS)
    return data.values.reshape(n_frames, N_LANDMARKS, len(XYZ)).astype(np.float32)


def check_schema(schema: pa.Schema) -> None:
    """Raise BadFile unless x, y, z are float columns and the known columns have their types."""
    names = set(schema.names)
    missing = [c for c in XYZ if c not in names]
    if missing:
        raise BadFile(f"missing column(s) {', '.join(missing)}; expected {', '.join(SCHEMA.names)}")
    for f in SCHEMA:
        if f.name in names:
            got = schema.field(f.name).type
            ok = pa.types.is_floating(got) if f.name in XYZ else got == f.type
            if not ok:
                raise BadFile(f"column {f.name!r} has type {got}, expected {f.type}")


def read_landmarks(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one landmark file as float32 [n_frames, 543, 3], NaNs kept, like the reference loader.

    Reads only the x, y, z columns with pyarrow. Raises BadFile with a reason for a missing,
    truncated, empty or wrong-schema file.
    """
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise BadFile("file not found") from None
    except PermissionError:
        raise BadFile("cannot read (Permission denied)") from None
    except IsADirectoryError:
        raise BadFile("is a directory, not a landmark file") from None
    except (pa.ArrowException, OSError) as e:
        raise BadFile(f"not a readable parquet file ({first_line(e)})") from None
    check_schema(pf.schema_arrow)
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise BadFile("no rows")
    if n_rows % N_LANDMARKS:
        raise BadFile(f"{n_rows} rows is not a multiple of {N_LANDMARKS} landmarks per frame")
    try:
        table = pf.read(columns=XYZ, use_threads=False)
    except (pa.ArrowException, OSError) as e:
        raise BadFile(f"truncated or corrupt data ({first_line(e)})") from None
    cols = [table.column(c).to_numpy().astype(np.float32, copy=False) for c in XYZ]
    return np.stack(cols, axis=-1).reshape(-1, N_LANDMARKS, 3)


def _frame_layout() -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Per-frame constants: type names, '-<type>-<index>' suffixes, landmark indices (543 each)."""
    types = [name for name, _, n in PARTS for _ in range(n)]
    index = np.concatenate([np.arange(n, dtype=np.int16) for _, _, n in PARTS])
    suffixes = [f"-{t}-{i}" for t, i in zip(types, index)]
    return pa.array(types, pa.string()), pa.array(suffixes, pa.string()), index


_TYPES, _SUFFIXES, _INDEX = _frame_layout()


def _tiled(values: pa.Array, n_frames: int) -> pa.Array:
    """`values` repeated n_frames times, as a plain string array (via a dictionary: no Python loop)."""
    idx = pa.array(np.tile(np.arange(len(values), dtype=np.int32), n_frames))
    return pa.DictionaryArray.from_arrays(idx, values).cast(pa.string())


def frames_table(frames: np.ndarray, first_frame: int = 0) -> pa.Table:
    """Landmarks [T, 543, 3] as a table in the competition schema (row_id '<frame>-<type>-<index>')."""
    import pyarrow.compute as pc

    n_frames = frames.shape[0]
    frame_no = pa.array(np.repeat(np.arange(first_frame, first_frame + n_frames, dtype=np.int16), N_LANDMARKS))
    row_id = pc.binary_join_element_wise(frame_no.cast(pa.string()), _tiled(_SUFFIXES, n_frames), "")
    flat = frames.reshape(-1, 3).astype(np.float64)
    arrays = [frame_no, row_id, _tiled(_TYPES, n_frames), pa.array(np.tile(_INDEX, n_frames)),
              pa.array(flat[:, 0]), pa.array(flat[:, 1]), pa.array(flat[:, 2])]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_landmarks(path: str | os.PathLike[str], frames: np.ndarray, first_frame: int = 0) -> None:
    """Write landmarks [T, 543, 3] as a competition-format parquet file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(frames_table(frames, first_frame), tmp)
    os.replace(tmp, path)


def read_sign_map(data_dir: Path) -> dict[str, int]:
    """The sign -> index map of a data directory; a UserError names the file and what is wrong."""
    return read_sign_map_file(data_dir / SIGN_MAP)


def read_sign_map_file(path: Path) -> dict[str, int]:
    """A sign -> index JSON map (indices 0..n-1, each once); a UserError says what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (expected the sign -> index JSON map)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected the sign -> index JSON map)") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in raw.items()
    ):
        raise UserError(f"{path}: expected an object mapping sign names to integer indices")
    if sorted(raw.values()) != list(range(len(raw))):
        raise UserError(f"{path}: indices must be 0..{len(raw) - 1}, each used once")
    return raw


def read_train_csv(data_dir: Path) -> "pa.Table":
    """train.csv as an Arrow table with the four competition columns, checked."""
    import pyarrow.csv as pacsv

    path = data_dir / TRAIN_CSV
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected a Kaggle asl-signs data directory)")
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={"path": pa.string(), "sign": pa.string(),
                              "participant_id": pa.int64(), "sequence_id": pa.int64()}
            ),
        )
    except pa.ArrowInvalid as e:
        raise UserError(f"{path}: cannot parse ({first_line(e)})") from None
    except OSError as e:  # pyarrow's errors name no file: say which
        raise UserError(f"{path}: cannot read ({e.strerror or first_line(e)})") from None
    missing = [c for c in CSV_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}"
        )
    for c in CSV_COLUMNS:
        if table.column(c).null_count:
            raise UserError(f"{path}: column {c!r} has {table.column(c).null_count} empty value(s)")
    return table.select(list(CSV_COLUMNS))
