"""Checks every registered AU back end passes, on real FER+ test images.

Back ends whose module, dependencies or weights are missing are skipped with the reason.
"""

from __future__ import annotations

import csv
import importlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.aus import (
    AUTO,
    MAX_INTENSITY,
    AUEstimator,
    au_definitions,
    create_estimator,
    list_estimators,
)
from engine.data.images import load_image
from engine.types import AUReading, Face, FaceRecord, StageError

N_IMAGES = 4
PROJECT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    override = os.environ.get("EXPLLM_SHARED")
    return Path(override) if override else PROJECT.parent / "shared"


@pytest.fixture(scope="module")
def samples() -> list[tuple[FaceRecord, Face]]:
    """The first FER+ test images as records with whole-image faces."""
    root = _shared_dir() / "data" / "ferplus"
    labels = root / "FER2013Test" / "label.csv"
    if not labels.is_file():
        pytest.skip(f"FER+ test images not found ({labels})")
    with labels.open(newline="") as fh:
        names = [row[0] for row, _ in zip(csv.reader(fh), range(N_IMAGES), strict=False)]
    out = []
    for name in names:
        rec = FaceRecord(
            f"ferplus/test/{name}", "ferplus", "test", root, f"FER2013Test/{name}", None
        )
        image = load_image(rec)
        out.append((rec, Face((0, 0, image.shape[1], image.shape[0]), image, "aligned")))
    return out


def _import_backend(name: str) -> None:
    try:
        importlib.import_module(f"engine.aus.{name}")
    except ImportError as error:
        pytest.skip(f"{name} back end not importable: {error}")


def _table(tmp: Path, samples: list[tuple[FaceRecord, Face]]) -> AUEstimator:
    rng = np.random.default_rng(0)
    path = tmp / "aus.csv"
    codes = list(au_definitions())[:12]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["relpath", *codes, "AU12_L", "AU12_R"])
        for rec, _ in samples:
            writer.writerow([rec.relpath, *rng.uniform(0, 5, len(codes) + 2).round(3)])
    return create_estimator("table", path=path)


def _blendshapes(tmp: Path, samples: list[tuple[FaceRecord, Face]]) -> AUEstimator:
    model = _shared_dir() / "models" / "face_landmarker.task"
    if not model.is_file():
        pytest.skip(f"blendshapes needs {model}")
    _import_backend("blendshapes")
    return create_estimator("blendshapes", model_path=model)


def _mesh(tmp: Path, samples: list[tuple[FaceRecord, Face]]) -> AUEstimator:
    weights = PROJECT / "engine" / "weights" / "mesh_au_head.npz"
    if not weights.is_file():
        pytest.skip(f"mesh needs {weights}")
    _import_backend("mesh")
    return create_estimator("mesh")


def _openface_dir() -> Path:
    folder = _shared_dir() / "models" / "openface"
    if not (folder / "AU_all_static.txt").is_file():
        pytest.skip(f"OpenFace model files absent under {folder}")
    return folder


def _openface(tmp: Path, samples: list[tuple[FaceRecord, Face]]) -> AUEstimator:
    folder = _openface_dir()
    _import_backend("openface.backend")
    return create_estimator("openface", model_dir=folder)


def _fused(tmp: Path, samples: list[tuple[FaceRecord, Face]]) -> AUEstimator:
    folder = _openface_dir()
    _import_backend("fused")
    return create_estimator("fused", model_dir=folder)


def _pyfeat(tmp: Path, samples: list[tuple[FaceRecord, Face]]) -> AUEstimator:
    pytest.importorskip("feat")
    constants = importlib.import_module("huggingface_hub.constants")
    offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True  # cached weights only
    try:
        return create_estimator("pyfeat")
    except RuntimeError as error:
        pytest.skip(f"py-feat weights not cached: {error}")
    finally:
        constants.HF_HUB_OFFLINE = offline


