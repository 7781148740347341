"""The motion model of the synthetic data: signs, participants, and one sequence [T, 543, 3].

A sign is a point in a small "phonological" parameter space of the dominant hand: a location
(wrist centre), a movement (3 harmonics of a smooth wrist path), a handshape (3 keyframes of five
finger flexions, spread and thumb abduction) and an orientation (3 keyframes of roll, yaw, pitch).
Each group is drawn from a shared inventory plus a sign-specific deviation, so signs share parts
and are confusable; `difficulty` shrinks the deviation and scales the perturbations, jitter and
hand dropout. A participant adds their own version of each sign (a perturbation of the parameters
that is stable across their repetitions), a style (speed, movement size, signing height), a body
position and scale, a camera tilt and possibly left-handedness; each repetition adds a smaller
perturbation, a time warp, jitter and runs of undetected hands. See synth.py for the planted
effects.

Every random draw comes from a numpy Generator seeded by (seed, purpose, indices), so one sequence
does not depend on which others are generated, or in which process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ablate.data import synth_body as body
from ablate.data.landmarks import FACE, LEFT_HAND, N_LANDMARKS, POSE, RIGHT_HAND, mirror
from ablate.errors import UserError

N_NAMES = 250  # signs available (the competition's sign names)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The defaults make a fast demo (720 sequences); the competition's size is
    n_signs=250, n_participants=21, reps=18 (94,500 sequences)."""

    n_signs: int = 12  # the 2-core demo default; full size: 250 signs, 21 participants, 18 reps
    n_participants: int = 10
    reps: int = 6  # sequences per participant per sign
    seed: int = 0
    difficulty: float = 1.0  # 0 = easy (distinct signs, little noise); higher = harder
    left_handed_share: float = 0.3  # participants who sign mirrored (rounded to a whole number)
    two_handed_share: float = 0.35  # signs in which the non-dominant hand moves too
    participant_effect: float = 1.0  # size of each participant's own version of each sign
    scale_spread: float = 0.25  # std of the participants' log body scale in the image
    tilt_deg: float = 12.0  # std of the participants' camera tilt, degrees
    # Effect 2 in a form per-sequence normalisation keeps: a share of the right-handed participants
    # film with the camera rolled by +-tilted_deg on top of their tilt above (0: none, the default
    # set as it always was; the known-answers benchmark plants it)
    tilted_share: float = 0.0
    tilted_deg: float = 25.0
    z_noise: float = 1.0  # size of the (signal-free) noise on z
    long_share: float = 0.025  # recordings with long idle stretches (250-600 frames)

    def __post_init__(self) -> None:
        floats = ("difficulty", "left_handed_share", "two_handed_share", "participant_effect", "scale_spread",
                  "tilt_deg", "tilted_share", "tilted_deg", "z_noise", "long_share")
        bad = [f"{f}={getattr(self, f)!r}" for f in floats if not math.isfinite(getattr(self, f))]
        if bad:
            raise UserError(f"synthetic data: {', '.join(bad)}: expected a finite number")
        checks: list[tuple[Callable[[], bool], str]] = [  # in order, each only once those before it hold
            (lambda: 1 <= self.n_signs <= N_NAMES, f"n_signs must be 1..{N_NAMES}"),
            (lambda: 1 <= self.n_participants <= 1000, "n_participants must be 1..1000"),
            (lambda: 1 <= self.reps <= 1000, "reps must be 1..1000"),
            (lambda: self.seed >= 0, "seed must be >= 0"),
            (lambda: 0.0 <= self.difficulty <= 5.0, "difficulty must be in 0..5"),
            (lambda: 0.0 <= self.left_handed_share <= 1.0, "left_handed_share must be in 0..1"),
            (lambda: 0.0 <= self.two_handed_share <= 1.0, "two_handed_share must be in 0..1"),
            (lambda: 0.0 <= self.long_share <= 1.0, "long_share must be in 0..1"),
            (lambda: 0.0 <= self.tilted_share <= 1.0 and 0.0 <= self.tilted_deg <= 90.0,
             "tilted_share must be in 0..1 and tilted_deg in 0..90"),
            (lambda: round(self.left_handed_share * self.n_participants)
             + round(self.tilted_share * self.n_participants) <= self.n_participants,
             "left-handed and tilted participants together must not outnumber the participants"),
            (lambda: min(self.participant_effect, self.scale_spread, self.tilt_deg, self.z_noise) >= 0,
             "participant_effect, scale_spread, tilt_deg and z_noise must be >= 0"),
        ]
        for ok, message in checks:
            if not ok():
                raise UserError(f"synthetic data: {message}")

    @property
    def n_sequences(self) -> int:
        return self.n_signs * self.n_participants * self.reps


