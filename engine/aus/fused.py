"""``fused`` AU back end: OpenFace 2.2's FACS-trained intensities where it has a model, the
``mesh`` head for the AUs it lacks and for left/right sides.

``data/fused_aus.csv`` says which source each AU comes from (and why). An OpenFace AU takes
its sides from the mesh head's left/right ratio, scaled so that the stronger side equals
OpenFace's intensity; head pose is the mesh's. ``au_model_version`` names both models.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

from engine.aus import ESTIMATORS, AUEstimator, normalise_au_code
from engine.aus.mesh import MeshEstimator
from engine.aus.openface.backend import MODEL_NAME, OpenFaceEstimator
from engine.model_files import model_spec
from engine.resources import data_file
from engine.types import AUReading, Face, FaceRecord

SOURCES = ("openface", "mesh")


@cache
def au_sources() -> dict[str, str]:
    """AU code -> ``openface`` or ``mesh``, from ``data/fused_aus.csv``."""
    path = data_file("fused_aus.csv")
    sources = {}
    with path.open(newline="") as fh:
        for number, row in enumerate(csv.DictReader(fh), 2):
            if row["source"] not in SOURCES:
                raise ValueError(f"{path}:{number}: source {row['source']!r} not in {SOURCES}")
            sources[normalise_au_code(row["au"])] = row["source"]
    return sources


def fuse(openface: dict[str, float], mesh: AUReading) -> tuple[dict, dict]:
    """Intensities and sides of the fused reading (see the module docstring)."""
    intensities, sides = {}, {}
    for au, source in au_sources().items():
        value = openface.get(au) if source == "openface" else mesh.intensities.get(au)
        if value is None:
            continue
        intensities[au] = value
        if au in mesh.sides:
            left, right = mesh.sides[au]
            if source == "mesh":
                sides[au] = (left, right)
            else:
                top = max(left, right)
                sides[au] = (value * left / top, value * right / top) if top > 0 else (value, value)
    return intensities, sides


@ESTIMATORS.register()
class FusedEstimator(AUEstimator):
    """OpenFace's 17 static SVR intensities + the mesh head's other AUs and sides."""

    name = "fused"
    licence = f"{model_spec(MODEL_NAME).licence}; mesh head: Apache-2.0"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        landmarks: str | None = None,
        mirror: bool = True,
        weights_path: str | Path | None = None,
    ):
        self._openface = OpenFaceEstimator(model_dir=model_dir, landmarks=landmarks, mirror=mirror)
        self._mesh = MeshEstimator(weights_path=weights_path)
        self.model_version = f"{self._openface.model_version}+mesh:{self._mesh.model_version}"

    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        points = self._mesh.locate(face, record)
        mesh = self._mesh.read(points)
        analysis = self._openface.analyse(face, record, mesh=points[:, :2])
        intensities, sides = fuse(analysis.intensities, mesh)
        return AUReading(
            intensities=intensities,
            backend=self.name,
            model_version=self.model_version,
            sides=sides,
            pose=mesh.pose,
            presence=analysis.presence,
        )

    def close(self) -> None:
        self._mesh.close()
        self._openface.close()
