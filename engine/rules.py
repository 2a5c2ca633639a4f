"""Rules stage: AU intensities -> emotion evidence through the tables in ``data/``.

Tables: ``au_definitions.csv`` (names, muscles, regions), ``au_emotions.csv`` (AU -> emotion
weights with sources), ``prototypes.csv`` (EMFACS and Du, Tao & Martinez 2014 prototypes) and
``rules.json`` (thresholds). Prototype tokens: ``6`` (AU06 active), ``5B`` (AU05 at level B or
above), ``R12A`` (AU12 unilateral — one side exceeds the other by ``asymmetry_threshold`` — at
level A or above; either side counts, as in most EMFACS readings of contempt).
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from engine.aus import AUDefinition, au_definitions, normalise_au_code
from engine.resources import data_dir
from engine.types import EMOTIONS, AUReading

_TOKEN = re.compile(r"^(?P<uni>[RLU]?)(?P<num>\d{1,2})(?P<level>[A-E]?)$")


@dataclass(frozen=True)
class ActiveAU:
    """An AU measured at or above the activation threshold."""

    au: str
    name: str
    region: str
    intensity: float
    level: str  # FACS letter A-E
    emotions: tuple[str, ...]  # associated emotions, strongest first
    side: str | None = None  # "left" / "right" when clearly unilateral


@dataclass(frozen=True)
class PrototypeMatch:
    """A prototype whose AUs are (mostly) present."""

    prototype: str
    emotion: str
    aus: str
    source: str
    coverage: float


@dataclass(frozen=True)
class EmotionEvidence:
    """The rules' reading of one face."""

    scores: dict[str, float]  # over EMOTIONS, sums to 1
    active: tuple[ActiveAU, ...]  # strongest first
    prototypes: tuple[PrototypeMatch, ...]
    dominant: str
    secondary: str | None
    conflicts: tuple[str, ...]  # "happiness_vs_sadness", ...


@dataclass(frozen=True)
class _Prototype:
    name: str
    emotion: str
    aus: str
    weight: float
    source: str
    tokens: tuple[tuple[str, str, str], ...]  # (unilateral flag, AU code, min level)


