"""scripts/write_views.py: a FER+ folder of augmented views that the FER+ reader reads as FER+."""

import cv2
import numpy as np
import pytest

from engine.data.datasets import read_dataset

pytest.importorskip("torch")

from scripts.write_views import write_views  # noqa: E402


@pytest.fixture
def ferplus(tmp_path):
    folder = tmp_path / "ferplus" / "FER2013Train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for index, votes in enumerate(("10,0,0,0,0,0,0,0,0,0", "0,9,1,0,0,0,0,0,0,0")):
        name = f"fer{index:07d}.png"
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (48, 48), dtype=np.uint8))
        rows.append(f'{name},"(0, 0, 48, 48)",{votes}')
    (folder / "label.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "ferplus"


def test_every_face_gets_a_view_the_reader_reads_with_the_same_votes(ferplus, tmp_path):
    out = tmp_path / "views"
    assert write_views(ferplus, "train", seed=0, out=out) == 2
    original = read_dataset(f"ferplus:{ferplus}", split="train").records
    views = read_dataset(f"ferplus:{out}", split="train").records
    assert [(r.relpath, r.label, r.soft_label) for r in views] == [
        (r.relpath, r.label, r.soft_label) for r in original
    ]
    for a, b in zip(original, views, strict=True):
        face, view = cv2.imread(str(a.path), 0), cv2.imread(str(b.path), 0)
        assert view.shape == (48, 48) and not np.array_equal(face, view)


def test_the_seed_decides_the_views(ferplus, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_views(ferplus, "train", seed=seed, out=tmp_path / name)
    read = {n: cv2.imread(str(tmp_path / n / "FER2013Train" / "fer0000000.png"), 0) for n in "abc"}
    assert np.array_equal(read["a"], read["b"]) and not np.array_equal(read["a"], read["c"])


def test_an_unknown_split_or_a_missing_label_file_is_named(ferplus, tmp_path):
    with pytest.raises(ValueError, match="unknown FER\\+ split 'dev'"):
        write_views(ferplus, "dev", seed=0, out=tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="label.csv"):
        write_views(ferplus, "valid", seed=0, out=tmp_path / "v")
