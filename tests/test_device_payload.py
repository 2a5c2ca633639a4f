"""scripts/device_payload.py: a GPU job's files cut into carries that fit one device call each."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from scripts.device_payload import LIMIT, join, split, tree_bytes


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    made = []
    for name, size in (("lm.whl", 2500), ("pack.xz", 900), ("empty.txt", 0)):
        path = tmp_path / "src" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        made.append(path)
    return made


def test_each_call_carries_at_most_the_budget_and_the_parts_join_to_the_files(tmp_path, files):
    folders = split(files, tmp_path / "device", budget=1000)
    sizes = [sum(p.stat().st_size for p in f.iterdir() if p.suffix != ".json") for f in folders]
    assert len(folders) == 4 and max(sizes) <= 1000 and sum(sizes) == 3400
    joined = join(tmp_path / "device", tmp_path / "joined")
    assert [p.name for p in joined] == [f.name for f in files]
    for original, back in zip(files, joined, strict=True):
        assert back.read_bytes() == original.read_bytes()


def test_a_missing_call_is_named_before_anything_runs(tmp_path, files):
    folders = split(files, tmp_path / "device", budget=1000)
    shutil.rmtree(folders[1])
    with pytest.raises(FileNotFoundError, match="parts of lm.whl missing"):
        join(tmp_path / "device", tmp_path / "joined")


def test_a_part_left_from_another_job_fails_the_checksum(tmp_path, files):
    folders = split(files, tmp_path / "device", budget=1000)
    stale = folders[0] / "lm.whl.part-000"
    stale.write_bytes(bytes(reversed(stale.read_bytes())))
    with pytest.raises(ValueError, match="sha256"):
        join(tmp_path / "device", tmp_path / "joined")


def test_nothing_to_carry_beside_a_full_tree_or_a_missing_file_is_refused(tmp_path, files):
    with pytest.raises(ValueError, match="working tree alone"):
        split(files, tmp_path / "device", budget=0)
    with pytest.raises(FileNotFoundError, match="nope.whl"):
        split([tmp_path / "nope.whl"], tmp_path / "device", budget=1000)


def test_the_working_tree_leaves_room_for_a_carry():
    tree = tree_bytes(Path(__file__).resolve().parents[1])
    assert 0 < tree < LIMIT / 2
