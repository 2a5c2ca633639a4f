"""The ``table`` back end: AU intensities precomputed by another tool, looked up by image.

Reads a CSV (``.csv``, ``.tsv``, ``.txt``) or Parquet (``.parquet``, ``.pq``) table in one of
three layouts, detected from its columns:

* ``pyfeat``: a py-feat ``Fex`` saved as CSV: ``AU01`` ... columns holding probabilities of
  presence (0-1), the image path in ``input``, ``FaceRectX/Y/Width/Height``, ``FaceScore`` and
  ``Pitch``/``Roll``/``Yaw`` in degrees.
* ``openface``: OpenFace 2 output (header names are stripped of OpenFace's leading spaces):
  ``AU01_r`` intensities (0-5) are used, ``AU01_c`` presence columns are ignored, pose is
  ``pose_Rx/Ry/Rz`` in radians. OpenFace writes no file name: add a column (one of
  ``KEY_COLUMNS``) or name one with ``key_column``.
* ``generic``: any table with AU columns (``AU01``, ``AU1``, ``au01_r``) and, optionally,
  sides (``AU12_L``/``AU12_R``, ``AU12_left``/``AU12_right``) and ``yaw``/``pitch``/``roll``
  in degrees. The case of the suffix matters: lower-case ``_r`` is OpenFace's intensity,
  upper-case ``_R`` the right side. A code with only sides gets the larger side as intensity.

Columns of codes missing from ``data/au_definitions.csv`` are ignored.

Rows are keyed by an image column (``key_column``, else the first of ``KEY_COLUMNS`` present).
A record matches the rows whose key ends with its ``relpath`` (so absolute paths such as
py-feat's ``input`` match), else the rows with the same file name, else the same stem (file
name without suffix). Several rows of one image (several faces) resolve to the one with the
highest ``FaceScore`` (``confidence`` for OpenFace); a tie, or rows of different images at the
same level, is ambiguous and rejects the record.

Scale (``scale``): ``"0-1"`` values are multiplied by 5, ``"0-5"`` values are used as they are;
``"auto"`` takes py-feat tables as 0-1, OpenFace tables as 0-5, and any other table as 0-1 when
no AU value exceeds 1. A py-feat probability times 5 is a strength of evidence, not a FACS
intensity grade.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from engine.aus import ESTIMATORS, MAX_INTENSITY, AUEstimator, au_definitions
from engine.types import AUReading, Face, FaceRecord, Pose, StageError

#: Image columns tried, in order, when ``key_column`` is not given.
KEY_COLUMNS: tuple[str, ...] = (
    "relpath",
    "image_path",
    "image",
    "input",
    "file",
    "filename",
    "name",
    "path",
)
SCALES: tuple[str, ...] = ("auto", "0-1", "0-5")

_AU_COLUMN = re.compile(r"^au[ _-]?0*(?P<number>\d{1,2})(?:_(?P<suffix>[a-z]+))?$", re.IGNORECASE)
#: Column name suffix -> kind; case matters for ``r`` (OpenFace intensity) against ``R`` (right).
_SUFFIX_KINDS = {"": "intensity", "r": "intensity", "R": "right", "L": "left", "l": "left"}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_SCORE_COLUMNS = {"pyfeat": "FaceScore", "openface": "confidence"}


@dataclass(frozen=True)
class AUColumns:
    """Which columns hold each AU's bilateral intensity and its left and right sides."""

    intensity: dict[str, str]
    left: dict[str, str]
    right: dict[str, str]

    @property
    def codes(self) -> list[str]:
        """AU codes with any column, in ``au_definitions`` order."""
        present = set(self.intensity) | set(self.left) | set(self.right)
        return [code for code in au_definitions() if code in present]

    @property
    def names(self) -> list[str]:
        """Every column used."""
        return [*self.intensity.values(), *self.left.values(), *self.right.values()]


def find_au_columns(columns: Iterable[str]) -> AUColumns:
    """Sort ``columns`` into AU intensity and side columns (presence ``_c`` ones are skipped).

    ``AU12`` and ``au12_r`` are intensities (the first seen wins), ``AU12_L``/``AU12_left`` the
    left and ``AU12_R``/``AU12_right`` the right side; codes unknown to ``au_definitions`` are
    left out.
    """
    known = au_definitions()
    found: dict[str, dict[str, str]] = {"intensity": {}, "left": {}, "right": {}}
    for column in columns:
        match = _AU_COLUMN.match(str(column).strip())
        if match is None:
            continue
        code = f"AU{int(match['number']):02d}"
        suffix = match["suffix"] or ""
        kind = _SUFFIX_KINDS.get(suffix) or {"left": "left", "right": "right"}.get(suffix.lower())
        if code not in known or kind is None:
            continue
        found[kind].setdefault(code, str(column))
    return AUColumns(**found)