# Sign parameter vector: slices of the groups and the spread of each entry (body units, radians,
# or [0, 1] for handshapes). Keyframes are at tau = 0, 0.5, 1.
LOC, MOV, SHAPE, ORIENT = slice(0, 2), slice(2, 14), slice(14, 35), slice(35, 44)
N_PARAMS = 44
SPREAD = np.concatenate([[0.5, 0.5], np.repeat([0.35, 0.35 / 2, 0.35 / 3], 4), np.full(21, 0.35),
                         np.tile([0.5, 0.5, 0.4], 3)])
INVENTORY = 6  # entries per group shared by all signs
MAX_FRAMES = 600
LONG_FRAMES = (250, MAX_FRAMES)  # log-uniform total length of a long recording
REST = np.array([-0.9, 2.6])  # right hand at rest: below the bottom of the image


def _rng(cfg: SynthConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *key])


def _draw_group(rng: np.random.Generator, group: slice) -> np.ndarray:
    n = group.stop - group.start
    if group == LOC:  # in front of the body, on the dominant side, chest to forehead
        return np.array([rng.uniform(-0.9, 0.1), rng.uniform(-1.3, 0.8)])
    if group == SHAPE:  # fingers mostly straight or curled, rarely half-way
        return rng.beta(0.5, 0.5, n)
    return rng.normal(0.0, SPREAD[group])


