"""Face alignment as in OpenFace 2.2's AU pipeline (our own implementation of the method).

A similarity transform (scale, rotation) maps the face's rigid landmarks onto the PDM's mean
shape x ``SIMILARITY_SCALE``; the PDM's fitted translation lands on the centre of a
``SIDE`` x ``SIDE`` image. Pixels outside the landmarks' triangulation are set to zero, with the
brow and upper-face outline moved up by ``BROW_LIFT`` pixels so that the forehead is kept.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.aus.openface.pdm import PDM, PDMParams

SIDE = 112
SIMILARITY_SCALE = 0.7
#: Landmarks that move little with expression (face outline, nose, eye corners), iBUG-68.
RIGID_POINTS = (1, 2, 3, 4, 12, 13, 14, 15, 27, 28, 29, 31, 32, 33, 34, 35, 36, 39, 40, 41, 42,
                45, 46, 47)  # fmt: skip
#: Points raised before masking: the outline's ends (0, 16) and the brows (17-26).
LIFTED_POINTS = (0, 16, *range(17, 27))
BROW_LIFT = 30.0


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2 x 2 scaled rotation that best maps centred ``source`` points onto centred ``target``."""
    src = source - source.mean(axis=0)
    dst = target - target.mean(axis=0)
    src_norm = np.sqrt((src**2).sum() / len(src))
    dst_norm = np.sqrt((dst**2).sum() / len(dst))
    u, _, vt = np.linalg.svd((src / src_norm).T @ (dst / dst_norm))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, d]) @ u.T
    return (dst_norm / src_norm) * rotation


def warp_matrix(landmarks: np.ndarray, params: PDMParams, pdm: PDM) -> np.ndarray:
    """The 2 x 3 affine map from image pixels to the aligned face."""
    rigid = list(RIGID_POINTS)
    target = pdm.mean[:, :2] * SIMILARITY_SCALE
    scale_rotation = similarity(landmarks[rigid], target[rigid])
    offset = np.array([SIDE / 2, SIDE / 2]) - scale_rotation @ np.asarray(params.translation)
    return np.hstack([scale_rotation, offset[:, None]])


def face_mask(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``SIDE`` x ``SIDE`` uint8 mask (1 inside) of the triangulated aligned landmarks."""
    lifted = points.copy()
    lifted[list(LIFTED_POINTS), 1] -= BROW_LIFT * SIMILARITY_SCALE / 0.7
    mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
    polygons = np.round(lifted[triangles] * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, list(polygons), 1, lineType=cv2.LINE_8, shift=4)
    return mask


def align_face(
    image: np.ndarray, landmarks: np.ndarray, params: PDMParams, pdm: PDM, triangles: np.ndarray
) -> np.ndarray:
    """The masked ``SIDE`` x ``SIDE`` aligned face (same channels as ``image``)."""
    matrix = warp_matrix(landmarks, params, pdm)
    aligned = cv2.warpAffine(image, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR)
    points = landmarks @ matrix[:, :2].T + matrix[:, 2]
    mask = face_mask(points, triangles)
    return aligned * (mask[:, :, None] if aligned.ndim == 3 else mask)
