"""Per-sequence records of a study: each fold's validation predictions (in the trial) and the
study's sequence and participant tables (in the study), for the participant panel.

With ablate.study.records, the only code that reads or writes Optuna attributes; the attribute
names of these records live here. Arrays are stored as zlib-compressed base64 text inside user
attributes, so every worker, machine and report reaches them through the study's storage
(a journal file or PostgreSQL), with no artifact store to share.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

PREDICTIONS = "pred:"  # + step: a fold's validation predictions (see add_predictions)
SEQUENCES = "sequences"  # the study's per-sequence facts: participant index and label per cache index
PARTICIPANTS = "participants"  # the study's per-participant facts (ablate.data.participants)



def _pack(values: np.ndarray) -> str:
    """An array as compact text: zlib-compressed bytes in base64 (user attributes are JSON)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(values).tobytes(), 6)).decode("ascii")


def _unpack(text: str, dtype: type) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype)


@dataclass
class Predictions:
    """One fold's validation sequences: cache index, predicted class, probability of the true class."""

    index: np.ndarray  # int64
    predicted: np.ndarray  # int64
    p_true: np.ndarray  # float32 (stored as float16: 3 significant digits)


def encode(step: int, index: np.ndarray, predicted: np.ndarray, p_true: np.ndarray) -> tuple[str, dict[str, str]]:
    """(attribute name, value) of a fold's predictions: about 5 bytes per sequence before compression."""
    order = np.argsort(index, kind="stable")  # sorted indices compress to almost nothing as deltas
    idx = np.asarray(index, dtype=np.int64)[order]
    return f"{PREDICTIONS}{step}", {"index": _pack(np.diff(idx, prepend=0).astype(np.int32)),
                                    "predicted": _pack(np.asarray(predicted)[order].astype(np.uint16)),
                                    "p_true": _pack(np.asarray(p_true)[order].astype(np.float16))}


def add_predictions(trial: optuna.Trial, step: int, index: np.ndarray, predicted: np.ndarray,
                    p_true: np.ndarray) -> None:
    """Store a fold's predictions in the trial itself (see the module docstring)."""
    trial.set_user_attr(*encode(step, index, predicted, p_true))


def predictions(t: FrozenTrial) -> dict[int, Predictions]:
    """The stored predictions of a finished trial, by step (trials before this record: none)."""
    out = {}
    for key, v in t.user_attrs.items():
        if key.startswith(PREDICTIONS) and isinstance(v, dict):
            out[int(key[len(PREDICTIONS):])] = Predictions(
                np.cumsum(_unpack(v["index"], np.int32).astype(np.int64)),
                _unpack(v["predicted"], np.uint16).astype(np.int64),
                _unpack(v["p_true"], np.float16).astype(np.float32))
    return out


def write_sequences(study: optuna.Study, participant_index: np.ndarray, labels: np.ndarray,
                    participants: list[dict[str, Any]]) -> None:
    """The study's per-sequence facts (participant index into `participants`, label; by cache index)
    and its participant table; written once, by the process that creates the study."""
    study.set_user_attr(PARTICIPANTS, json.loads(json.dumps(participants)))
    study.set_user_attr(SEQUENCES, {"participant": _pack(participant_index.astype(np.uint16)),
                                    "label": _pack(labels.astype(np.uint16))})


def has_sequences(study: optuna.Study) -> bool:
    return SEQUENCES in study.user_attrs


def stored_for(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Whether the study `name` exists in `storage` with its sequence table."""
    try:
        return has_sequences(optuna.load_study(study_name=name, storage=storage))
    except KeyError:
        return False


def read_sequences(study: optuna.Study) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]] | None:
    """(participant index, label) per cache index and the participant table; None if not recorded."""
    ua = study.user_attrs
    if SEQUENCES not in ua:
        return None
    seq = ua[SEQUENCES]
    return (_unpack(seq["participant"], np.uint16).astype(np.int64), _unpack(seq["label"], np.uint16).astype(np.int64),
            list(ua.get(PARTICIPANTS, [])))
