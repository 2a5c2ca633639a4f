"""The OpenFace 2.2 static pipeline's math: file readers, PDM fit, alignment (no model files
needed), and a golden check against the real files in ``shared/models/openface``."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from engine.aus.openface.align import SIDE, face_mask, similarity, warp_matrix
from engine.aus.openface.files import (
    ModelFileError,
    read_model_list,
    read_pdm,
    read_predictor,
    read_triangulation,
)
from engine.aus.openface.pdm import PDM, PDMParams, euler_to_matrix, matrix_to_euler


def _matrix_bytes(matrix: np.ndarray) -> bytes:
    rows, cols = matrix.shape
    return struct.pack("<iii", rows, cols, 6) + matrix.astype("<f8").tobytes()


def _write_dat(path: Path, kind: int, means: np.ndarray, weights: np.ndarray, tail: tuple) -> Path:
    data = struct.pack("<i", kind)
    if kind == 1:
        data += struct.pack("<d", 0.5)
    data += _matrix_bytes(means[None, :]) + _matrix_bytes(weights[:, None])
    data += struct.pack(f"<{len(tail)}d", *tail)
    path.write_bytes(data)
    return path


def test_reads_synthetic_svr_and_svm(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    means, weights = rng.normal(size=7), rng.normal(size=7)
    svr = read_predictor(_write_dat(tmp_path / "r.dat", 0, means, weights, (0.25,)), "AU1")
    assert (svr.au, svr.kind, svr.dynamic, svr.bias, svr.classes) == (
        "AU01",
        "intensity",
        False,
        0.25,
        None,
    )
    np.testing.assert_array_equal(svr.means, means)
    np.testing.assert_array_equal(svr.weights, weights)
    dyn = read_predictor(_write_dat(tmp_path / "d.dat", 1, means, weights, (-1.0,)), "12")
    assert dyn.dynamic and dyn.bias == -1.0 and dyn.au == "AU12"
    svm = read_predictor(_write_dat(tmp_path / "c.dat", 4, means, weights, (0.1, 0.0, 1.0)), "28")
    assert svm.kind == "presence" and svm.classes == (0.0, 1.0) and svm.bias == 0.1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:30], "truncated"),
        (lambda b: struct.pack("<i", 9) + b[4:], "unknown predictor kind 9"),
        (lambda b: b + b"\0" * 8, "bytes after the weights"),
        (lambda b: b[:4] + struct.pack("<iii", 1, 7, 5) + b[16:], "expected a float64 matrix"),
    ],
)
def test_broken_predictor_names_the_file(tmp_path: Path, mutate, reason: str) -> None:
    good = _write_dat(tmp_path / "good.dat", 0, np.zeros(7), np.ones(7), (0.0,))
    bad = tmp_path / "AU_9_static.dat"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(ModelFileError, match=rf"AU_9_static\.dat.*{reason}"):
        read_predictor(bad, "AU09")


def test_model_list_and_text_matrices(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("svr/AU_1.dat AU01\n\nsvr/AU_45.dat AU45\n")
    assert read_model_list(listing) == [
        (tmp_path / "svr/AU_1.dat", "AU01"),
        (tmp_path / "svr/AU_45.dat", "AU45"),
    ]
    listing.write_text("svr/AU_1.dat\n")
    with pytest.raises(ModelFileError, match=r"list\.txt:1: expected 'file.dat AUxx'"):
        read_model_list(listing)
    pdm = tmp_path / "pdm.txt"
    pdm.write_text(
        "# mean\n6\n1\n6\n1 2 3 4 5 6\n# pcs\n6\n1\n6\n1\n0\n0\n0\n0\n0\n# ev\n1\n1\n6\n4\n"
    )
    data = read_pdm(pdm)
    np.testing.assert_array_equal(data.mean, [1, 2, 3, 4, 5, 6])
    assert data.components.shape == (6, 1) and data.eigenvalues.tolist() == [4.0]
    pdm.write_text("6\n1\n6\n1 2 3\n")
    with pytest.raises(ModelFileError, match="pdm.txt: truncated"):
        read_pdm(pdm)
    tris = tmp_path / "tris.txt"
    tris.write_text("2\n3\n4\n0 1 2\n1 2 5\n")
    with pytest.raises(ModelFileError, match="out of range 0..4"):
        read_triangulation(tris, 5)


def _synthetic_pdm(seed: int = 0, n: int = 68, m: int = 10) -> PDM:
    rng = np.random.default_rng(seed)
    mean = rng.normal(scale=40.0, size=(n, 3))
    basis, _ = np.linalg.qr(rng.normal(size=(3 * n, m)))
    return PDM(mean=mean, components=basis.reshape(n, 3, m), eigenvalues=np.linspace(50, 5, m))


def test_euler_round_trip() -> None:
    for angles in [(0.1, -0.3, 0.2), (-0.5, 0.4, -1.2), (0.0, 0.0, 0.0)]:
        matrix = euler_to_matrix(*angles)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler(matrix), angles, atol=1e-12)


def test_pdm_fit_recovers_a_synthetic_shape() -> None:
    pdm = _synthetic_pdm()
    rng = np.random.default_rng(1)
    truth = PDMParams(
        scale=2.7,
        rotation=(0.15, -0.25, 0.3),
        translation=(320.0, 240.0),
        local=rng.normal(size=pdm.n_modes) * np.sqrt(pdm.eigenvalues),
    )
    landmarks = pdm.project(truth)
    fit = pdm.fit(landmarks, regularisation=0.0)
    assert fit.scale == pytest.approx(truth.scale, rel=1e-6)
    np.testing.assert_allclose(fit.rotation, truth.rotation, atol=1e-6)
    np.testing.assert_allclose(fit.translation, truth.translation, atol=1e-4)
    np.testing.assert_allclose(fit.local, truth.local, atol=1e-4)
    # the shape prior pulls the non-rigid parameters towards zero, never past the truth
    shrunk = pdm.fit(landmarks, regularisation=1e4)
    assert np.linalg.norm(shrunk.local) < np.linalg.norm(truth.local)


def test_pdm_fit_is_resolution_independent_and_validates() -> None:
    pdm = _synthetic_pdm(seed=3)
    truth = PDMParams(1.0, (0.0, 0.1, 0.0), (0.0, 0.0), np.full(pdm.n_modes, 2.0))
    small = pdm.fit(pdm.project(truth) + np.random.default_rng(0).normal(size=(68, 2)))
    big = pdm.fit(4.0 * (pdm.project(truth) + np.random.default_rng(0).normal(size=(68, 2))))
    np.testing.assert_allclose(small.local, big.local, atol=1e-6)
    assert big.scale == pytest.approx(4.0 * small.scale)
    with pytest.raises(ValueError, match="68 x 2 finite landmarks"):
        pdm.fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="all at one point"):
        pdm.fit(np.ones((68, 2)))


def test_similarity_recovers_scale_and_rotation() -> None:
    points = np.random.default_rng(0).normal(size=(24, 2))
    angle, scale = 0.4, 1.7
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * points @ turn.T + [5.0, -3.0]
    np.testing.assert_allclose(similarity(points, moved), scale * turn, atol=1e-12)


def test_warp_puts_the_face_centre_in_the_middle_and_masks_outside() -> None:
    pdm = _synthetic_pdm(seed=2, m=3)
    params = PDMParams(2.0, (0.0, 0.0, 0.2), (100.0, 80.0), np.zeros(3))
    landmarks = pdm.project(params)
    matrix = warp_matrix(landmarks, params, pdm)
    np.testing.assert_allclose(matrix[:, :2] @ [100.0, 80.0] + matrix[:, 2], [SIDE / 2, SIDE / 2])
    triangle = np.array([[0, 1, 2]])
    points = np.zeros((68, 2))
    points[:3] = [[10.0, 90.0], [100.0, 90.0], [55.0, 100.0]]
    mask = face_mask(points, triangle)
    assert mask[95, 55] == 1 and mask[5, 5] == 0 and mask.dtype == np.uint8


def test_golden_real_model_files(openface_dir: Path) -> None:
    from engine.aus.openface.model import OpenFaceModel

    model = OpenFaceModel.load(openface_dir)
    assert model.pdm.n_points == 68 and model.pdm.n_modes == 34
    assert model.triangles.shape == (111, 3)
    expected = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
                "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45"]  # fmt: skip
    assert list(model.intensity.aus) == expected
    assert list(model.presence.aus) == sorted([*expected, "AU28"])
    assert model.intensity.means.shape == (17, 4464 + 238)
    assert model.version.startswith("openface-2.2-static-sha256:")
    # the mean shape is a frontal face: eyes (36-47) above the mouth (48-67) in image y (down)
    mean = model.pdm.mean
    assert mean[36:48, 1].mean() < mean[48:68, 1].mean()
    assert mean[36, 0] < mean[45, 0]
