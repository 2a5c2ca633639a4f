"""The dataset readers of ``engine.data.datasets.READERS``: FER+, FER2013, RAF-DB, AffectNet and
class folders (``folder``, ``ckplus``), each mapping its labels onto ``EMOTIONS``."""

from __future__ import annotations

import csv
import posixpath
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.data.datasets import Dataset, canonical_label, label_maps, register_reader
from engine.data.images import row_ref
from engine.types import EMOTIONS, FaceRecord

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)


def _record(
    kind: str, split: str, root: Path, relpath: str, label: str, where: str = "", **fields: Any
) -> FaceRecord:
    if _escapes(relpath):
        raise ValueError(
            f"{where or root}: image path {relpath!r} leads outside the dataset root {root}"
        )
    return FaceRecord(f"{kind}/{split}/{relpath}", kind, split, root, relpath, label, **fields)


def _escapes(relpath: str) -> bool:
    """Whether ``relpath`` (before any ``#row=`` fragment) leads outside its root, lexically."""
    path = relpath.split("#row=", 1)[0].replace("\\", "/")
    normal = posixpath.normpath(path)
    return path.startswith("/") or normal == ".." or normal.startswith("../")


def _plain(dropped: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {split: dict(counts) for split, counts in dropped.items() if counts}


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    return path


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a headed CSV as (line number, {stripped column: value}); checks the header."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in required if name not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise ValueError(
                    f"{path}:{reader.line_num}: {len(values)} fields, header has {len(header)}"
                )
            yield reader.line_num, dict(zip(header, values, strict=True))


def _images_under(folder: Path) -> Iterator[Path]:
    """Files named as images under ``folder`` (hidden ones aside). Symbolic links that do not
    lead to a file (broken, looping, to a folder) are yielded too: the image stage rejects them
    with the reason, so no image file is skipped without a word."""
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or _hidden(path, folder):
            continue
        if path.is_file() or path.is_symlink():
            yield path


