"""The 68-point point distribution model (PDM): 3-D shape, weak-perspective projection, fit.

A shape is ``mean + components @ local`` (68 x 3, millimetres); it is seen in the image as
``scale * R[:2] @ point + (tx, ty)`` with ``R = Rx(pitch) Ry(yaw) Rz(roll)``. ``fit`` finds the
scale, rotation, translation and the non-rigid ``local`` parameters that best explain 2-D
landmarks, with each local parameter penalised by the inverse of its eigenvalue (a Gaussian
shape prior), by Gauss-Newton steps on an incremental rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from engine.aus.openface.files import PDMFile

#: Each local parameter's squared value is penalised by this factor over its eigenvalue.
REGULARISATION = 1.0
_MAX_ITERATIONS = 30
#: The fit stops once a step lowers the penalised error by less than this share.
_RELATIVE_GAIN = 1e-3


@dataclass(frozen=True)
class PDMParams:
    """A fitted PDM: global ``scale``, Euler ``rotation`` (radians), ``translation``, ``local``."""

    scale: float
    rotation: tuple[float, float, float]  # about x (pitch), y (yaw), z (roll)
    translation: tuple[float, float]
    local: np.ndarray  # (m,)


def euler_to_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """``Rx(rx) @ Ry(ry) @ Rz(rz)``."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return np.array(
        [
            [cy * cz, -cy * sz, sy],
            [cx * sz + cz * sx * sy, cx * cz - sx * sy * sz, -cy * sx],
            [sx * sz - cx * cz * sy, cz * sx + cx * sy * sz, cx * cy],
        ]
    )


def matrix_to_euler(r: np.ndarray) -> tuple[float, float, float]:
    """Inverse of ``euler_to_matrix`` (yaw within +-90 degrees)."""
    ry = float(np.arcsin(np.clip(r[0, 2], -1.0, 1.0)))
    rx = float(np.arctan2(-r[1, 2], r[2, 2]))
    rz = float(np.arctan2(-r[0, 1], r[0, 0]))
    return rx, ry, rz


def _rodrigues(w: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = _skew(w / angle)
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices of (3,) or (n, 3) vectors: ``skew(v) @ u == v x u``."""
    v = np.asarray(v, dtype=np.float64)
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


@dataclass(frozen=True)
class PDM:
    """A point distribution model of ``n`` 3-D points with ``m`` modes."""

    mean: np.ndarray  # (n, 3)
    components: np.ndarray  # (n, 3, m)
    eigenvalues: np.ndarray  # (m,)

    @classmethod
    def from_file(cls, data: PDMFile) -> PDM:
        """From the file's stacked layout (all x, then all y, then all z)."""
        n = data.mean.size // 3
        mean = data.mean.reshape(3, n).T
        components = data.components.reshape(3, n, -1).transpose(1, 0, 2)
        return cls(mean=mean, components=components, eigenvalues=data.eigenvalues)

    @property
    def n_points(self) -> int:
        return self.mean.shape[0]

    @property
    def n_modes(self) -> int:
        return self.eigenvalues.size

    def shape3d(self, local: np.ndarray) -> np.ndarray:
        """The (n, 3) shape of local parameters ``local``."""
        return self.mean + self.components @ local

    def deformation(self, local: np.ndarray) -> np.ndarray:
        """``components @ local`` in the file's stacked layout (x, then y, then z): (3n,)."""
        return (self.components @ local).T.reshape(-1)

    def project(self, params: PDMParams) -> np.ndarray:
        """The (n, 2) image landmarks of ``params``."""
        rotation = euler_to_matrix(*params.rotation)
        points = self.shape3d(params.local) @ rotation[:2].T
        return params.scale * points + np.asarray(params.translation)

    def fit(self, landmarks: np.ndarray, regularisation: float = REGULARISATION) -> PDMParams:
        """Parameters whose projection best matches ``landmarks`` (n x 2 image pixels).

        The fit runs in a frame where the face is about model-sized (scale ~1), so that the
        shape prior weighs the same whatever the image's resolution.
        """
        target = np.asarray(landmarks, dtype=np.float64)
        if target.shape != (self.n_points, 2) or not np.isfinite(target).all():
            raise ValueError(f"expected {self.n_points} x 2 finite landmarks, got {target.shape}")
        centre = target.mean(axis=0)
        mean2d = self.mean[:, :2] - self.mean[:, :2].mean(axis=0)
        spread = np.sqrt(((target - centre) ** 2).sum() / (mean2d**2).sum())
        if spread <= 0:
            raise ValueError("landmarks are all at one point")
        target = (target - centre) / spread
        scale, rotation, translation = 1.0, _initial_rotation(mean2d, target), np.zeros(2)
        local = np.zeros(self.n_modes)
        prior = regularisation / self.eigenvalues
        m = self.n_modes
        jacobian = np.empty((2 * self.n_points, 6 + m))
        jacobian[:, 4:6] = np.tile(np.eye(2), (self.n_points, 1))  # translation: constant
        previous = np.inf
        for _ in range(_MAX_ITERATIONS):
            shape = self.shape3d(local)
            rotated = shape @ rotation.T
            residual = (scale * rotated[:, :2] + translation - target).reshape(-1)
            error = residual @ residual + local @ (prior * local)
            if error > previous * (1.0 - _RELATIVE_GAIN):
                break
            previous = error
            jacobian[:, 0] = rotated[:, :2].reshape(-1)
            # d(R (I + [w]x) S) / dw = -R [S]x
            jacobian[:, 1:4] = (-scale * (rotation[:2] @ _skew(shape))).reshape(-1, 3)
            jacobian[:, 6:] = (
                scale * np.einsum("ij,njm->nim", rotation[:2], self.components)
            ).reshape(-1, m)
            hessian = jacobian.T @ jacobian
            hessian[6:, 6:] += np.diag(prior)
            gradient = jacobian.T @ residual
            gradient[6:] += prior * local
            # Cholesky: LAPACK's LU solve is multi-threaded and ~30x slower at this size
            step = cho_solve(cho_factor(hessian), -gradient)
            scale += step[0]
            rotation = rotation @ _rodrigues(step[1:4])
            translation = translation + step[4:6]
            local = local + step[6:]
        return PDMParams(
            scale=float(scale * spread),
            rotation=matrix_to_euler(rotation),
            translation=tuple((translation * spread + centre).tolist()),
            local=local,
        )


def _initial_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """In-plane rotation (about z) that best turns centred ``source`` points onto ``target``."""
    cross = (source[:, 0] * target[:, 1] - source[:, 1] * target[:, 0]).sum()
    dot = (source * target).sum()
    return euler_to_matrix(0.0, 0.0, float(np.arctan2(cross, dot)))
