"""``mesh`` back end (offline default): in-wheel MediaPipe face mesh -> our numpy AU head."""

from __future__ import annotations

import mediapipe as mp
import numpy as np

N_LANDMARKS = 478


def open_face_mesh():
    """A still-image, single-face MediaPipe face mesh with iris refinement (478 points)."""
    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    )


def run_face_mesh(face_mesh, canvas: np.ndarray) -> np.ndarray | None:
    """478 x 3 landmarks in canvas pixels (z on the x scale); None when no face is found."""
    result = face_mesh.process(np.ascontiguousarray(canvas))
    if not result.multi_face_landmarks:
        return None
    points = result.multi_face_landmarks[0].landmark
    height, width = canvas.shape[:2]
    xyz = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)
    return xyz * np.array([width, height, width], dtype=np.float64)
