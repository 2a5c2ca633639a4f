"""Action-unit estimation: one ``AUEstimator`` interface, back ends in ``ESTIMATORS``.

``create_estimator("mesh")`` builds a back end by name; back-end modules are imported lazily
so that the core stays importable without their heavy dependencies. ``"auto"`` stands for
``fused`` when OpenFace's model files are found, else ``mesh`` (``resolve_backend``).
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

from engine.registry import Registry
from engine.resources import data_file
from engine.types import AUReading, Face, FaceRecord

#: The back-end name that picks ``fused`` or ``mesh`` by what is installed.
AUTO = "auto"
#: Highest intensity on the FACS scale used throughout (A=1 ... E=5).
MAX_INTENSITY = 5.0


@dataclass(frozen=True)
class AUDefinition:
    """One row of ``data/au_definitions.csv``."""

    au: str
    name: str
    muscle: str
    region: str
    phrase: str


@cache
def au_definitions() -> dict[str, AUDefinition]:
    """FACS action units known to the project, keyed by code (``"AU01"``), in table order."""
    with data_file("au_definitions.csv").open(newline="") as fh:
        return {row["au"]: AUDefinition(**row) for row in csv.DictReader(fh)}


def normalise_au_code(code: str | int) -> str:
    """``"AU1"``, ``"au01_r"``, ``1`` -> ``"AU01"``; raises ValueError for anything else."""
    text = str(code).strip().upper()
    if text.startswith("AU"):
        text = text[2:]
    text = text.split("_")[0]
    if not text.isdigit():
        raise ValueError(f"not a FACS action-unit code: {code!r}")
    return f"AU{int(text):02d}"


class AUEstimator(ABC):
    """Estimates FACS action-unit intensities (0-5) for one face.

    Subclasses set ``name`` and ``needs_pixels`` (False for back ends that look values up by
    image, such as ``table``), set ``model_version`` when built and implement ``estimate``.
    Per-face problems (no face found, unknown image) raise ``engine.types.StageError`` with
    stage ``"aus"``.
    """

    name: ClassVar[str]
    needs_pixels: ClassVar[bool] = True
    #: Licence of the weights or tables the back end reads, recorded in the run's manifest.
    licence: ClassVar[str] = "Apache-2.0"
    #: Identifies the weights or table used, recorded in every shard row (set in ``__init__``).
    model_version: str

    @abstractmethod
    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        """AU intensities of ``face`` (the crop of ``record``'s image)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most back ends hold nothing
        """Release native resources; the default has none."""


#: The AU back ends (classes, registered with ``@ESTIMATORS.register()`` under their ``name``),
#: each imported from its module (``data/plugins.json``) on first use.
ESTIMATORS: Registry[type[AUEstimator]] = Registry("AU back end")


def list_estimators() -> list[str]:
    """Names accepted by ``create_estimator`` (``auto`` first)."""
    return [AUTO, *ESTIMATORS.names()]


def resolve_backend(name: str) -> tuple[str, str]:
    """The concrete back end that ``name`` stands for, and why (``auto`` -> fused or mesh)."""
    if name != AUTO:
        ESTIMATORS.get(name)  # validates the name
        return name, f"--au-backend {name}"
    from engine.model_files import fetch_command, find_model, model_spec

    spec, folder = model_spec("openface"), find_model("openface")
    if folder is None:
        return "mesh", (
            "OpenFace's model files are not in the model folder (fetch them with "
            f"`{fetch_command(spec)}` to use fused)"
        )
    return "fused", (
        f"OpenFace's model files found in {folder} (licence: {spec.licence.split(';')[0]})"
    )


def create_estimator(name: str, **options) -> AUEstimator:
    """Build the AU back end ``name`` (or ``auto``) with back-end specific ``options``."""
    return ESTIMATORS.create(resolve_backend(name)[0], **options)  # type: ignore[return-value]
