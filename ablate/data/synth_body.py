"""Body geometry for the synthetic data: face mesh, pose skeleton and hand skeleton templates.

Everything here is in BODY units: origin at the neck (midpoint of the shoulders), u to the image
right, v downwards, one unit = half the shoulder width. The camera transform to MediaPipe's
normalised image coordinates is applied later (synth_motion.py). The signer faces the camera and
the image is not mirrored, so the signer's RIGHT side is at negative u (as in the real data, where
pose 11, the left shoulder, has the larger x).
"""

from __future__ import annotations

import numpy as np

from ablate.data.landmarks import LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE

# MediaPipe face-mesh silhouette, clockwise in the image from the top of the forehead (checked
# against the real sample: the angles around the face centre increase monotonically).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE_TIP = 1
FACE_CENTRE = (0.0, -1.05)
FACE_HALF = (0.48, 0.62)  # half width, half height of the face oval


def _face_template() -> tuple[np.ndarray, np.ndarray]:
    """(uv [468, 2], z [468]) of a neutral face; eye and lip pairs are mirror images (u -> -u)."""
    cu, cv = FACE_CENTRE
    uv = np.zeros((468, 2))
    # Points not placed below: scattered inside the oval by a fixed generator (the same face for
    # every data set; only their spread matters).
    fixed = np.random.default_rng(20230224)
    r = np.sqrt(fixed.uniform(0, 0.8, 468))
    phi = fixed.uniform(0, 2 * np.pi, 468)
    uv[:, 0] = cu + FACE_HALF[0] * r * np.cos(phi)
    uv[:, 1] = cv + FACE_HALF[1] * r * np.sin(phi)
    ang = np.radians(-90 + 10 * np.arange(len(FACE_OVAL)))
    uv[list(FACE_OVAL)] = np.stack([cu + FACE_HALF[0] * np.cos(ang), cv + FACE_HALF[1] * np.sin(ang)], 1)
    uv[NOSE_TIP] = (cu, cv + 0.2)
    # Eye contours: position 0 outer corner, 1-7 lower lid outer -> inner, 8 inner corner,
    # 9-15 upper lid outer -> inner (MediaPipe's order; LEFT_EYE[k] mirrors RIGHT_EYE[k]).
    t = np.concatenate([[0.0], np.arange(1, 8) / 8, [1.0], np.arange(1, 8) / 8])
    lid = np.concatenate([[0.0], np.sin(np.pi * t[1:8]), [0.0], -np.sin(np.pi * t[9:])])
    eye_u = -(0.33 - 0.2 * t)  # right eye: outer corner at u = -0.33, inner at -0.13
    eye_v = cv - 0.12 + 0.045 * lid
    uv[RIGHT_EYE] = np.stack([eye_u, eye_v], 1)
    uv[LEFT_EYE] = np.stack([-eye_u, eye_v], 1)
    # Lips: both lists run right corner, upper lip (5 points to the midline, 5 beyond), left corner,
    # then the lower lip (right half, midline, left half); position k and 10 - k are mirror images.
    for ring, half_w, up, down in ((LIPS_OUTER, 0.17, 0.05, 0.065), (LIPS_INNER, 0.13, 0.012, 0.012)):
        k = np.arange(11)
        u = -half_w * np.cos(np.pi * k / 10)
        upper = np.stack([u, cv + 0.33 - up * np.sin(np.pi * k / 10)], 1)
        lower = np.stack([u, cv + 0.33 + down * np.sin(np.pi * k / 10)], 1)
        uv[ring[:11]] = upper
        uv[ring[11:]] = lower[1:10]  # the corners are shared with the upper lip
    # Depth: the middle of the face is closest to the camera (MediaPipe z: negative = closer).
    d2 = ((uv[:, 0] - cu) / FACE_HALF[0]) ** 2 + ((uv[:, 1] - cv) / FACE_HALF[1]) ** 2
    z = 0.06 * (d2 - 1.0)
    return uv, z


FACE_UV, FACE_Z = _face_template()

# Pose template (33 MediaPipe pose points): odd = signer's left = positive u.
_POSE_RIGHT_SIDE = {  # (u, v) of the signer's right-side point; its left partner is (-u, v)
    4: (-0.12, -1.17), 5: (-0.2, -1.17), 6: (-0.28, -1.17), 8: (-0.5, -1.08), 10: (-0.12, -0.72),
    12: (-1.0, 0.0), 14: (-1.3, 1.3), 16: (-1.1, 2.5), 18: (-1.1, 2.8), 20: (-1.05, 2.85),
    22: (-1.0, 2.75), 24: (-0.6, 2.7), 26: (-0.6, 4.3), 28: (-0.6, 5.9), 30: (-0.65, 6.05),
    32: (-0.5, 6.2),
}
POSE_UV = np.zeros((33, 2))
POSE_UV[0] = (0.0, -0.85)
for _i, (_u, _v) in _POSE_RIGHT_SIDE.items():
    POSE_UV[_i] = (_u, _v)
    POSE_UV[_i - 3 if _i <= 6 else _i - 1] = (-_u, _v)
# MediaPipe pose z is in roughly the same units as x, centred on the hips; the face is nearer.
POSE_Z = np.where(np.arange(33) <= 10, -1.2, np.where(np.arange(33) <= 22, -0.5, 0.1))

UPPER_ARM = 1.25  # body units
HAND_LEN = 0.9  # wrist to middle fingertip, body units