def _hidden(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- FER+ -------------------------------------------------------------------------------------


@register_reader("ferplus", aligned=True)
def _read_ferplus(root: Path, protocol: str) -> Dataset:
    """FER+ ``FER2013Train|Valid|Test/label.csv`` (no header: name, box, 10 vote columns).

    ``majority``: the most voted of the 10 columns, rows with ties or an unknown/NF majority
    dropped. ``plurality``: the most voted of the 8 emotions, ties broken by vote order, rows
    without emotion votes dropped. ``soft_label`` is the normalised 8-emotion vote distribution.
    """
    spec = label_maps()["datasets"]["ferplus"]
    columns: list[str] = spec["votes"]
    folders = [(root / folder, split) for folder, split in spec["splits"].items()]
    if not any(folder.is_dir() for folder, _ in folders):
        raise FileNotFoundError(f"no FER+ folder ({', '.join(spec['splits'])}) under {root}")
    records: list[FaceRecord] = []
    dropped: dict[str, Counter[str]] = defaultdict(Counter)
    for folder, split in folders:
        if not folder.is_dir():
            continue
        labels = _require(folder / "label.csv", "FER+ label file")
        with labels.open(newline="", encoding="utf-8") as handle:
            for number, values in enumerate(csv.reader(handle), start=1):
                if not values:
                    continue
                try:
                    name, votes = values[0], [int(v) for v in values[2:]]
                except ValueError:
                    raise ValueError(f"{labels}:{number}: non-integer vote in {values}") from None
                if len(votes) == len(columns) and name and min(votes) < 0:
                    raise ValueError(f"{labels}:{number}: negative vote count in {values}")
                if len(votes) != len(columns) or not name:
                    raise ValueError(
                        f"{labels}:{number}: expected name, box and {len(columns)} vote counts"
                    )
                label, reason = _ferplus_label(votes, columns, protocol)
                if label is None:
                    dropped[split][reason] += 1
                    continue
                emotion_votes = sum(votes[: len(EMOTIONS)])
                soft = {e: votes[i] / emotion_votes for i, e in enumerate(EMOTIONS)}
                relpath = f"{folder.name}/{name}"
                extras = {"votes": ",".join(map(str, votes))}
                where = f"{labels}:{number}"
                records.append(
                    _record(
                        "ferplus",
                        split,
                        root,
                        relpath,
                        label,
                        where,
                        soft_label=soft,
                        extras=extras,
                    )
                )
    return Dataset("ferplus", root, records, _plain(dropped))


def _ferplus_label(votes: list[int], columns: list[str], protocol: str) -> tuple[str | None, str]:
    if protocol == "majority":
        top = max(votes)
        winners = [c for c, v in zip(columns, votes, strict=True) if v == top]
        if len(winners) > 1:
            return None, "tie"
        if winners[0] not in EMOTIONS:
            return None, f"{winners[0]} majority"
        return winners[0], ""
    emotion_votes = votes[: len(EMOTIONS)]
    if max(emotion_votes) == 0:
        return None, "no emotion votes"
    return EMOTIONS[emotion_votes.index(max(emotion_votes))], ""


# --- FER2013 (Kaggle csv) -----------------------------------------------------------------------


@register_reader("fer2013", aligned=True)
def _read_fer2013(root: Path, protocol: str) -> Dataset:
    """Kaggle ``fer2013.csv`` (emotion, pixels, Usage); PATH is the csv or a folder holding it.

    Records point at rows: ``relpath = "fer2013.csv#row=<n>"``; rows without a ``Usage``
    column get split ``unsplit``.
    """
    del protocol  # single labels
    table = root if root.is_file() else _require(root / "fer2013.csv", "FER2013 csv")
    base = table.parent
    spec = label_maps()["datasets"]["fer2013"]
    records: list[FaceRecord] = []
    for row, (number, fields) in enumerate(_csv_rows(table, ("emotion", "pixels"))):
        code = fields["emotion"].strip()
        if code not in spec["labels"]:
            raise ValueError(f"{table}:{number}: emotion {code!r} not in {list(spec['labels'])}")
        usage = fields.get("Usage", "").strip()
        if usage and usage not in spec["splits"]:
            raise ValueError(f"{table}:{number}: Usage {usage!r} not in {list(spec['splits'])}")
        split = spec["splits"][usage] if usage else "unsplit"
        relpath = row_ref(table.name, row)
        records.append(_record("fer2013", split, base, relpath, spec["labels"][code]))
    return Dataset("fer2013", base, records)


# --- RAF-DB -------------------------------------------------------------------------------------


@register_reader("rafdb", aligned=True)
def _read_rafdb(root: Path, protocol: str) -> Dataset:
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` and ``Image/aligned/*_aligned.jpg``."""
    del protocol  # single labels
    spec = label_maps()["datasets"]["rafdb"]
    labels = _require(root / "EmoLabel" / "list_patition_label.txt", "RAF-DB label file")
    records: list[FaceRecord] = []
    for number, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        prefix = parts[0].split("_")[0] if parts else ""
        if len(parts) != 2 or parts[1] not in spec["labels"] or prefix not in spec["splits"]:
            raise ValueError(
                f"{labels}:{number}: expected '<train|test>_NNNNN.jpg <1-7>', got {line!r}"
            )
        stem = parts[0].rsplit(".", 1)[0]
        relpath = f"Image/aligned/{stem}_aligned.jpg"
        split = spec["splits"][prefix]
        records.append(_record("rafdb", split, root, relpath, spec["labels"][parts[1]]))
    return Dataset("rafdb", root, records)


# --- AffectNet ----------------------------------------------------------------------------------


@register_reader("affectnet", aligned=False)
def _read_affectnet(root: Path, protocol: str, classes: int = 8) -> Dataset:
    """AffectNet, official CSV layout or Kaggle ``[<split>/]class00N/`` folders.

    The CSV layout is ``Manually_Annotated_file_lists/training.csv|validation.csv`` with images
    under ``Manually_Annotated_Images/`` (or ``Manually_Annotated/Manually_Annotated_Images/``);
    its face boxes become ``FaceRecord.box`` and codes 8-10 are dropped. ``classes=7`` drops
    contempt.
    """
    del protocol  # single labels
    if classes not in (7, 8):
        raise ValueError(f"affectnet option classes must be 7 or 8, got {classes!r}")
    lists = root / "Manually_Annotated_file_lists"
    dataset = _affectnet_csv(root, lists) if lists.is_dir() else _affectnet_folders(root)
    if classes == 8:
        return dataset
    dropped = defaultdict(Counter, {s: Counter(c) for s, c in dataset.dropped.items()})
    for record in dataset.records:
        if record.label == "contempt":
            dropped[record.split]["contempt (classes=7)"] += 1
    kept = [record for record in dataset.records if record.label != "contempt"]
    return Dataset(dataset.kind, dataset.root, kept, _plain(dropped))


def _affectnet_csv(root: Path, lists: Path) -> Dataset:
    spec = label_maps()["datasets"]["affectnet_csv"]
    candidates = [
        root / "Manually_Annotated_Images",
        root / "Manually_Annotated" / "Manually_Annotated_Images",
    ]
    images = next((c for c in candidates if c.is_dir()), candidates[0])
    prefix = images.relative_to(root).as_posix()
    present = [(lists / name, split) for name, split in spec["splits"].items()]
    if not any(path.is_file() for path, _ in present):
        raise FileNotFoundError(f"no AffectNet list ({', '.join(spec['splits'])}) in {lists}")
    columns = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height")
    records: list[FaceRecord] = []
    dropped: dict[str, Counter[str]] = defaultdict(Counter)
    for table, split in present:
        if not table.is_file():
            continue
        for number, fields in _csv_rows(table, (*columns, "expression")):
            code = fields["expression"].strip()
            if code not in spec["labels"]:
                raise ValueError(f"{table}:{number}: expression {code!r} not in 0-10")
            if spec["labels"][code] is None:
                dropped[split][spec["dropped"][code]] += 1
                continue
            try:
                x, y, w, h = (int(float(fields[c])) for c in columns[1:])
            except ValueError:
                raise ValueError(f"{table}:{number}: face box is not numeric") from None
            relpath = f"{prefix}/{fields['subDirectory_filePath'].strip()}"
            records.append(
                _record(
                    "affectnet",
                    split,
                    root,
                    relpath,
                    spec["labels"][code],
                    f"{table}:{number}",
                    box=(x, y, w, h),
                )
            )
    return Dataset("affectnet", root, records, _plain(dropped))


def _affectnet_folders(root: Path) -> Dataset:
    classes: dict[str, str] = label_maps()["datasets"]["affectnet_folders"]["labels"]
    return _class_folders("affectnet", root, classes.get, sorted(classes))


# --- class folders ------------------------------------------------------------------------------


@register_reader("folder", aligned=False)
def _read_folder(root: Path, protocol: str) -> Dataset:
    """A sub-folder per class (names through the synonyms), optionally under split folders."""
    del protocol  # single labels
    return _class_folders("folder", root, canonical_label, sorted(label_maps()["synonyms"]))


@register_reader("ckplus", aligned=True)
def _read_ckplus(root: Path, protocol: str) -> Dataset:
    """CK+ face crops in class folders (as ``folder``)."""
    del protocol  # single labels
    return _class_folders("ckplus", root, canonical_label, sorted(label_maps()["synonyms"]))


def _class_folders(
    kind: str, root: Path, label_of: Callable[[str], str | None], accepted: list[str]
) -> Dataset:
    if not root.is_dir():
        raise NotADirectoryError(f"{kind} dataset root {root} is not a folder")
    top = _subfolders(root)
    synonyms = label_maps()["split_synonyms"]
    split_dirs = [d for d in top if d.name.lower() in synonyms]
    if split_dirs and len(split_dirs) != len(top):
        others = [d.name for d in top if d not in split_dirs]
        raise ValueError(f"{root} mixes split folders with other folders {others}")
    layout = [(d, synonyms[d.name.lower()]) for d in split_dirs] or [(root, "unsplit")]
    if len({split for _, split in layout}) != len(layout):
        raise ValueError(f"{root} has several folders for one split: {[d.name for d in top]}")
    records: list[FaceRecord] = []
    for folder, split in layout:
        class_dirs = _subfolders(folder)
        unknown = [d.name for d in class_dirs if label_of(d.name) is None]
        if unknown:
            raise ValueError(
                f"{folder}: unknown class folder(s) {unknown}; accepted names: {accepted}"
            )
        if not class_dirs:
            raise ValueError(f"{folder}: no class folders")
        for class_dir in class_dirs:
            label = label_of(class_dir.name)
            for image in _images_under(class_dir):
                relpath = image.relative_to(root).as_posix()
                records.append(_record(kind, split, root, relpath, label))
    if not records:
        raise ValueError(
            f"no images were found under {root} (image files end in "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return Dataset(kind, root, records)