FACTORIES: dict[str, Callable[[Path, list[tuple[FaceRecord, Face]]], AUEstimator]] = {
    "table": _table,
    "blendshapes": _blendshapes,
    "mesh": _mesh,
    "openface": _openface,
    "fused": _fused,
    "pyfeat": _pyfeat,
}
BACKENDS = [name for name in list_estimators() if name != AUTO]


def test_every_backend_has_a_factory() -> None:
    assert set(BACKENDS) <= set(FACTORIES)


@pytest.fixture(scope="module", params=BACKENDS)
def estimator(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    samples: list[tuple[FaceRecord, Face]],
) -> Iterator[AUEstimator]:
    built = FACTORIES[request.param](tmp_path_factory.mktemp(request.param), samples)
    yield built
    built.close()


@pytest.fixture(scope="module")
def readings(
    estimator: AUEstimator, samples: list[tuple[FaceRecord, Face]]
) -> list[tuple[FaceRecord, Face, AUReading]]:
    """Readings of the samples the back end handles; at least one must succeed."""
    out = []
    for rec, face in samples:
        try:
            out.append((rec, face, estimator.estimate(face, rec)))
        except StageError as error:
            assert error.stage == "aus", f"{estimator.name} raised StageError({error.stage!r})"
    assert out, f"{estimator.name} handled none of {[rec.relpath for rec, _ in samples]}"
    return out


def test_name_and_model_version(estimator: AUEstimator) -> None:
    assert estimator.name in list_estimators()
    assert isinstance(estimator.model_version, str) and estimator.model_version.strip()


def test_readings_are_facs_codes_on_the_0_to_5_scale(
    estimator: AUEstimator, readings: list[tuple[FaceRecord, Face, AUReading]]
) -> None:
    known = set(au_definitions())
    for rec, _, reading in readings:
        assert reading.intensities, rec.relpath
        assert set(reading.intensities) <= known, rec.relpath
        assert set(reading.sides) <= known, rec.relpath
        assert set(reading.presence) <= known, rec.relpath
        assert all(isinstance(v, bool) for v in reading.presence.values()), rec.relpath
        for value in reading.intensities.values():
            assert isinstance(value, float) and 0.0 <= value <= MAX_INTENSITY
        for left, right in reading.sides.values():
            assert 0.0 <= left <= MAX_INTENSITY and 0.0 <= right <= MAX_INTENSITY
        if reading.pose is not None:
            assert all(math.isfinite(v) for v in (reading.pose.yaw, reading.pose.pitch))
        assert reading.backend == estimator.name
        assert reading.model_version == estimator.model_version


def test_deterministic_on_repeat(
    estimator: AUEstimator, readings: list[tuple[FaceRecord, Face, AUReading]]
) -> None:
    for rec, face, first in readings:
        again = estimator.estimate(face, rec)
        assert again.intensities == pytest.approx(first.intensities, abs=1e-6)
        assert set(again.sides) == set(first.sides)


def test_pixel_free_backends_need_no_face(
    estimator: AUEstimator, readings: list[tuple[FaceRecord, Face, AUReading]]
) -> None:
    if estimator.needs_pixels:
        pytest.skip(f"{estimator.name} needs pixels")
    rec, _, first = readings[0]
    assert estimator.estimate(None, rec).intensities == first.intensities


def test_unhandled_record_is_a_stage_error(
    estimator: AUEstimator, samples: list[tuple[FaceRecord, Face]]
) -> None:
    """An image unknown to a table and without a face (a flat grey crop) fails as stage aus."""
    rec = FaceRecord("ferplus/test/none", "ferplus", "test", samples[0][0].root, "none/x.png", None)
    blank = Face((0, 0, 48, 48), np.full((48, 48, 3), 128, np.uint8), "aligned")
    with pytest.raises(StageError) as error:
        estimator.estimate(blank, rec)
    assert error.value.stage == "aus"
