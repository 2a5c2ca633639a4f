"""The wheel carries data/ and templates/, and the engine finds them there."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
    )
    return next(out.glob("expllm-*.whl"))


def test_wheel_holds_resources_and_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "engine/_resources/data/au_definitions.csv",
        "engine/_resources/data/prototypes.csv",
        "engine/_resources/data/blendshape_to_au.csv",
        "engine/_resources/templates/cot/listing.j2",
        "engine/weights/mesh_au_head.npz",
        "engine/weights/nano_encoder.onnx",
        "engine/weights/expllm_nano/expllm_model.json",
        "engine/weights/expllm_nano/projector.safetensors",
        "engine/weights/expllm_nano/adapter/adapter_model.safetensors",
        "flows/cli.py",
    ):
        assert expected in names, expected


def test_installed_wheel_finds_its_resources(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = (
        "from engine.resources import data_dir, templates_dir; "
        "from engine.cot.rules import RuleBook; RuleBook.load(); "
        "print(data_dir()); print(templates_dir())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path / "site")},
        check=True,
    )
    data, templates = result.stdout.split()
    assert data == str(tmp_path / "site" / "engine" / "_resources" / "data")
    assert templates == str(tmp_path / "site" / "engine" / "_resources" / "templates")
