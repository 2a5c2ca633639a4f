"""Dataset readers: every layout built in tmp_path from real FER+ images, plus real FER+ counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.datasets import (
    TEST_OR_ALL,
    Dataset,
    canonical_label,
    dataset_kinds,
    is_aligned_kind,
    normalise_split,
    read_dataset,
)
from engine.data.images import load_image
from engine.types import EMOTIONS

VOTES_HEADER = "neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


@pytest.fixture(scope="module")
def faces(ferplus_dir: Path) -> list[Path]:
    """Eight real 48x48 FER+ test images."""
    return sorted((ferplus_dir / "FER2013Test").glob("*.png"))[:8]


def _jpg(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.open(source).convert("RGB").save(target, quality=95)
    return target


def _labels(dataset: Dataset) -> dict[str, str | None]:
    return {record.relpath: record.label for record in dataset}


# --- FER+ ---------------------------------------------------------------------------------------

FERPLUS_ROWS = {  # name -> votes in FER+ column order
    "a.png": [0, 8, 2, 0, 0, 0, 0, 0, 0, 0],  # happiness both ways
    "b.png": [4, 4, 0, 0, 0, 0, 0, 0, 2, 0],  # tie: dropped by majority, neutral by plurality
    "c.png": [1, 0, 0, 0, 0, 0, 0, 0, 6, 3],  # unknown majority: dropped / neutral
    "d.png": [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # NF only: dropped by both
    "e.png": [0, 0, 1, 0, 0, 0, 3, 0, 0, 0],  # fear both ways
}


@pytest.fixture()
def ferplus_root(tmp_path: Path, faces: list[Path]) -> Path:
    root = tmp_path / "ferplus"
    for folder, rows in (("FER2013Train", FERPLUS_ROWS), ("FER2013Test", {"z.png": [9] + [0] * 9})):
        (root / folder).mkdir(parents=True)
        lines = []
        for (name, votes), face in zip(rows.items(), faces, strict=False):
            shutil.copy(face, root / folder / name)
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ferplus_majority(ferplus_root: Path) -> None:
    data = read_dataset(f"ferplus:{ferplus_root}")
    assert _labels(data) == {
        "FER2013Train/a.png": "happiness",
        "FER2013Train/e.png": "fear",
        "FER2013Test/z.png": "neutral",
    }
    assert data.dropped == {"train": {"tie": 1, "unknown majority": 1, "NF majority": 1}}
    assert [r.split for r in data] == ["train", "train", "test"]
    happy = data.records[0]
    assert happy.record_id == "ferplus/train/FER2013Train/a.png"
    assert happy.soft_label == pytest.approx(
        {**dict.fromkeys(EMOTIONS, 0.0), "happiness": 0.8, "surprise": 0.2}
    )
    assert happy.box is None and happy.extras["votes"] == "0,8,2,0,0,0,0,0,0,0"
    assert load_image(happy).shape == (48, 48, 3)


def test_ferplus_plurality(ferplus_root: Path) -> None:
    data = read_dataset(f"ferplus:{ferplus_root}", split="train", protocol="plurality")
    assert _labels(data) == {
        "FER2013Train/a.png": "happiness",
        "FER2013Train/b.png": "neutral",
        "FER2013Train/c.png": "neutral",
        "FER2013Train/e.png": "fear",
    }
    assert data.dropped == {"train": {"no emotion votes": 1}}
    tie = data.records[1].soft_label
    assert tie is not None and tie["neutral"] == tie["happiness"] == 0.5
    assert all(sum(r.soft_label.values()) == pytest.approx(1) for r in data if r.soft_label)


def test_ferplus_errors(ferplus_root: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no FER\\+ folder"):
        read_dataset(f"ferplus:{tmp_path / 'empty'}")
    (ferplus_root / "FER2013Valid").mkdir()
    with pytest.raises(FileNotFoundError, match=r"FER\+ label file .*FER2013Valid/label.csv"):
        read_dataset(f"ferplus:{ferplus_root}")
    (ferplus_root / "FER2013Valid" / "label.csv").write_text('x.png,"(0, 0, 48, 48)",1,2\n')
    with pytest.raises(ValueError, match=r"FER2013Valid/label.csv:1: expected name, box and 10"):
        read_dataset(f"ferplus:{ferplus_root}")
    bad_votes = 'x.png,"(0, 0, 48, 48)",' + "a," * 9 + "0\n"
    (ferplus_root / "FER2013Valid" / "label.csv").write_text(bad_votes)
    with pytest.raises(ValueError, match=r"label.csv:1: non-integer vote"):
        read_dataset(f"ferplus:{ferplus_root}")


def test_ferplus_real_counts(ferplus_dir: Path) -> None:
    counts = {
        protocol: {
            split: len(read_dataset(f"ferplus:{ferplus_dir}", split, protocol))
            for split in ("train", "valid", "test")
        }
        for protocol in ("majority", "plurality")
    }
    assert counts == {
        "majority": {"train": 26940, "valid": 3396, "test": 3371},
        "plurality": {"train": 28556, "valid": 3579, "test": 3573},
    }


def test_ferplus_real_ids_unique(ferplus_dir: Path) -> None:
    data = read_dataset(f"ferplus:{ferplus_dir}")
    ids = [record.record_id for record in data]
    assert len(ids) == len(set(ids)) == 26940 + 3396 + 3371


def test_limit_is_stratified_and_nested(ferplus_dir: Path) -> None:
    small = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=8)
    large = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=40)
    assert len(small) == 8 and len(large) == 40
    assert {r.label for r in small} == set(EMOTIONS)
    assert {r.record_id for r in small} <= {r.record_id for r in large}
    assert [r.relpath for r in small] == sorted(r.relpath for r in small)
    again = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=8)
    assert again.records == small.records


# --- FER2013 csv --------------------------------------------------------------------------------


@pytest.fixture()
def fer2013_csv(tmp_path: Path, faces: list[Path]) -> Path:
    usages = ["Training", "Training", "PublicTest", "PrivateTest"]
    lines = [" emotion, pixels, Usage"]  # the Kaggle icml_face_data.csv pads names with spaces
    for code, (face, usage) in enumerate(zip(faces, usages, strict=False)):
        grey = np.asarray(Image.open(face).convert("L"))
        lines.append(f"{code},{' '.join(map(str, grey.ravel()))},{usage}")
    path = tmp_path / "kaggle" / "fer2013.csv"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fer2013(fer2013_csv: Path, faces: list[Path]) -> None:
    for spec in (f"fer2013:{fer2013_csv}", f"fer2013:{fer2013_csv.parent}"):
        data = read_dataset(spec)
        assert [(r.split, r.label, r.relpath) for r in data] == [
            ("train", "anger", "fer2013.csv#row=0"),
            ("train", "disgust", "fer2013.csv#row=1"),
            ("valid", "fear", "fer2013.csv#row=2"),
            ("test", "happiness", "fer2013.csv#row=3"),
        ]
    record = data.records[2]
    assert record.record_id == "fer2013/valid/fer2013.csv#row=2"
    assert record.root == fer2013_csv.parent
    assert np.array_equal(load_image(record), np.asarray(Image.open(faces[2]).convert("RGB")))


def test_fer2013_errors(fer2013_csv: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FER2013 csv .*fer2013.csv not found"):
        read_dataset(f"fer2013:{fer2013_csv.parent.parent}")
    fer2013_csv.write_text("emotion,pixels,Usage\n9,1 2 3 4,Training\n")
    with pytest.raises(ValueError, match=r"fer2013.csv:2: emotion '9'"):
        read_dataset(f"fer2013:{fer2013_csv}")
    fer2013_csv.write_text("emotion,pixels,Usage\n1,1 2 3 4,Later\n")
    with pytest.raises(ValueError, match=r"fer2013.csv:2: Usage 'Later'"):
        read_dataset(f"fer2013:{fer2013_csv}")
    fer2013_csv.write_text("label,image\n1,1 2 3 4\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['emotion', 'pixels'\]"):
        read_dataset(f"fer2013:{fer2013_csv}")


# --- RAF-DB -------------------------------------------------------------------------------------


@pytest.fixture()
def rafdb_root(tmp_path: Path, faces: list[Path]) -> Path:
    root = tmp_path / "RAF-DB" / "basic"
    names = ["train_00001.jpg 5", "train_00002.jpg 4", "test_0001.jpg 7", "test_0002.jpg 1"]
    for face, line in zip(faces, names[:3], strict=False):  # test_0002 has no image
        stem = line.split(".")[0]
        _jpg(face, root / "Image" / "aligned" / f"{stem}_aligned.jpg")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(names) + "\n")
    return root


def test_rafdb(rafdb_root: Path) -> None:
    data = read_dataset(f"rafdb:{rafdb_root}")
    assert [(r.split, r.label, r.relpath) for r in data] == [
        ("train", "sadness", "Image/aligned/train_00001_aligned.jpg"),
        ("train", "happiness", "Image/aligned/train_00002_aligned.jpg"),
        ("test", "neutral", "Image/aligned/test_0001_aligned.jpg"),
        ("test", "surprise", "Image/aligned/test_0002_aligned.jpg"),  # kept though missing
    ]
    assert load_image(data.records[0]).shape == (48, 48, 3)
    assert len(read_dataset(f"rafdb:{rafdb_root}", split="test")) == 2
    with pytest.raises(ValueError, match=r"split 'valid' not found .*present: \['train', 'test'\]"):
        read_dataset(f"rafdb:{rafdb_root}", split="val")


def test_rafdb_errors(rafdb_root: Path) -> None:
    labels = rafdb_root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text("train_00001.jpg 5\ntrain_00002.jpg 8\n")
    with pytest.raises(ValueError, match=r"list_patition_label.txt:2: expected"):
        read_dataset(f"rafdb:{rafdb_root}")
    labels.unlink()
    with pytest.raises(FileNotFoundError, match="RAF-DB label file .*list_patition_label.txt"):
        read_dataset(f"rafdb:{rafdb_root}")


# --- AffectNet ----------------------------------------------------------------------------------


def test_affectnet_kaggle_folders(tmp_path: Path, faces: list[Path]) -> None:
    root = tmp_path / "affectnet"
    layout = [
        "train/class001/a.jpg",
        "train/class008/b.jpg",
        "val/class002/c.jpg",
        "test/class007/d.jpg",
    ]
    for face, relpath in zip(faces, layout, strict=False):
        _jpg(face, root / relpath)
    data = read_dataset(f"affectnet:{root}")
    assert [(r.split, r.label, r.relpath) for r in data] == [
        ("train", "neutral", "train/class001/a.jpg"),
        ("train", "contempt", "train/class008/b.jpg"),
        ("valid", "happiness", "val/class002/c.jpg"),
        ("test", "anger", "test/class007/d.jpg"),
    ]
    assert all(r.box is None for r in data)
    seven = read_dataset(f"affectnet:{root}", classes=7)
    assert "contempt" not in {r.label for r in seven}
    assert seven.dropped == {"train": {"contempt (classes=7)": 1}}
    unsplit = read_dataset(f"affectnet:{root / 'train'}")
    assert {r.split for r in unsplit} == {"unsplit"}
    assert unsplit.records[0].record_id == "affectnet/unsplit/class001/a.jpg"


def test_affectnet_csv(tmp_path: Path, faces: list[Path]) -> None:
    root = tmp_path / "AffectNet"
    for face, name in zip(faces, ["1/a.jpg", "1/b.jpg", "2/c.jpg"], strict=False):
        _jpg(face, root / "Manually_Annotated_Images" / name)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir()
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression"
    (lists / "training.csv").write_text(
        f'{head}\n1/a.jpg,2,3,40,41,"1;2",1\n1/b.jpg,0,0,48,48,"",7\n1/x.jpg,0,0,9,9,"",9\n'
        '1/y.jpg,0,0,9,9,"",10\n'
    )
    (lists / "validation.csv").write_text(f'{head}\n2/c.jpg,5,5,30,30,"",0\n')
    data = read_dataset(f"affectnet:{root}")
    assert [(r.split, r.label, r.relpath, r.box) for r in data] == [
        ("train", "happiness", "Manually_Annotated_Images/1/a.jpg", (2, 3, 40, 41)),
        ("train", "contempt", "Manually_Annotated_Images/1/b.jpg", (0, 0, 48, 48)),
        ("valid", "neutral", "Manually_Annotated_Images/2/c.jpg", (5, 5, 30, 30)),
    ]
    assert data.dropped == {"train": {"uncertain": 1, "no-face": 1}}
    seven = read_dataset(f"affectnet:{root}", split="train", classes=7)
    assert len(seven) == 1
    assert seven.dropped == {"train": {"uncertain": 1, "no-face": 1, "contempt (classes=7)": 1}}
    with pytest.raises(ValueError, match="classes must be 7 or 8"):
        read_dataset(f"affectnet:{root}", classes=6)
    (lists / "validation.csv").write_text(f'{head}\n2/c.jpg,5,5,30,30,"",11\n')
    with pytest.raises(ValueError, match=r"validation.csv:2: expression '11'"):
        read_dataset(f"affectnet:{root}")
    (lists / "validation.csv").write_text(f"{head}\n2/c.jpg,5,5,wide,30\n")
    with pytest.raises(ValueError, match=r"validation.csv:2: 5 fields, header has 7"):
        read_dataset(f"affectnet:{root}")


# --- class folders ------------------------------------------------------------------------------


def test_folder_unsplit_with_synonyms(tmp_path: Path, faces: list[Path]) -> None:
    root = tmp_path / "photos"
    for face, relpath in zip(faces, ["Happy/a.png", "sad/b.png", "joy/sub/c.png"], strict=False):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face, root / relpath)
    (root / "sad" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    data = read_dataset(f"folder:{root}")
    assert [(r.split, r.label, r.relpath) for r in data] == [
        ("unsplit", "happiness", "Happy/a.png"),
        ("unsplit", "happiness", "joy/sub/c.png"),
        ("unsplit", "sadness", "sad/b.png"),
    ]
    assert data.records[0].record_id == "folder/unsplit/Happy/a.png"


def test_ckplus_split_folders(tmp_path: Path, faces: list[Path]) -> None:
    root = tmp_path / "ckplus"
    layout = ["train/anger/a.png", "train/contempt/b.png", "test/surprise/c.png", "test/fear/d.png"]
    for face, relpath in zip(faces, layout, strict=False):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face, root / relpath)
    data = read_dataset(f"ckplus:{root}", split="test")
    assert [(r.split, r.label, r.relpath) for r in data] == [
        ("test", "fear", "test/fear/d.png"),
        ("test", "surprise", "test/surprise/c.png"),
    ]
    assert len(read_dataset(f"ckplus:{root}")) == 4
    # scoring's default split: the test split where there is one, else every face (CK+48's
    # class folders have no splits)
    assert read_dataset(f"ckplus:{root}", split=TEST_OR_ALL).records == data.records
    flat = tmp_path / "CK+48"
    for face, relpath in zip(faces, ["anger/a.png", "happy/b.png"], strict=False):
        (flat / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face, flat / relpath)
    every = read_dataset(f"ckplus:{flat}", split=TEST_OR_ALL)
    assert [(r.split, r.label) for r in every] == [("unsplit", "anger"), ("unsplit", "happiness")]
    with pytest.raises(ValueError, match="split 'test' not found"):
        read_dataset(f"ckplus:{flat}", split="test")


def test_folder_errors(tmp_path: Path, faces: list[Path]) -> None:
    root = tmp_path / "photos"
    (root / "happy").mkdir(parents=True)
    (root / "bored").mkdir()
    (root / "sleepy").mkdir()
    with pytest.raises(
        ValueError,
        match=r"unknown class folder\(s\) \['bored', 'sleepy'\]; "
        r"accepted names: \[.*'afraid'",
    ):
        read_dataset(f"folder:{root}")
    (root / "bored").rmdir()
    (root / "sleepy").rename(root / "train")
    with pytest.raises(ValueError, match=r"mixes split folders with other folders \['happy'\]"):
        read_dataset(f"folder:{root}")
    with pytest.raises(ValueError, match="unknown class folder.*accepted names: \\['class001'"):
        (root / "happy").rename(root / "train" / "happy")
        read_dataset(f"affectnet:{root / 'train'}")


# --- spec-level errors and helpers --------------------------------------------------------------


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not KIND:PATH"):
        read_dataset(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown dataset kind 'imagenet'; choose one of .*rafdb"):
        read_dataset(f"imagenet:{tmp_path}")
    with pytest.raises(FileNotFoundError, match=f"dataset root {tmp_path / 'gone'} does not"):
        read_dataset(f"ferplus:{tmp_path / 'gone'}")
    with pytest.raises(ValueError, match="unknown protocol 'vote'"):
        read_dataset(f"ferplus:{tmp_path}", protocol="vote")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['classes'\] for kind 'rafdb'"):
        read_dataset(f"rafdb:{tmp_path}", classes=7)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        read_dataset(f"ferplus:{tmp_path}", split="dev")


def test_helpers() -> None:
    assert set(dataset_kinds()) >= {"ferplus", "fer2013", "rafdb", "affectnet", "folder", "ckplus"}
    assert [is_aligned_kind(k) for k in ("ferplus", "fer2013", "rafdb", "ckplus")] == [True] * 4
    assert not is_aligned_kind("affectnet") and not is_aligned_kind("folder")
    assert not is_aligned_kind("nonsense")
    assert normalise_split("Validation") == "valid" and normalise_split("PrivateTest") == "test"
    assert [canonical_label(n) for n in ("Joy", "afraid", "calm", "contemptuous")] == [
        "happiness",
        "fear",
        "neutral",
        "contempt",
    ]
    assert canonical_label("bored") is None
