"""Synthetic asl-signs data: the Kaggle layout, made up, with known effects planted in it.

`generate(out_dir, SynthConfig(...))` writes train.csv, train_landmark_files/<pid>/<sid>.parquet
(the competition schema, 543 rows per frame, first frame number random) and
sign_to_prediction_index_map.json. Same config -> byte-identical files, whatever `workers`.
The motion model is in synth_motion.py (signs, participants, one sequence) and synth_body.py
(face, pose and hand skeletons).

Planted effects (how each should show up in an ablation; the README section "The synthetic data set" has the details):
1. Left-handed participants (`left_handed_share`, default 0.3): their sequences are right-handed
   ones passed through landmarks.mirror, so horizontal-flip augmentation exactly undoes it ->
   hflip augmentation helps, most on left-handed validation participants.
2. Participant body scale (`scale_spread`, log-std 0.25) and camera tilt (`tilt_deg`, std 12
   degrees), fixed per participant. Per-sequence normalisation (seed828) removes the scale, and a
   12-degree tilt was too small to find, so the effect that an ablation finds is the rolled camera:
   `tilted_share` of the participants (off by default; known_answers.py plants 0.3) film rolled by
   +-`tilted_deg` (25) -> rotation augmentation helps, most on the tilted validation participants.
3. z carries no class signal: a fixed depth per landmark plus large noise (`z_noise`) -> a feature
   set without z does better.
4. Each participant has their own version of each sign, stable across their repetitions
   (`participant_effect`) -> random (ungrouped) folds score higher than participant-grouped folds;
   only the grouped figure is honest.
`difficulty` (default 1.0, 0 = easy) shrinks the differences between signs (which share
location, movement, handshape and orientation from small inventories) and scales the participant
and repetition perturbations, the jitter and the hand dropout.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.data.kaggle import SIGN_MAP, TRAIN_CSV, write_landmarks
from ablate.data.synth_motion import SynthConfig, participant, sequence_length, synthesize
from ablate.data.participants import GENERATOR_FILE, generator_csv

__all__ = ["SIGN_NAMES", "SynthConfig", "Row", "plan", "lengths", "synthesize", "generate"]

# The competition's 250 signs, in the order of its sign_to_prediction_index_map.json.
SIGN_NAMES: tuple[str, ...] = (
    "TV", "after", "airplane", "all", "alligator", "animal", "another", "any", "apple", "arm",
    "aunt", "awake", "backyard", "bad", "balloon", "bath", "because", "bed", "bedroom", "bee",
    "before", "beside", "better", "bird", "black", "blow", "blue", "boat", "book", "boy",
    "brother", "brown", "bug", "bye", "callonphone", "can", "car", "carrot", "cat", "cereal",
    "chair", "cheek", "child", "chin", "chocolate", "clean", "close", "closet", "cloud",
    "clown", "cow", "cowboy", "cry", "cut", "cute", "dad", "dance", "dirty", "dog", "doll",
    "donkey", "down", "drawer", "drink", "drop", "dry", "dryer", "duck", "ear", "elephant",
    "empty", "every", "eye", "face", "fall", "farm", "fast", "feet", "find", "fine", "finger",
    "finish", "fireman", "first", "fish", "flag", "flower", "food", "for", "frenchfries",
    "frog", "garbage", "gift", "giraffe", "girl", "give", "glasswindow", "go", "goose",
    "grandma", "grandpa", "grass", "green", "gum", "hair", "happy", "hat", "hate", "have",
    "haveto", "head", "hear", "helicopter", "hello", "hen", "hesheit", "hide", "high", "home",
    "horse", "hot", "hungry", "icecream", "if", "into", "jacket", "jeans", "jump", "kiss",
    "kitty", "lamp", "later", "like", "lion", "lips", "listen", "look", "loud", "mad", "make",
    "man", "many", "milk", "minemy", "mitten", "mom", "moon", "morning", "mouse", "mouth",
    "nap", "napkin", "night", "no", "noisy", "nose", "not", "now", "nuts", "old", "on", "open",
    "orange", "outside", "owie", "owl", "pajamas", "pen", "pencil", "penny", "person", "pig",
    "pizza", "please", "police", "pool", "potty", "pretend", "pretty", "puppy", "puzzle",
    "quiet", "radio", "rain", "read", "red", "refrigerator", "ride", "room", "sad", "same",
    "say", "scissors", "see", "shhh", "shirt", "shoe", "shower", "sick", "sleep", "sleepy",
    "smile", "snack", "snow", "stairs", "stay", "sticky", "store", "story", "stuck", "sun",
    "table", "talk", "taste", "thankyou", "that", "there", "think", "thirsty", "tiger", "time",
    "tomorrow", "tongue", "tooth", "toothbrush", "touch", "toy", "tree", "uncle", "underwear",
    "up", "vacuum", "wait", "wake", "water", "wet", "weus", "where", "white", "who", "why",
    "will", "wolf", "yellow", "yes", "yesterday", "yourself", "yucky", "zebra", "zipper",
)


@dataclass(frozen=True)
class Row:
    """One sequence of the data set: its train.csv fields and what makes it."""

    path: str
    participant_id: int
    sequence_id: int
    sign: str
    p: int  # participant number 0..n_participants-1
    sign_index: int  # index into SIGN_NAMES (the motion depends on it, not on the subset drawn)
    rep: int
    first_frame: int


def signs(cfg: SynthConfig) -> list[str]:
    """The signs used (alphabetical, like the competition's map): a seeded subset of SIGN_NAMES."""
    pick = np.random.default_rng([cfg.seed, 20]).choice(len(SIGN_NAMES), cfg.n_signs, replace=False)
    return sorted(SIGN_NAMES[i] for i in pick)


def participant_ids(cfg: SynthConfig) -> list[int]:
    """Five-digit participant ids, increasing."""
    rng = np.random.default_rng([cfg.seed, 21])
    return sorted(int(i) for i in 10_000 + rng.choice(90_000, cfg.n_participants, replace=False))


def plan(cfg: SynthConfig) -> list[Row]:
    """Every sequence of the data set, in train.csv order (by sequence id, as in the competition)."""
    pids = participant_ids(cfg)
    # unique 9-10 digit ids in the uint32 range, like the real ones
    sids = 100_000_000 + np.random.default_rng([cfg.seed, 22]).choice(
        4_294_967_295 - 100_000_000, cfg.n_sequences, replace=False)
    # first frame numbers: never 0, as in the real files
    firsts = np.random.default_rng([cfg.seed, 23]).integers(1, 500, cfg.n_sequences)
    rows, k = [], 0
    for p, pid in enumerate(pids):
        for name in signs(cfg):
            s = SIGN_NAMES.index(name)
            for rep in range(cfg.reps):
                sid = int(sids[k])
                rows.append(Row(f"train_landmark_files/{pid}/{sid}.parquet", pid, sid, name, p, s, rep,
                                int(firsts[k])))
                k += 1
    return sorted(rows, key=lambda r: r.sequence_id)


def lengths(cfg: SynthConfig) -> np.ndarray:
    """Frame counts of all sequences in plan order, without making any landmarks (fast)."""
    return np.array([sequence_length(cfg, r.p, r.sign_index, r.rep) for r in plan(cfg)])


def left_handed(cfg: SynthConfig) -> list[int]:
    """Participant ids of the left-handed participants (ground truth of planted effect 1)."""
    return [pid for p, pid in enumerate(participant_ids(cfg)) if participant(cfg, p).left_handed]


def _write_one(task: tuple[SynthConfig, int, int, int, str, int]) -> int:
    cfg, p, s, rep, path, first = task
    frames = synthesize(cfg, p, s, rep)
    write_landmarks(path, frames, first)
    return frames.shape[0]


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def generate(
    out_dir: Path,
    cfg: SynthConfig = SynthConfig(),
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthetic data set in the Kaggle layout into out_dir and return a summary.

    The landmark files are written first (each atomically), train.csv last (tmp + rename), and an
    old train.csv is removed at the start, so an interrupted run never leaves a train.csv that
    names missing files. `progress(done, total)` is called as sequences are written.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TRAIN_CSV).unlink(missing_ok=True)
    rows = plan(cfg)
    tasks = [(cfg, r.p, r.sign_index, r.rep, str(out_dir / r.path), r.first_frame) for r in rows]
    n_frames: list[int] = []
    if workers <= 1:
        results = map(_write_one, tasks)
        pool = None
    else:  # spawn: safe whatever threads the caller runs (torch); same output as workers=1
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_write_one, tasks, chunksize=max(1, min(64, len(tasks) // (8 * workers))))
    try:
        for n in results:
            n_frames.append(n)
            if progress is not None:
                progress(len(n_frames), len(tasks))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    names = signs(cfg)
    _replace_text(out_dir / SIGN_MAP, json.dumps({name: i for i, name in enumerate(names)}))
    _replace_text(out_dir / GENERATOR_FILE, generator_csv(cfg))  # who is left-handed, scale, tilt: the truth
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "participant_id", "sequence_id", "sign"])
    writer.writerows((r.path, r.participant_id, r.sequence_id, r.sign) for r in rows)
    _replace_text(out_dir / TRAIN_CSV, buf.getvalue())
    t = np.array(n_frames)
    return {
        "out_dir": str(out_dir),
        "sequences": len(rows),
        "signs": len(names),
        "participants": cfg.n_participants,
        "left_handed": left_handed(cfg),
        "frames": {"total": int(t.sum()), "min": int(t.min()), "median": float(np.median(t)),
                   "mean": round(float(t.mean()), 1), "max": int(t.max()),
                   "over_384": int((t > 384).sum())},
        "seconds": round(time.perf_counter() - start, 2),
    }
