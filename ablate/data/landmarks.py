"""The MediaPipe Holistic landmark layout of the asl-signs data (543 rows per frame).

Row order within a frame (competition data description): face 0-467, left_hand 468-488,
pose 489-521, right_hand 522-542. Face indices follow the MediaPipe face mesh, pose indices the
33-point MediaPipe pose model.
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 543
FACE = (0, 468)
LEFT_HAND = (468, 489)
POSE = (489, 522)
RIGHT_HAND = (522, 543)
# (type name, first row, count) in file order
PARTS: tuple[tuple[str, int, int], ...] = (
    ("face", 0, 468),
    ("left_hand", 468, 21),
    ("pose", 489, 33),
    ("right_hand", 522, 21),
)

LEFT_HAND_IDX = list(range(*LEFT_HAND))
RIGHT_HAND_IDX = list(range(*RIGHT_HAND))


def pose(i: int) -> int:
    """Row of MediaPipe pose landmark i (0 = nose, 11/12 shoulders, 15/16 wrists)."""
    return POSE[0] + i


# Face mesh points around each eye (16 each), listed so that position k of one eye mirrors
# position k of the other (MediaPipe FACEMESH_LEFT_EYE / FACEMESH_RIGHT_EYE contours).
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
# Outer lip contour, 20 points (MediaPipe FACEMESH_LIPS, outer ring).
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375]
# Inner lip contour, 20 points.
LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402, 318, 324]
# Left <-> right mirror pairs on the lips (points on the midline, 0/17/13/14, map to themselves).
_LIP_PAIRS = [
    (61, 291), (185, 409), (40, 270), (39, 269), (37, 267), (146, 375), (91, 321), (181, 405),
    (84, 314), (78, 308), (191, 415), (80, 310), (81, 311), (82, 312), (95, 324), (88, 318),
    (178, 402), (87, 317),
]
# Face mesh nose: the two alae (nostril wings), a mirror pair; tip 1 and 2 below it are on the midline.
NOSE_ALAE = (98, 327)
# Pose: 1-3 <-> 4-6 (eyes), 7<->8 ears, 9<->10 mouth, then 11..32 alternate left/right.
_POSE_PAIRS = [(1, 4), (2, 5), (3, 6), (7, 8), (9, 10)] + [(i, i + 1) for i in range(11, 33, 2)]
# Upper body pose points kept by the baseline: nose, shoulders, elbows, wrists, hips.
POSE_UPPER = [0, 11, 12, 13, 14, 15, 16, 23, 24]


def _mirror_permutation() -> np.ndarray:
    """perm[i] = the row that row i becomes when the image is mirrored (an involution)."""
    perm = np.arange(N_LANDMARKS)
    pairs: list[tuple[int, int]] = []
    pairs += list(zip(LEFT_HAND_IDX, RIGHT_HAND_IDX))
    pairs += list(zip(LEFT_EYE, RIGHT_EYE))
    pairs += _LIP_PAIRS
    pairs += [(pose(a), pose(b)) for a, b in _POSE_PAIRS]
    pairs += [NOSE_ALAE]
    for a, b in pairs:
        perm[a], perm[b] = b, a
    assert (perm[perm] == np.arange(N_LANDMARKS)).all(), "mirror map must be an involution"
    return perm


MIRROR = _mirror_permutation()


def mirror(frames: np.ndarray) -> np.ndarray:
    """Mirror raw landmarks [T, 543, 3] horizontally: x -> 1 - x and swap left/right rows.

    Coordinates are MediaPipe's normalised image coordinates, so 1 - x is the mirrored image.
    A left-handed signer mirrored this way looks like a right-handed one. NaNs stay NaN.
    """
    out = frames[:, MIRROR].copy()
    out[..., 0] = 1.0 - out[..., 0]
    return out


def _ring(upper: list[int], lower: list[int]) -> list[tuple[int, int]]:
    """A closed contour listed as its upper arc (corner to corner) and its lower arc (the points
    after the first corner to the point before the second): consecutive points, then the joins."""
    edges = list(zip(upper, upper[1:])) + list(zip(lower, lower[1:]))
    return edges + [(upper[0], lower[0]), (lower[-1], upper[-1])]


# MediaPipe's hand bones (21 points: wrist 0, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky
# 17-20), as (point, point) within one hand.
HAND_BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
              (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]


def _skeleton() -> list[tuple[int, int]]:
    """The landmark graph of the graph model, as pairs of rows: hand bones, the upper body's
    (shoulders, arms, hips; the pose nose to both shoulders as a neck), each hand's wrist to the
    pose wrist, the lip and eye contours as rings, the nose (tip, below it, both alae) and its
    tip to the upper lip and both inner eye corners, the inner lips to the outer at the midline,
    and the lower lip's centre to both shoulders (a neck, for sets without the pose nose)."""
    edges = [(h[0] + a, h[0] + b) for h in (LEFT_HAND, RIGHT_HAND) for a, b in HAND_BONES]
    edges += [(pose(a), pose(b)) for a, b in ((11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24),
                                              (23, 24), (0, 11), (0, 12))]
    edges += [(LEFT_HAND[0], pose(15)), (RIGHT_HAND[0], pose(16))]
    edges += _ring(LIPS_OUTER[:11], LIPS_OUTER[11:]) + _ring(LIPS_INNER[:11], LIPS_INNER[11:])
    edges += _ring(LEFT_EYE[:9], LEFT_EYE[9:]) + _ring(RIGHT_EYE[:9], RIGHT_EYE[9:])
    edges += [(1, 2), (2, NOSE_ALAE[0]), (2, NOSE_ALAE[1]), (1, 0), (1, 362), (1, 133), (13, 0), (14, 17)]
    edges += [(17, pose(11)), (17, pose(12))]
    return edges


SKELETON = _skeleton()