@lru_cache(maxsize=4096)
def sign_params(cfg: SynthConfig, sign: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(dominant-hand parameters [44], other hand): the other hand is an empty array for a
    one-handed sign, None for a symmetric two-handed one (it mirrors the dominant hand), or
    [12] = location, handshape, orientation of a still base hand."""
    rng = _rng(cfg, 1, sign)
    own = 1.0 / (1.0 + 2.0 * cfg.difficulty)  # share of the sign-specific deviation
    theta = np.empty(N_PARAMS)
    for g, group in enumerate((LOC, MOV, SHAPE, ORIENT)):
        shared = _draw_group(_rng(cfg, 0, g, int(rng.integers(INVENTORY))), group)
        theta[group] = (1 - own) * shared + own * _draw_group(rng, group)
    other: np.ndarray | None = np.empty(0)
    if rng.random() < cfg.two_handed_share:
        if rng.random() < 0.6:  # symmetric: the other hand mirrors the dominant one, on its side
            theta[0] = -0.35 - abs(theta[0] + 0.35)
            other = None
        else:  # base: the other hand holds a still shape in front of the chest
            other = np.concatenate([[rng.uniform(-0.1, 0.6), rng.uniform(-0.3, 0.7)],
                                    rng.beta(0.5, 0.5, 7), rng.normal(0.0, 0.4, 3)])
    for a in (theta, other):  # cached and shared: nobody may change them
        if a is not None:
            a.flags.writeable = False
    return theta, other


@dataclass(frozen=True)
class Participant:
    """A participant's style, fixed across all their sequences."""

    left_handed: bool
    speed: float  # > 1 = slower (more frames)
    size: float  # movement amplitude factor
    height: float  # offset of the signing space, body units
    scale: float  # image units per body unit
    tilt: float  # camera roll, radians
    centre: tuple[float, float]  # neck position in the image
    rest_v: float  # where the idle hand rests (v); below ~1.4 it is inside the image
    dropout: float  # typical share of frames with the dominant hand undetected


@lru_cache(maxsize=1024)
def participant(cfg: SynthConfig, p: int) -> Participant:
    """Participant p's style; exactly round(left_handed_share * n_participants) are left-handed, and
    round(tilted_share * n_participants) others film with a rolled camera."""
    n_left = round(cfg.left_handed_share * cfg.n_participants)
    lefties = _rng(cfg, 2).permutation(cfg.n_participants)[:n_left]
    rng = _rng(cfg, 3, p)
    return Participant(
        left_handed=bool(p in lefties),
        speed=float(np.exp(rng.normal(0.0, 0.2))),
        size=float(np.exp(rng.normal(0.0, 0.12))),
        height=float(rng.normal(0.0, 0.12)),
        scale=float(0.27 * np.exp(rng.normal(0.0, cfg.scale_spread))),
        tilt=float(np.radians(rng.normal(0.0, cfg.tilt_deg) + planted_roll(cfg, p))),
        centre=(float(rng.normal(0.5, 0.04)), float(rng.normal(0.62, 0.04))),
        rest_v=float(rng.uniform(1.0, 3.0)),
        dropout=float(rng.uniform(0.02, 0.2)),
    )


def planted_roll(cfg: SynthConfig, p: int) -> float:
    """The planted camera roll of participant p, degrees: +-tilted_deg for the tilted ones (chosen
    among the right-handed, so the two effects can be told apart), else 0. Random streams of its
    own (purpose 8), so with tilted_share 0 every other number of the set is what it was before the
    knob existed. numpy ignores trailing zeros in a seed, so participant 0's sign comes from the
    stream that chose the tilted participants; a quirk kept because the measured sets depend on it."""
    n_tilted = round(cfg.tilted_share * cfg.n_participants)
    if n_tilted == 0:
        return 0.0
    lefties = _rng(cfg, 2).permutation(cfg.n_participants)[:round(cfg.left_handed_share * cfg.n_participants)]
    right = np.setdiff1d(np.arange(cfg.n_participants), lefties)
    if p not in _rng(cfg, 8).permutation(right)[:n_tilted]:
        return 0.0
    return float(cfg.tilted_deg * _rng(cfg, 8, p).choice([-1.0, 1.0]))


def frame_counts(cfg: SynthConfig, p: int, sign: int, rep: int) -> tuple[int, int, int]:
    """(idle frames before, frames of the sign itself, idle frames after) of one sequence."""
    rng = _rng(cfg, 5, p, sign, rep)
    base = _rng(cfg, 6, sign).integers(14, 32)  # the sign's own duration at normal speed
    active = int(np.clip(round(base * participant(cfg, p).speed * np.exp(rng.normal(0, 0.15))), 6, 200))
    pre, post = 1 + rng.geometric(0.35, 2)
    if rng.random() < cfg.long_share:  # a long recording: the sign somewhere inside a long idle
        total = int(np.exp(rng.uniform(*np.log(LONG_FRAMES))))
        pre = int(rng.integers(0, total - active))
        post = total - active - pre
    return int(pre), active, int(min(post, MAX_FRAMES - active - pre))


def sequence_length(cfg: SynthConfig, p: int, sign: int, rep: int) -> int:
    """Number of frames of one sequence (cheap: no landmarks are made)."""
    return sum(frame_counts(cfg, p, sign, rep))


def _smooth(rng: np.random.Generator, t: np.ndarray, dims: int, amp: float) -> np.ndarray:
    """[T, dims] slow random wobble: two sinusoids per dimension, periods of 0.5-3 s at 30 fps."""
    freq = rng.uniform(2 * np.pi / 90, 2 * np.pi / 15, (2, dims))
    phase = rng.uniform(0, 2 * np.pi, (2, dims))
    return amp * np.sin(t[:, None, None] * freq + phase).sum(1) / 2


def _keyframes(values: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Interpolate 3 keyframes [3, k] (at tau 0, 0.5, 1) smoothly at tau [T] -> [T, k]."""
    x = np.clip(2 * tau, 0, 2)
    i = np.minimum(x.astype(int), 1)
    w = x - i
    w = w * w * (3 - 2 * w)  # smoothstep: no velocity jump at the keyframes
    return values[i] * (1 - w[:, None]) + values[i + 1] * w[:, None]


def _dropout(rng: np.random.Generator, t: int, missing: float, mean_run: float) -> np.ndarray:
    """Boolean [T]: True where the hand is undetected, in runs (two-state Markov chain)."""
    missing = float(np.clip(missing, 0.0, 0.97))
    to_present = 1.0 / mean_run
    to_missing = missing * to_present / (1.0 - missing)
    u = rng.random(t)
    out = np.empty(t, dtype=bool)
    state = rng.random() < missing
    for k in range(t):
        out[k] = state
        state = u[k] >= to_present if state else u[k] < to_missing
    return out


def _with_idle(active: np.ndarray, pre: int, post: int, rest: np.ndarray, n_move: int) -> np.ndarray:
    """Wrist path [pre + active + post, 2]: at rest, moving up in n_move frames, the sign, back."""
    w = np.linspace(0, 1, n_move + 2)[1:-1]
    w = w * w * (3 - 2 * w)
    up = rest + w[:, None] * (active[0] - rest)
    down = active[-1] + w[:, None] * (rest - active[-1])
    before = np.concatenate([np.repeat(rest[None], max(pre - n_move, 0), 0), up])[-pre:] if pre else up[:0]
    after = np.concatenate([down, np.repeat(rest[None], max(post - n_move, 0), 0)])[:post]
    return np.concatenate([before, active, after])


def _soft_clamp(uv: np.ndarray) -> np.ndarray:
    """Keep a wrist path within reach: from the far shoulder to below the chest, up to the forehead."""
    centre, half = np.array([-0.4, -0.3]), np.array([1.3, 1.5])
    return centre + half * np.tanh((uv - centre) / half)


def synthesize(cfg: SynthConfig, p: int, sign: int, rep: int) -> np.ndarray:
    """Landmarks float32 [T, 543, 3] of repetition `rep` of `sign` by participant `p`, NaN hands kept."""
    d, part = cfg.difficulty, participant(cfg, p)
    theta0, other = sign_params(cfg, sign)
    own = _rng(cfg, 4, p, sign)  # this participant's version of the sign: the same in every rep
    rng = _rng(cfg, 7, p, sign, rep)
    s_part, s_rep = 0.6 * d * cfg.participant_effect, 0.2 * d
    theta = theta0 + SPREAD * (s_part * own.standard_normal(N_PARAMS) + s_rep * rng.standard_normal(N_PARAMS))
    pre, active, post = frame_counts(cfg, p, sign, rep)
    n = pre + active + post
    tt = np.arange(n, dtype=float)
    x = np.linspace(0.0, 1.0, active)
    tau = x + rng.uniform(-0.3, 0.3) * np.sin(np.pi * x) / np.pi  # monotone time warp

    # Dominant (right) hand during the sign, then idle frames around it.
    harm = np.arange(1, 4)
    mov = theta[MOV].reshape(3, 2, 2)  # harmonic, (sin, cos), (u, v)
    path = theta[LOC] + np.array([0.0, part.height]) + part.size * (
        np.sin(np.pi * tau[:, None] * harm) @ mov[:, 0] + np.cos(np.pi * tau[:, None] * harm) @ mov[:, 1])
    path = _soft_clamp(path)
    n_move = int(rng.integers(3, 7))
    pad = ((pre, post), (0, 0))
    r_wrist = _with_idle(path, pre, post, REST + rng.normal(0, 0.1, 2), n_move)
    r_shape = np.pad(np.clip(_keyframes(theta[SHAPE].reshape(3, 7), tau), 0, 1), pad, mode="edge")
    r_orient = np.pad(_keyframes(theta[ORIENT].reshape(3, 3), tau), pad, mode="edge")

    # Non-dominant (left) hand: resting, mirroring the dominant hand, or holding a base shape.
    l_rest = np.array([-REST[0], part.rest_v]) + rng.normal(0, 0.1, 2)
    if other is None:
        lag = _smooth(rng, tt[:active], 2, 0.05)
        l_path = path * np.array([-1.0, 1.0]) + lag
        l_wrist, l_shape, l_orient = _with_idle(l_path, pre, post, l_rest, n_move), r_shape, r_orient
    elif other.size:
        base = other + 0.3 * (s_part * own.standard_normal(12) + s_rep * rng.standard_normal(12))
        still = base[:2] + np.array([0.0, part.height]) + _smooth(rng, tt[:active], 2, 0.04)
        l_wrist = _with_idle(still, pre, post, l_rest, n_move)
        l_shape = np.repeat(np.clip(base[None, 2:9], 0, 1), n, 0)
        l_orient = np.repeat(base[None, 9:], n, 0)
    else:
        l_wrist = l_rest + _smooth(rng, tt, 2, 0.08)
        l_shape = np.repeat([[0.4, 0.4, 0.4, 0.4, 0.4, 0.3, 0.3]], n, 0)
        l_orient = np.repeat([[0.0, 0.3, 0.0]], n, 0)
    r_hand = body.right_hand(r_wrist, r_shape, r_orient)
    l_hand = body.left_hand(l_wrist, l_shape, l_orient)

    # Face and pose: the head wobbles, the body sways, the arms follow the hands.
    sway, head = _smooth(rng, tt, 2, 0.03)[:, None], _smooth(rng, tt, 2, 0.04)[:, None]
    face = body.FACE_UV + head + sway
    pose = np.repeat(body.POSE_UV[None], n, 0) + sway
    pose[:, :11] += head
    pose[:, 16], pose[:, 15] = r_hand[:, 0], l_hand[:, 0]
    pose[:, 14] = body.elbow(body.POSE_UV[12], r_hand[:, 0] - sway[:, 0]) + sway[:, 0]
    pose[:, 13] = body.elbow(body.POSE_UV[11], l_hand[:, 0] - sway[:, 0]) + sway[:, 0]
    pose[:, [18, 20, 22]] = r_hand[:, [17, 5, 4]]
    pose[:, [17, 19, 21]] = l_hand[:, [17, 5, 4]]
    uv = np.empty((n, N_LANDMARKS, 2))
    uv[:, slice(*FACE)], uv[:, slice(*POSE)] = face, pose
    uv[:, slice(*LEFT_HAND)], uv[:, slice(*RIGHT_HAND)] = l_hand, r_hand
    uv += rng.normal(0.0, 0.008 * (0.4 + d), uv.shape)  # detector jitter

    # Camera: the participant's position, scale and tilt, varied a little per recording.
    scale = part.scale * np.exp(rng.normal(0, 0.03))
    tilt = part.tilt + np.radians(rng.normal(0, 1.0))
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    out = np.empty((n, N_LANDMARKS, 3))
    out[..., :2] = np.array(part.centre) + rng.normal(0, 0.01, 2) + scale * uv @ rot.T
    # z: a fixed depth per landmark plus noise (a drift per frame and jitter per point) that
    # carries nothing about the sign.
    z_tmpl = np.concatenate([body.FACE_Z, body.HAND_Z, body.POSE_Z, body.HAND_Z])
    z_drift = _smooth(rng, tt, 1, 0.06) + rng.normal(0, 0.03, (n, 1))
    out[..., 2] = z_tmpl + cfg.z_noise * (z_drift + rng.normal(0.0, 0.08, (n, N_LANDMARKS)))

    # Undetected hands: runs of dropout, more for the non-dominant hand, and any hand whose wrist
    # is outside the image.
    miss_r = part.dropout * (0.5 + 1.3 * d) * rng.uniform(0.5, 1.5)
    miss_l = 0.6 if other is not None and not other.size else min(0.15 + 2 * miss_r, 0.8)
    for rows, missing in ((RIGHT_HAND, miss_r), (LEFT_HAND, miss_l)):
        wrist_xy = out[:, rows[0], :2]
        lost = _dropout(rng, n, missing, 3.0) | (wrist_xy > 1).any(1) | (wrist_xy < 0).any(1)
        out[lost, rows[0]:rows[1]] = np.nan
    out = out.astype(np.float32)
    return mirror(out) if part.left_handed else out
