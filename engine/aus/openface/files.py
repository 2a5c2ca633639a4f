"""Readers for OpenFace 2.2's model files (read at run time from a model folder, never shipped).

Formats, as documented with the files:

* ``*.dat`` predictor: int32 kind (0 static SVR, 1 dynamic SVR with a float64 cut-off next,
  4 static SVM, 5 dynamic SVM), a means matrix (1 x D) and a weight matrix (D x 1), each an
  OpenCV-style binary matrix (int32 rows, cols, type, then float64 data), then a float64 bias;
  SVMs add two float64 class values.
* PDM text file: three ``#``-commented text matrices (rows, cols, type, then values): the mean
  3-D shape (204 x 1, all x then all y then all z), the principal components (204 x 34) and
  their eigenvalues (1 x 34).
* Triangulation: one text matrix (n x 3) of landmark indices.
* Model list (``AU_all_static.txt``): ``relative/path.dat AU01`` per line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.aus import normalise_au_code

#: OpenCV's type code of float64 single-channel matrices.
_CV_64F = 6
_SVR_KINDS = {0: "static", 1: "dynamic"}
_SVM_KINDS = {4: "static", 5: "dynamic"}


class ModelFileError(ValueError):
    """A model file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class LinearPredictor:
    """One linear AU predictor: ``score = (x - means) . weights + bias``."""

    au: str
    kind: str  # "intensity" (SVR) or "presence" (SVM)
    dynamic: bool
    means: np.ndarray  # (D,)
    weights: np.ndarray  # (D,)
    bias: float
    #: SVMs: the class values of a positive and of a non-positive score.
    classes: tuple[float, float] | None = None


@dataclass(frozen=True)
class PDMFile:
    """The arrays of a point distribution model file."""

    mean: np.ndarray  # (3n,), x then y then z
    components: np.ndarray  # (3n, m)
    eigenvalues: np.ndarray  # (m,)


def _read_binary_matrix(data: bytes, offset: int, path: Path) -> tuple[np.ndarray, int]:
    if offset + 12 > len(data):
        raise ModelFileError(f"{path}: truncated before a matrix header at byte {offset}")
    rows, cols, kind = struct.unpack_from("<iii", data, offset)
    offset += 12
    if kind != _CV_64F or rows <= 0 or cols <= 0:
        raise ModelFileError(
            f"{path}: expected a float64 matrix, found rows={rows} cols={cols} type={kind}"
        )
    size = rows * cols * 8
    if offset + size > len(data):
        raise ModelFileError(f"{path}: truncated inside a {rows}x{cols} matrix")
    matrix = np.frombuffer(data, dtype="<f8", count=rows * cols, offset=offset)
    return matrix.reshape(rows, cols).copy(), offset + size


def read_predictor(path: Path, au: str) -> LinearPredictor:
    """Read one ``.dat`` SVR or SVM predictor for FACS code ``au``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from error
    if len(data) < 4:
        raise ModelFileError(f"{path}: too short to be an OpenFace predictor")
    (kind,) = struct.unpack_from("<i", data, 0)
    offset = 4
    if kind not in _SVR_KINDS and kind not in _SVM_KINDS:
        raise ModelFileError(f"{path}: unknown predictor kind {kind}")
    if kind == 1:  # dynamic SVR: a cut-off used with person-specific normalisation
        offset += 8
    means, offset = _read_binary_matrix(data, offset, path)
    weights, offset = _read_binary_matrix(data, offset, path)
    if means.shape[0] != 1 or weights.shape[1] != 1 or means.shape[1] != weights.shape[0]:
        raise ModelFileError(
            f"{path}: means {means.shape} and weights {weights.shape} do not fit together"
        )
    extra = 3 if kind in _SVM_KINDS else 1
    if len(data) != offset + 8 * extra:
        raise ModelFileError(
            f"{path}: {len(data) - offset} bytes after the weights, expected {8 * extra}"
        )
    tail = struct.unpack_from(f"<{extra}d", data, offset)
    return LinearPredictor(
        au=normalise_au_code(au),
        kind="presence" if kind in _SVM_KINDS else "intensity",
        dynamic=kind in (1, 5),
        means=means[0],
        weights=weights[:, 0],
        bias=float(tail[0]),
        classes=(float(tail[1]), float(tail[2])) if kind in _SVM_KINDS else None,
    )


def read_model_list(path: Path) -> list[tuple[Path, str]]:
    """``(predictor path, AU code)`` pairs of a model list file, paths relative to its folder."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from error
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ModelFileError(f"{path}:{number}: expected 'file.dat AUxx', got {line!r}")
        try:
            entries.append((path.parent / parts[0], normalise_au_code(parts[1])))
        except ValueError as error:
            raise ModelFileError(f"{path}:{number}: {error}") from None
    return entries


def _text_matrices(path: Path) -> list[np.ndarray]:
    try:
        tokens = [
            token
            for line in path.read_text().splitlines()
            if not line.lstrip().startswith("#")
            for token in line.split()
        ]
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from error
    matrices, position = [], 0
    while position < len(tokens):
        try:
            rows, cols = int(tokens[position]), int(tokens[position + 1])
            values = np.array(tokens[position + 3 : position + 3 + rows * cols], dtype=np.float64)
        except (ValueError, IndexError):
            raise ModelFileError(f"{path}: malformed matrix at token {position}") from None
        if values.size != rows * cols:
            raise ModelFileError(f"{path}: truncated {rows}x{cols} matrix")
        matrices.append(values.reshape(rows, cols))
        position += 3 + rows * cols
    return matrices


def read_pdm(path: Path) -> PDMFile:
    """Read a PDM text file (mean shape, principal components, eigenvalues)."""
    path = Path(path)
    matrices = _text_matrices(path)
    if len(matrices) != 3:
        raise ModelFileError(f"{path}: expected 3 matrices (mean, components, eigenvalues)")
    mean, components, eigenvalues = matrices
    if mean.shape[1] != 1 or mean.shape[0] % 3 or components.shape[0] != mean.shape[0]:
        raise ModelFileError(f"{path}: mean {mean.shape} and components {components.shape}")
    if eigenvalues.size != components.shape[1] or np.any(eigenvalues.ravel() <= 0):
        raise ModelFileError(f"{path}: expected {components.shape[1]} positive eigenvalues")
    return PDMFile(mean[:, 0], components, eigenvalues.ravel())


def read_triangulation(path: Path, n_points: int) -> np.ndarray:
    """Triangles (n, 3) of landmark indices, checked against ``n_points``."""
    path = Path(path)
    matrices = _text_matrices(path)
    if len(matrices) != 1 or matrices[0].shape[1] != 3:
        raise ModelFileError(f"{path}: expected one n x 3 matrix of triangles")
    triangles = matrices[0].astype(np.intp)
    if triangles.min() < 0 or triangles.max() >= n_points:
        raise ModelFileError(f"{path}: landmark index out of range 0..{n_points - 1}")
    return triangles
