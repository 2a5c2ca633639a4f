"""The ``pyfeat`` AU back end up to py-feat's model call, with real ``Fex`` objects.

py-feat's weights come from the Hugging Face hub, so the detector itself is replaced by a fake
that returns ``Fex`` objects read from the wheel's test data.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.aus import create_estimator
from engine.types import Face, FaceRecord, StageError

RECORD = FaceRecord("t/a", "t", "test", Path("/data"), "faces/a.png", None)


def test_missing_py_feat_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.aus.pyfeat import import_feat

    monkeypatch.setitem(sys.modules, "feat", None)  # makes ``import feat`` fail
    with pytest.raises(ImportError, match=r"pip install 'expllm\[pyfeat\]'"):
        import_feat()


def test_unknown_detector_is_rejected_before_importing_py_feat() -> None:
    with pytest.raises(ValueError, match="unknown py-feat detector 'v3'"):
        create_estimator("pyfeat", detector="v3")


@pytest.fixture(scope="module")
def feat() -> ModuleType:
    return pytest.importorskip("feat")


@pytest.fixture(scope="module")
def test_data(feat: ModuleType) -> Path:
    from feat.utils.io import get_test_data_path

    return Path(get_test_data_path())


@pytest.fixture(scope="module")
def feat_fex(test_data: Path) -> pd.DataFrame:
    from feat.utils.io import read_feat

    return read_feat(str(test_data / "Feat_Test.csv"))


def test_readings_from_py_feat_fex(feat_fex: pd.DataFrame) -> None:
    from engine.aus.pyfeat import readings_from_fex

    row = feat_fex.iloc[0]
    [face] = readings_from_fex(feat_fex)
    assert face.input.endswith("single_face.jpg")
    assert face.box == (197, 141, 174, 258)
    assert face.score == pytest.approx(row["FaceScore"])
    reading = face.reading
    assert reading.backend == "pyfeat" and reading.model_version == "py-feat:Feat"
    assert set(reading.intensities) == set(feat_fex.au_columns)
    for code in feat_fex.au_columns:  # probabilities onto 0-5
        assert reading.intensities[code] == pytest.approx(row[code] * 5)
    assert reading.pose is not None
    assert (reading.pose.yaw, reading.pose.pitch, reading.pose.roll) == pytest.approx(
        (row["Yaw"], row["Pitch"], row["Roll"])
    )


def test_readings_from_openface_fex(test_data: Path) -> None:
    from feat.utils.io import read_openface

    from engine.aus.pyfeat import readings_from_fex

    fex = read_openface(str(test_data / "OpenFace_Test.csv"))
    faces = readings_from_fex(fex, "openface-2")
    assert len(faces) == len(fex) == 100
    first, row = faces[0], fex.iloc[0]
    assert first.box is None and first.score is None
    assert first.reading.model_version == "openface-2"
    assert first.reading.intensities["AU45"] == pytest.approx(row["AU45_r"])  # 0-5 already
    assert "AU28" not in first.reading.intensities  # presence (AU28_c) only
    assert first.reading.pose is not None
    assert first.reading.pose.pitch == pytest.approx(math.degrees(row["pose_Rx"]))


def test_rows_without_a_face_are_left_out(feat: ModuleType, feat_fex: pd.DataFrame) -> None:
    from engine.aus.pyfeat import readings_from_fex

    blank = feat_fex.copy()
    blank.loc[:, feat_fex.au_columns] = np.nan
    fex = feat.Fex(pd.concat([feat_fex, blank]), au_columns=feat_fex.au_columns, detector="v2")
    assert len(readings_from_fex(fex)) == 1


class FakeDetector:
    """Stands in for ``feat.Detectorv2``: records its arguments, returns a given ``Fex``."""

    result: pd.DataFrame
    error: Exception | None = None

    def __init__(self, **options: Any):
        if self.error is not None:
            raise self.error
        self.options = options
        self.info = {"face_model": "retinaface", "identity_model": None}
        self.calls: list[dict[str, Any]] = []

    def detect(self, inputs: Any, **options: Any) -> pd.DataFrame:
        self.calls.append({"inputs": inputs, **options})
        return self.result


@pytest.fixture
def fake(
    feat: ModuleType, feat_fex: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> type[FakeDetector]:
    two_faces = pd.concat([feat_fex, feat_fex]).reset_index(drop=True)
    two_faces.loc[0, "FaceScore"] = 0.5
    two_faces.loc[0, "AU12"] = 0.1
    cls = type("Detectorv2", (FakeDetector,), {"result": feat.Fex(two_faces, detector="v2")})
    monkeypatch.setattr(feat, "Detectorv2", cls)
    return cls


def test_estimator_construction_and_detect_call(feat: ModuleType, fake: type) -> None:
    estimator = create_estimator("pyfeat", face_detection_threshold=0.3, batch_size=2)
    assert estimator.detector.options == {"device": "cpu", "batch_size": 2, "identity_model": None}
    assert estimator.model_version == f"py-feat-{feat.__version__}:Detectorv2:face_model=retinaface"
    crop = np.zeros((48, 40, 3), np.uint8)
    crop[..., 0] = 200
    reading = estimator.estimate(Face((0, 0, 40, 48), crop, "aligned"), RECORD)
    [call] = estimator.detector.calls
    tensor = call.pop("inputs")
    assert call == {"data_type": "tensor", "face_detection_threshold": 0.3, "progress_bar": False}
    assert tuple(tensor.shape) == (1, 3, 48, 40) and str(tensor.dtype) == "torch.uint8"
    assert int(tensor[0, 0].max()) == 200 and int(tensor[0, 1].max()) == 0  # RGB order kept
    assert reading.intensities["AU12"] == pytest.approx(0.964 * 5, abs=0.01)  # best-scored face
    assert reading.model_version == estimator.model_version


def test_no_face_and_no_crop_are_stage_errors(feat: ModuleType, fake: type) -> None:
    estimator = create_estimator("pyfeat", detector="v2")
    with pytest.raises(StageError, match="needs the face crop of faces/a.png") as error:
        estimator.estimate(None, RECORD)
    assert error.value.stage == "aus"
    empty = fake.result.copy()
    empty.loc[:, [c for c in empty.columns if c.startswith("AU")]] = np.nan
    fake.result = feat.Fex(empty, detector="v2")
    face = Face((0, 0, 8, 8), np.zeros((8, 8, 3), np.uint8), "aligned")
    with pytest.raises(StageError, match="py-feat found no face in the crop of faces/a.png"):
        estimator.estimate(face, RECORD)


def test_weight_download_failure_is_explained(fake: type) -> None:
    fake.error = OSError("offline")
    with pytest.raises(RuntimeError, match="could not load its weights .*Hugging Face"):
        create_estimator("pyfeat")
