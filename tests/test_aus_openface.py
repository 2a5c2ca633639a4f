"""The ``openface`` and ``fused`` back ends and ``--au-backend auto`` on real FER+ faces."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from engine.aus import create_estimator, resolve_backend
from engine.aus.fused import au_sources
from engine.data.images import load_image
from engine.types import EMOTIONS, Face, FaceRecord, StageError


def _faces(ferplus_dir: Path, emotion: str, votes: int, count: int) -> list[tuple]:
    """The first ``count`` FER+ test faces with at least ``votes`` votes for ``emotion``."""
    column = 2 + EMOTIONS.index(emotion)
    out = []
    with (ferplus_dir / "FER2013Test" / "label.csv").open(newline="") as fh:
        for row in csv.reader(fh):
            if int(row[column]) >= votes and len(out) < count:
                rec = FaceRecord(
                    row[0], "ferplus", "test", ferplus_dir, f"FER2013Test/{row[0]}", emotion
                )
                image = load_image(rec)
                out.append((rec, Face((0, 0, 48, 48), image, "aligned")))
    return out


@pytest.fixture(scope="module")
def happy_and_neutral(ferplus_dir: Path) -> tuple[list, list]:
    return _faces(ferplus_dir, "happiness", 9, 6), _faces(ferplus_dir, "neutral", 9, 6)


def test_auto_is_fused_with_model_files_and_mesh_without(
    openface_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPLLM_MODEL_DIR", str(openface_dir.parent))
    backend, why = resolve_backend("auto")
    assert backend == "fused" and str(openface_dir) in why and "noncommercial" in why
    monkeypatch.setenv("EXPLLM_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    backend, why = resolve_backend("auto")
    assert backend == "mesh"
    assert "expllm models fetch openface --accept-licence" in why
    assert resolve_backend("mesh") == ("mesh", "--au-backend mesh")
    with pytest.raises(ValueError, match="unknown AU back end 'nope'; choose one of blendshapes"):
        resolve_backend("nope")


def test_missing_model_files_name_the_folder_and_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPLLM_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as error:
        create_estimator("openface")
    assert str(tmp_path / "openface") in str(error.value)
    assert "expllm models fetch openface --accept-licence" in str(error.value)


def test_unknown_landmark_source_is_refused(openface_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown landmark source 'eyes'; choose one of mesh"):
        create_estimator("openface", model_dir=openface_dir, landmarks="eyes")


@pytest.mark.parametrize("landmarks", ["mesh+dlib", "mesh", "dlib"])
def test_openface_reads_smiles_on_happy_faces(
    openface_dir: Path, happy_and_neutral: tuple[list, list], landmarks: str
) -> None:
    if "dlib" in landmarks:
        pytest.importorskip("dlib")
    estimator = create_estimator("openface", model_dir=openface_dir, landmarks=landmarks)
    happy, neutral = happy_and_neutral
    readings = {}
    for name, faces in (("happy", happy), ("neutral", neutral)):
        readings[name] = []
        for rec, face in faces:
            try:
                readings[name].append(estimator.estimate(face, rec))
            except StageError:
                continue
    estimator.close()
    assert len(readings["happy"]) >= 4 and len(readings["neutral"]) >= 4
    first = readings["happy"][0]
    assert len(first.intensities) == 17 and len(first.presence) == 18 and first.pose is not None
    assert f"landmarks:{landmarks}" in first.model_version

    def mean(name: str, au: str) -> float:
        return float(np.mean([r.intensities[au] for r in readings[name]]))

    assert mean("happy", "AU12") > mean("neutral", "AU12") + 1.0
    assert mean("happy", "AU06") > mean("neutral", "AU06") + 0.5
    assert np.mean([r.presence["AU12"] for r in readings["happy"]]) > 0.5
    assert np.mean([r.presence["AU12"] for r in readings["neutral"]]) < 0.5


def test_fused_takes_each_au_from_its_source(
    openface_dir: Path, happy_and_neutral: tuple[list, list]
) -> None:
    fused = create_estimator("fused", model_dir=openface_dir, landmarks="mesh")
    openface = create_estimator("openface", model_dir=openface_dir, landmarks="mesh")
    mesh = create_estimator("mesh")
    rec, face = happy_and_neutral[0][0]
    reading = fused.estimate(face, rec)
    alone, meshed = openface.estimate(face, rec), mesh.estimate(face, rec)
    for est in (fused, openface, mesh):
        est.close()
    assert set(reading.intensities) == {au for au in au_sources() if au in meshed.intensities
                                        or au in alone.intensities}  # fmt: skip
    for au, source in au_sources().items():
        expected = alone.intensities if source == "openface" else meshed.intensities
        if au in expected:
            assert reading.intensities[au] == pytest.approx(expected[au], abs=1e-9), au
    for au, (left, right) in reading.sides.items():
        assert max(left, right) == pytest.approx(reading.intensities[au]), au
    assert reading.presence == alone.presence and reading.pose == meshed.pose
    assert (
        "openface-2.2-static" in reading.model_version and "mesh-au-head" in reading.model_version
    )


def test_mirror_option_is_a_boolean_from_the_command_line(openface_dir: Path) -> None:
    from flows.cli_exp_cot import _au_options

    assert _au_options(["path=aus.csv", "mirror=false"]) == (
        ("mirror", False),
        ("path", "aus.csv"),
    )
    single = create_estimator("openface", model_dir=openface_dir, landmarks="mesh", mirror=False)
    assert "landmarks:mesh" in single.model_version and "mirror" not in single.model_version
    single.close()
    with pytest.raises(ValueError, match="option mirror expects true or false, got 'no'"):
        create_estimator("openface", model_dir=openface_dir, landmarks="mesh", mirror="no")