@dataclass(frozen=True)
class RuleBook:
    """Rule tables loaded from a data folder; ``evaluate`` turns an ``AUReading`` into evidence."""

    definitions: dict[str, AUDefinition]
    associations: dict[str, tuple[tuple[str, float], ...]]  # AU -> ((emotion, weight), ...)
    prototypes: tuple[_Prototype, ...]
    active_threshold: float
    levels: tuple[tuple[str, float], ...]  # ascending
    asymmetry_threshold: float
    prototype_min_coverage: float
    neutral_activation_scale: float
    secondary_min_ratio: float
    conflict_min_ratio: float
    opposing: tuple[tuple[str, str], ...]

    @classmethod
    def load(cls, folder: Path | None = None) -> RuleBook:
        """Read the tables from ``folder`` (default: the project's ``data/``)."""
        folder = Path(folder) if folder else data_dir()
        definitions = au_definitions() if folder == data_dir() else _read_definitions(folder)
        associations: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for row in _read_csv(folder / "au_emotions.csv"):
            au = _known_au(row["au"], definitions, "au_emotions.csv")
            associations[au].append(
                (_known_emotion(row["emotion"], "au_emotions.csv"), float(row["weight"]))
            )
        prototypes = tuple(
            _Prototype(
                name=row["prototype"],
                emotion=_known_emotion(row["emotion"], "prototypes.csv"),
                aus=row["aus"],
                weight=float(row["weight"]),
                source=row["source"],
                tokens=tuple(_parse_token(t, definitions) for t in row["aus"].split("+")),
            )
            for row in _read_csv(folder / "prototypes.csv")
        )
        config = json.loads((folder / "rules.json").read_text())
        return cls(
            definitions=definitions,
            associations={
                au: tuple(sorted(pairs, key=lambda p: -p[1])) for au, pairs in associations.items()
            },
            prototypes=prototypes,
            active_threshold=float(config["active_threshold"]),
            levels=tuple(sorted(config["levels"].items(), key=lambda kv: kv[1])),
            asymmetry_threshold=float(config["asymmetry_threshold"]),
            prototype_min_coverage=float(config["prototype_min_coverage"]),
            neutral_activation_scale=float(config["neutral_activation_scale"]),
            secondary_min_ratio=float(config["secondary_min_ratio"]),
            conflict_min_ratio=float(config["conflict_min_ratio"]),
            opposing=tuple(tuple(pair) for pair in config["opposing_emotions"]),
        )

    def level(self, intensity: float) -> str:
        """FACS intensity letter (A-E) of a 0-5 intensity; ``""`` below A."""
        letter = ""
        for name, bound in self.levels:
            if intensity >= bound:
                letter = name
        return letter

    def active_aus(self, reading: AUReading) -> tuple[ActiveAU, ...]:
        """AUs at or above the activation threshold, strongest first."""
        active = []
        for au, value in reading.intensities.items():
            if value < self.active_threshold or au not in self.definitions:
                continue
            definition = self.definitions[au]
            active.append(
                ActiveAU(
                    au=au,
                    name=definition.name,
                    region=definition.region,
                    intensity=float(value),
                    level=self.level(value),
                    emotions=tuple(e for e, _ in self.associations.get(au, ())),
                    side=self._unilateral_side(reading, au),
                )
            )
        return tuple(sorted(active, key=lambda a: (-a.intensity, a.au)))

    def evaluate(self, reading: AUReading) -> EmotionEvidence:
        """Emotion evidence, matched prototypes, dominant/secondary emotion and conflicts."""
        active = self.active_aus(reading)
        raw = dict.fromkeys(EMOTIONS, 0.0)
        activation = 0.0
        for item in active:
            share = min(item.intensity, 5.0) / 5.0
            activation += share
            for emotion, weight in self.associations.get(item.au, ()):
                raw[emotion] += weight * share
        matches = self._match_prototypes(reading, {a.au: a for a in active})
        for match in matches:
            weight = next(p.weight for p in self.prototypes if p.name == match.prototype)
            raw[match.emotion] += weight * match.coverage
        raw["neutral"] = self.neutral_activation_scale * max(0.0, 1.0 - activation)
        total = sum(raw.values()) or 1.0
        scores = {e: raw[e] / total for e in EMOTIONS}
        ranked = sorted(EMOTIONS, key=lambda e: (-scores[e], EMOTIONS.index(e)))
        dominant = ranked[0]
        second = ranked[1]
        secondary = (
            second
            if scores[second] > 0 and scores[second] >= self.secondary_min_ratio * scores[dominant]
            else None
        )
        top = scores[dominant]
        conflicts = tuple(
            f"{a}_vs_{b}"
            for a, b in self.opposing
            if top > 0
            and scores[a] >= self.conflict_min_ratio * top
            and scores[b] >= self.conflict_min_ratio * top
        )
        return EmotionEvidence(scores, active, matches, dominant, secondary, conflicts)

    def _unilateral_side(self, reading: AUReading, au: str) -> str | None:
        if au not in reading.sides:
            return None
        left, right = reading.sides[au]
        if abs(left - right) < self.asymmetry_threshold:
            return None
        return "left" if left > right else "right"

    def _match_prototypes(
        self, reading: AUReading, active: dict[str, ActiveAU]
    ) -> tuple[PrototypeMatch, ...]:
        matches = []
        for proto in self.prototypes:
            hits = 0
            for unilateral, au, level in proto.tokens:
                item = active.get(au)
                if item is None:
                    continue
                if level and item.intensity < dict(self.levels)[level]:
                    continue
                if unilateral and self._unilateral_side(reading, au) is None:
                    continue
                hits += 1
            coverage = hits / len(proto.tokens)
            if coverage >= self.prototype_min_coverage:
                matches.append(
                    PrototypeMatch(proto.name, proto.emotion, proto.aus, proto.source, coverage)
                )
        return tuple(sorted(matches, key=lambda m: (-m.coverage, m.prototype)))


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"rule table {path} is missing")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _read_definitions(folder: Path) -> dict[str, AUDefinition]:
    return {row["au"]: AUDefinition(**row) for row in _read_csv(folder / "au_definitions.csv")}


def _known_au(code: str, definitions: dict[str, AUDefinition], table: str) -> str:
    au = normalise_au_code(code)
    if au not in definitions:
        raise ValueError(f"{table}: {code!r} is not defined in au_definitions.csv")
    return au


def _known_emotion(name: str, table: str) -> str:
    if name not in EMOTIONS:
        raise ValueError(f"{table}: unknown emotion {name!r}; expected one of {EMOTIONS}")
    return name


def _parse_token(token: str, definitions: dict[str, AUDefinition]) -> tuple[str, str, str]:
    match = _TOKEN.match(token.strip())
    if not match:
        raise ValueError(f"prototypes.csv: cannot read AU token {token!r}")
    au = _known_au(match["num"], definitions, "prototypes.csv")
    return match["uni"], au, match["level"]