def reading_from_row(
    row: Mapping[str, Any],
    columns: AUColumns,
    factor: float,
    backend: str,
    model_version: str,
    pose: Pose | None = None,
) -> AUReading | None:
    """The ``AUReading`` of one table row, values multiplied by ``factor`` and clipped to 0-5.

    Missing (NaN) values are left out; a row without any AU value (such as py-feat's row for an
    image without a face) gives None.
    """

    def value(column: str | None) -> float | None:
        raw = None if column is None else row.get(column)
        if raw is None or pd.isna(raw):
            return None
        return float(np.clip(float(raw) * factor, 0.0, MAX_INTENSITY))

    intensities: dict[str, float] = {}
    sides: dict[str, tuple[float, float]] = {}
    for code in columns.codes:
        left, right = value(columns.left.get(code)), value(columns.right.get(code))
        if left is not None and right is not None:
            sides[code] = (left, right)
        bilateral = value(columns.intensity.get(code))
        if bilateral is None and (left is not None or right is not None):
            bilateral = max(v for v in (left, right) if v is not None)
        if bilateral is not None:
            intensities[code] = bilateral
    if not intensities:
        return None
    return AUReading(intensities, backend, model_version, sides, pose)


def pose_columns(columns: Iterable[str], table_format: str) -> tuple[str, str, str] | None:
    """The (yaw, pitch, roll) columns: OpenFace's ``pose_Ry/Rx/Rz``, else ``yaw``/``pitch``/
    ``roll`` in any case (py-feat's ``Yaw``/``Pitch``/``Roll``); None when any is missing."""
    names = list(columns)
    if table_format == "openface":
        wanted = ("pose_Ry", "pose_Rx", "pose_Rz")
        return wanted if set(wanted) <= set(names) else None
    lower = {name.lower(): name for name in names}
    yaw, pitch, roll = (lower.get(axis, "") for axis in ("yaw", "pitch", "roll"))
    return (yaw, pitch, roll) if yaw and pitch and roll else None


def pose_from_row(
    row: Mapping[str, Any], columns: tuple[str, str, str] | None, radians: bool = False
) -> Pose | None:
    """Head pose in degrees from the (yaw, pitch, roll) ``columns``; None when absent or NaN."""
    if columns is None:
        return None
    values = [row.get(name) for name in columns]
    if any(v is None or pd.isna(v) for v in values):
        return None
    yaw, pitch, roll = (math.degrees(float(v)) if radians else float(v) for v in values)
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


def table_format(columns: Iterable[str]) -> str:
    """``"openface"`` (has ``AU01_r``/``AU01_c`` style columns), ``"pyfeat"`` (``AU01`` columns
    beside ``FaceRectX`` and ``FaceScore``) or ``"generic"``, from stripped column names."""
    names = set(columns)
    if any(re.fullmatch(r"AU\d\d_[rc]", name) for name in names):
        return "openface"
    if {"FaceScore", "FaceRectX"} <= names and any(re.fullmatch(r"AU\d\d", n) for n in names):
        return "pyfeat"
    return "generic"


@ESTIMATORS.register()
class TableEstimator(AUEstimator):
    """Looks a record's AU intensities up in a precomputed table (see the module docstring).

    ``path``: the CSV or Parquet table; ``key_column``: its image column; ``scale``: one of
    ``SCALES``. A bad table raises ValueError naming the file and the reason.
    """

    name: ClassVar[str] = "table"
    needs_pixels: ClassVar[bool] = False
    licence: ClassVar[str] = "that of the precomputed table's source (no model is run)"

    def __init__(self, path: str | Path, key_column: str | None = None, scale: str = "auto"):
        self.path = Path(path).expanduser()
        if scale not in SCALES:
            raise ValueError(
                f"AU table {self.path}: unknown scale {scale!r}; choose one of {SCALES}"
            )
        frame = _read_table(self.path)
        self.format = table_format(frame.columns)
        self.columns = find_au_columns(frame.columns)
        if not self.columns.codes:
            raise ValueError(
                f"AU table {self.path}: no AU columns (such as AU01, AU1, au01_r, AU12_L) of codes "
                f"in au_definitions.csv among {list(frame.columns)[:20]}"
            )
        self.key_column = _key_column(frame, key_column, self.path)
        self.factor = _factor(frame, self.columns, self.format, scale, self.path)
        self.pose_columns = pose_columns(frame.columns, self.format)
        self.score_column = _SCORE_COLUMNS.get(self.format)
        if self.score_column not in frame.columns:
            self.score_column = None
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.model_version = f"{self.format}:{self.path.name}:{digest}"
        keep = [self.key_column, *self.columns.names, *(self.pose_columns or ())]
        keep += [self.score_column] if self.score_column else []
        self._rows = frame[list(dict.fromkeys(keep))].to_dict("records")
        keys = frame[self.key_column]
        self._index = _KeyIndex(["" if pd.isna(key) else str(key) for key in keys])

    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        rows = self._index.lookup(record.relpath)
        if not rows:
            raise StageError("aus", f"no row for {record.relpath} in {self.path}")
        if len(rows) > 1:
            rows = self._best_scored(rows, record)
        row = self._rows[rows[0]]
        pose = pose_from_row(row, self.pose_columns, radians=self.format == "openface")
        reading = reading_from_row(
            row, self.columns, self.factor, self.name, self.model_version, pose
        )
        if reading is None:
            raise StageError(
                "aus", f"row for {record.relpath} in {self.path} has no AU values (no face)"
            )
        return reading

    def _best_scored(self, rows: list[int], record: FaceRecord) -> list[int]:
        """The one row with the highest face score; StageError when there is no clear one."""
        keys = {self._rows[i][self.key_column] for i in rows}
        score = self.score_column
        scores = [self._rows[i][score] if score else None for i in rows]
        if len(keys) == 1 and not any(s is None or pd.isna(s) for s in scores):
            best = max(scores)
            winners = [i for i, s in zip(rows, scores, strict=True) if s == best]
            if len(winners) == 1:
                return winners
        raise StageError(
            "aus",
            f"{len(rows)} rows match {record.relpath} in {self.path} "
            f"({', '.join(sorted(map(str, keys))[:3])}) and no face score tells them apart",
        )