# Right hand, local frame: a = thumb side (image right for a right palm facing the camera),
# b = along the fingers, c = palm normal towards the camera. MCP joint (a, b) and phalanx lengths.
_FINGER_BASE = np.array([[0.11, 0.43], [0.0, 0.45], [-0.10, 0.42], [-0.19, 0.37]])
_FINGER_SEGS = np.array([[0.23, 0.14, 0.11], [0.25, 0.17, 0.13], [0.23, 0.15, 0.12], [0.18, 0.11, 0.10]])
_FINGER_FAN = np.radians([8.0, 0.0, -8.0, -16.0])  # base direction per unit of spread
_FLEX_ANGLES = np.radians([85.0, 100.0, 70.0])  # MCP, PIP, DIP at full flexion
_THUMB_BASE = np.array([0.10, 0.10])
_THUMB_SEGS = np.array([0.17, 0.14, 0.12])
_THUMB_FLEX = np.radians([30.0, 50.0, 50.0])
HAND_Z = np.concatenate([[0.0], -0.02 * np.arange(1, 21) ** 0.5])  # fingertips nearer the camera


def _rotation(roll: np.ndarray, yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """[T, 3, 3] = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in radians."""
    c, s = np.cos, np.sin
    one, zero = np.ones_like(roll), np.zeros_like(roll)
    rz = np.stack([c(roll), -s(roll), zero, s(roll), c(roll), zero, zero, zero, one], -1)
    ry = np.stack([c(yaw), zero, s(yaw), zero, one, zero, -s(yaw), zero, c(yaw)], -1)
    rx = np.stack([one, zero, zero, zero, c(pitch), -s(pitch), zero, s(pitch), c(pitch)], -1)
    t = roll.shape[0]
    return rz.reshape(t, 3, 3) @ ry.reshape(t, 3, 3) @ rx.reshape(t, 3, 3)


def right_hand(wrist: np.ndarray, shape: np.ndarray, orient: np.ndarray) -> np.ndarray:
    """21 right-hand keypoints [T, 21, 2] in body units (MediaPipe order: wrist, thumb 1-4,
    index 5-8, middle 9-12, ring 13-16, pinky 17-20).

    wrist [T, 2]; shape [T, 7] = flexion of thumb, index, middle, ring, pinky (0 straight,
    1 curled), finger spread, thumb abduction (all in [0, 1]); orient [T, 3] = roll (in the image
    plane), yaw, pitch in radians.
    """
    t = wrist.shape[0]
    pts = np.zeros((t, 21, 3))
    normal = np.array([0.0, 0.0, 1.0])
    for f in range(4):
        alpha = _FINGER_FAN[f] * (0.3 + 1.5 * shape[:, 5])
        d = np.stack([np.sin(alpha), np.cos(alpha), np.zeros(t)], -1)
        p = np.zeros((t, 3))
        p[:, :2] = _FINGER_BASE[f]
        base = 5 + 4 * f
        pts[:, base] = p
        phi = np.zeros(t)
        for j in range(3):
            phi = phi + _FLEX_ANGLES[j] * shape[:, f + 1]
            p = p + _FINGER_SEGS[f, j] * (np.cos(phi)[:, None] * d + np.sin(phi)[:, None] * normal)
            pts[:, base + 1 + j] = p
    beta = np.radians(25.0 + 45.0 * shape[:, 6])
    d = np.stack([np.sin(beta), np.cos(beta), np.zeros(t)], -1)
    towards_palm = np.array([-0.6, 0.0, 0.8])
    p = np.zeros((t, 3))
    p[:, :2] = _THUMB_BASE
    pts[:, 1] = p
    phi = np.zeros(t)
    for j in range(3):
        phi = phi + _THUMB_FLEX[j] * shape[:, 0]
        p = p + _THUMB_SEGS[j] * (np.cos(phi)[:, None] * d + np.sin(phi)[:, None] * towards_palm)
        pts[:, 2 + j] = p
    rotated = np.einsum("tij,tkj->tki", _rotation(orient[:, 0], orient[:, 1], orient[:, 2]), pts)
    out = np.empty((t, 21, 2))
    out[..., 0] = wrist[:, None, 0] + HAND_LEN * rotated[..., 0]
    out[..., 1] = wrist[:, None, 1] - HAND_LEN * rotated[..., 1]  # b points up, v points down
    return out


def left_hand(wrist: np.ndarray, shape: np.ndarray, orient: np.ndarray) -> np.ndarray:
    """The left hand: the mirror image (u -> -u) of a right hand rendered at the mirrored wrist."""
    flipped = wrist * np.array([-1.0, 1.0])
    out = right_hand(flipped, shape, orient)
    out[..., 0] *= -1.0
    return out


def elbow(shoulder: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """Projected elbow [T, 2] for a shoulder [2] and wrist [T, 2]: below the middle of the arm,
    dropping further the closer the hand is to the shoulder (the forearm comes towards the camera)."""
    half = np.linalg.norm(wrist - shoulder, axis=-1, keepdims=True) / 2
    drop = 0.8 * np.sqrt(np.maximum(UPPER_ARM**2 - half**2, 0.0))
    outward = np.array([0.3 * np.sign(shoulder[0]), 1.0]) / np.hypot(0.3, 1.0)
    return (shoulder + wrist) / 2 + drop * outward
