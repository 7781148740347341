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
