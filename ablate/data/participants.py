"""What each participant is like, derived from their landmarks (and, for synthetic data, what the
generator made them): the attributes the report's participant panel groups signers by.

Derived from the data itself, so that they exist for the real competition data too:
- dominant hand: the hand with more observed movement, i.e. the larger product of the share of
  frames in which it is detected and the mean distance its wrist moves per detected frame (image
  units); a signer's dominant hand is both seen more and moving more. The detection shares come
  from the cache index (every sequence); the movement from up to SAMPLE sequences per participant
  (the first ones by cache index: deterministic, and cheap on the full data set);
- median sequence length (frames);
- share of frames without any hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ablate.data.cache import Cache
from ablate.data.landmarks import LEFT_HAND_IDX, RIGHT_HAND_IDX
from ablate.errors import UserError

SAMPLE = 64  # sequences per participant read for the movement of the wrists
GENERATOR_FILE = "participants.csv"  # written by `ablate data synth` beside train.csv
GENERATOR_COLUMNS = ("participant_id", "left_handed", "scale", "tilt_deg", "speed", "roll_deg")
OPTIONAL_COLUMNS = {"roll_deg": "0"}  # files written before the planted roll existed lack it: none planted


def _wrist_motion(frames: np.ndarray, wrist: int) -> tuple[float, int]:
    """(sum of the wrist's frame-to-frame moves between consecutive detected frames, detected frames)."""
    xy = frames[:, wrist, :2].astype(np.float64)
    seen = ~np.isnan(xy).any(axis=1)
    both = seen[1:] & seen[:-1]
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    return float(steps[both].sum()), int(seen.sum())


def _movement(cache: Cache, items: np.ndarray) -> tuple[float, float]:
    """Mean wrist movement per detected frame of the left and the right hand over `items`."""
    totals = np.zeros((2, 2))
    for i in items:
        frames = np.asarray(cache.sequence(int(i)))
        for h, wrist in enumerate((LEFT_HAND_IDX[0], RIGHT_HAND_IDX[0])):
            moved, seen = _wrist_motion(frames, wrist)
            totals[h] += (moved, seen)
    return tuple(float(m / s) if s else 0.0 for m, s in totals)  # type: ignore[return-value]


def no_hand_shares(cache: Cache) -> dict[int, float]:
    """participant id -> the share of their frames in which no hand is detected."""
    frames = np.bincount(_codes(cache), weights=cache.lengths.astype(np.float64))
    none = np.bincount(_codes(cache), weights=np.asarray(cache.index.column("missing_both"), dtype=np.float64))
    ids = np.unique(cache.participants)
    return {int(pid): float(none[i] / frames[i]) if frames[i] else 0.0 for i, pid in enumerate(ids)}


def _codes(cache: Cache) -> np.ndarray:
    return np.unique(cache.participants, return_inverse=True)[1]


def participant_facts(cache: Cache) -> list[dict[str, Any]]:
    """One dict per participant (sorted by id): participant, n_sequences, dominant_hand, the
    evidence for it, median_length, no_hand_share; plus the generator's facts where known."""
    frames_of = cache.lengths.astype(np.float64)
    col = {c: np.asarray(cache.index.column(c), dtype=np.float64) for c in ("missing_left", "missing_right")}
    generated = generator_facts(cache)
    messy = no_hand_shares(cache)
    out = []
    for pid in np.unique(cache.participants):
        mine = np.flatnonzero(cache.participants == pid)
        frames = frames_of[mine].sum()
        seen = {h: 1.0 - col[f"missing_{h}"][mine].sum() / frames for h in ("left", "right")}
        move = dict(zip(("left", "right"), _movement(cache, mine[:SAMPLE]), strict=True))
        activity = {h: seen[h] * move[h] for h in seen}
        facts = {"participant": int(pid), "n_sequences": int(mine.size),
                 "dominant_hand": ("left" if activity["left"] > activity["right"] else
                                   "right" if activity["right"] > activity["left"] else "unknown"),
                 "left_seen": round(float(seen["left"]), 4), "right_seen": round(float(seen["right"]), 4),
                 "left_motion": round(move["left"], 5), "right_motion": round(move["right"], 5),
                 "median_length": float(np.median(frames_of[mine])),
                 "no_hand_share": round(messy[int(pid)], 4)}
        if generated is not None and int(pid) in generated:
            facts["generator"] = generated[int(pid)]
        out.append(facts)
    return out


def generator_facts(cache: Cache) -> dict[int, dict[str, Any]] | None:
    """The synthetic generator's own participant facts (left-handed, scale, tilt, speed), when the
    data is synthetic: from the configuration a `--cache-only` cache records, or from the
    participants.csv beside train.csv; None for other data."""
    from ablate.data.synth_cache import SOURCE_PREFIX

    source = str(cache.meta.get("source", ""))
    if source.startswith(SOURCE_PREFIX):
        from ablate.data.synth import SynthConfig

        return synth_facts(SynthConfig(**json.loads(source[len(SOURCE_PREFIX):])))
    path = Path(source) / GENERATOR_FILE
    return read_generator_file(path) if path.is_file() else None


def synth_facts(cfg: Any) -> dict[int, dict[str, Any]]:
    """participant id -> the generator's facts about them (SynthConfig `cfg`)."""
    from ablate.data.synth import participant_ids
    from ablate.data.synth_motion import participant, planted_roll

    out = {}
    for p, pid in enumerate(participant_ids(cfg)):
        who = participant(cfg, p)
        out[int(pid)] = {"left_handed": who.left_handed, "scale": round(who.scale, 4),
                         "tilt_deg": round(math.degrees(who.tilt), 2), "speed": round(who.speed, 3),
                         "roll_deg": planted_roll(cfg, p)}  # the planted part of tilt_deg
    return out


def generator_csv(cfg: Any) -> str:
    """participants.csv (beside train.csv): the generator's facts, one row per participant."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(GENERATOR_COLUMNS)
    for pid, facts in synth_facts(cfg).items():
        w.writerow([pid, int(facts["left_handed"]), facts["scale"], facts["tilt_deg"], facts["speed"], facts["roll_deg"]])
    return buf.getvalue()


def read_generator_file(path: Path) -> dict[int, dict[str, Any]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    absent = {k: v for k, v in OPTIONAL_COLUMNS.items() if k not in header}  # an older file: not a short row
    out = {}
    for i, row in enumerate(rows, start=2):
        row = {**absent, **row}
        try:
            out[int(row["participant_id"])] = {"left_handed": row["left_handed"] == "1", "scale": float(row["scale"]),
                                               "tilt_deg": float(row["tilt_deg"]), "speed": float(row["speed"]),
                                               "roll_deg": float(row["roll_deg"])}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: line {i}: expected columns {', '.join(GENERATOR_COLUMNS)} with a participant "
                            "id, 0/1 and numbers") from None
    return out


def sequence_table(cache: Cache, facts: list[dict[str, Any]]) -> np.ndarray:
    """Each sequence's participant as an index into `facts` (by cache index)."""
    ids = np.array([f["participant"] for f in facts])
    return np.searchsorted(ids, cache.participants)