class _KeyIndex:
    """Row numbers by key path suffix, file name and stem."""

    def __init__(self, keys: list[str]):
        self._by_suffix: dict[str, list[int]] = {}
        self._by_name: dict[str, list[int]] = {}
        self._by_stem: dict[str, list[int]] = {}
        for number, key in enumerate(keys):
            parts = _parts(key)
            if not parts:
                continue
            for start in range(len(parts)):
                self._by_suffix.setdefault("/".join(parts[start:]), []).append(number)
            self._by_name.setdefault(parts[-1], []).append(number)
            self._by_stem.setdefault(PurePosixPath(parts[-1]).stem, []).append(number)

    def lookup(self, relpath: str) -> list[int]:
        """Rows of ``relpath``: by path suffix, else file name, else stem; [] when none."""
        parts = _parts(relpath)
        if not parts:
            return []
        for table, key in (
            (self._by_suffix, "/".join(parts)),
            (self._by_name, parts[-1]),
            (self._by_stem, PurePosixPath(parts[-1]).stem),
        ):
            if key in table:
                return table[key]
        return []


def _parts(path: str) -> list[str]:
    return [part for part in path.strip().replace("\\", "/").split("/") if part not in ("", ".")]


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in _PARQUET_SUFFIXES + _CSV_SUFFIXES:
        raise ValueError(
            f"AU table {path}: unsupported file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    if not path.is_file():
        raise ValueError(f"AU table {path}: file not found")
    try:
        if suffix in _PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", low_memory=False)
    except Exception as error:  # pandas/pyarrow raise many types for bad files
        raise ValueError(
            f"AU table {path}: unreadable ({type(error).__name__}: {error})"
        ) from error
    frame.columns = [str(column).strip() for column in frame.columns]
    if frame.columns.duplicated().any():
        duplicates = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise ValueError(f"AU table {path}: duplicate columns {duplicates}")
    if frame.empty:
        raise ValueError(f"AU table {path}: no rows")
    return frame


def _key_column(frame: pd.DataFrame, key_column: str | None, path: Path) -> str:
    if key_column is not None:
        if key_column not in frame.columns:
            raise ValueError(f"AU table {path}: key column {key_column!r} not found")
        return key_column
    lower = {column.lower(): column for column in frame.columns}
    for candidate in KEY_COLUMNS:
        if candidate in lower:
            return lower[candidate]
    raise ValueError(
        f"AU table {path}: no image column; add one of {', '.join(KEY_COLUMNS)} or pass key_column"
    )


def _factor(frame: pd.DataFrame, columns: AUColumns, fmt: str, scale: str, path: Path) -> float:
    """Multiplier onto 0-5; ValueError when values fall outside the scale."""
    text = [name for name in columns.names if not pd.api.types.is_numeric_dtype(frame[name])]
    if text:
        raise ValueError(f"AU table {path}: AU columns {text[:5]} hold non-numeric values")
    values = frame[columns.names].to_numpy(dtype=float)
    if np.isnan(values).all():
        raise ValueError(f"AU table {path}: AU columns hold no numbers")
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if scale == "auto":
        scale = {"pyfeat": "0-1", "openface": "0-5"}.get(fmt, "0-1" if high <= 1.0 else "0-5")
    top = 1.0 if scale == "0-1" else MAX_INTENSITY
    if low < 0.0 or high > top:
        raise ValueError(
            f"AU table {path}: AU values span {low:g} to {high:g}, outside the {scale} scale"
        )
    return MAX_INTENSITY / top
