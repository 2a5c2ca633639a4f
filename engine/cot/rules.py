"""Rules stage: AU intensities -> emotion evidence through the tables in ``data/``.

Tables: ``au_definitions.csv`` (names, muscles, regions), ``au_emotions.csv`` (AU -> emotion
weights with sources), ``prototypes.csv`` (EMFACS and Du, Tao & Martinez 2014 prototypes),
``rules.json`` (thresholds) and, optionally, ``priors.csv`` (a constant evidence per emotion)
and ``table.json`` (what a fitted table was fitted on: its AU back end, dataset, split).

The hand-set tables sit in ``data/``; tables fitted to data (``expllm rules fit``,
``engine.cot.rules_fit``) sit in ``data/rules/<AU back end>/`` and ``RuleBook.for_backend`` picks
the one that matches a run's AU back end. Prototype tokens: ``6`` (AU06 active), ``5B`` (AU05
at level B or above), ``R12A`` (AU12 unilateral — one side exceeds the other by
``asymmetry_threshold`` — at level A or above; either side counts, as in most EMFACS readings
of contempt).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.aus import AUDefinition, au_definitions, normalise_au_code
from engine.resources import data_dir
from engine.types import EMOTIONS, AUReading

_TOKEN = re.compile(r"^(?P<uni>[RLU]?)(?P<num>\d{1,2})(?P<level>[A-E]?)$")
#: The metadata file of a fitted table (``au_backend``, dataset, split, command, figures).
TABLE_CARD = "table.json"
#: Where fitted tables live inside ``data/``: ``data/rules/<AU back end>/``.
FITTED_DIR = "rules"
#: Tables every rule folder holds (``priors.csv`` and ``table.json`` are optional).
TABLE_FILES = ("au_emotions.csv", "prototypes.csv", "rules.json")


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
    #: Sum of the active AUs' intensities / 5 (the neutral reading falls as it rises).
    activation: float = 0.0
    #: Raw evidence each active AU adds per emotion (weight x intensity / 5), by AU code.
    contributions: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The share of each emotion's raw evidence that comes from its prior (``priors.csv``).
    prior_share: dict[str, float] = field(default_factory=dict)


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
    #: Constant evidence per emotion (``priors.csv``; 0 for the hand-set tables).
    priors: dict[str, float] = field(default_factory=dict)
    #: Most AUs a CoT cites (strongest first); ``complete`` checks against it.
    max_cited_aus: int = 6
    #: ``table.json`` of a fitted table (``au_backend``, dataset, ...); {} for hand-set tables.
    card: dict = field(default_factory=dict)
    #: ``<folder relative to data/>@<hash of the tables>``, recorded in every shard row.
    table_id: str = ""

    @property
    def backend(self) -> str | None:
        """The AU back end the table was fitted on; None for hand-set (back-end neutral) ones."""
        return self.card.get("au_backend")

    @classmethod
    def load(cls, folder: Path | None = None) -> RuleBook:
        """Read the tables from ``folder`` (default: the project's ``data/``); a folder without
        ``au_definitions.csv`` (a fitted table) uses the project's AU definitions."""
        folder = Path(folder) if folder else data_dir()
        definitions = (
            _read_definitions(folder)
            if folder.resolve() != data_dir().resolve()
            and (folder / "au_definitions.csv").is_file()
            else au_definitions()
        )
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
        config = json.loads(_table_path(folder, "rules.json").read_text())
        priors = dict.fromkeys(EMOTIONS, 0.0)
        if (folder / "priors.csv").is_file():
            for row in _read_csv(folder / "priors.csv"):
                weight = float(row["weight"])
                if weight < 0:
                    raise ValueError(f"priors.csv: negative prior {weight} for {row['emotion']}")
                priors[_known_emotion(row["emotion"], "priors.csv")] = weight
        card = (
            json.loads((folder / TABLE_CARD).read_text()) if (folder / TABLE_CARD).is_file() else {}
        )
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
            priors=priors,
            max_cited_aus=int(config.get("max_cited_aus", 6)),
            card=card,
            table_id=_table_id(folder),
        )

    @classmethod
    def for_backend(cls, backend: str, folder: Path | str | None = None) -> RuleBook:
        """The rule tables for a run whose AUs come from ``backend``.

        ``folder`` given (``--rules DIR``): that table; an error when it was fitted on another
        AU back end (its ``table.json``). Else the table fitted for ``backend`` in
        ``data/rules/<backend>/`` when there is one, else the hand-set tables of ``data/``.
        """
        if folder is not None:
            book = cls.load(Path(folder))
            if book.backend is not None and book.backend != backend:
                raise ValueError(
                    f"rule table {folder} was fitted on the {book.backend!r} AU back end, but "
                    f"this run measures AUs with {backend!r}; use a table fitted on {backend!r} "
                    f"(expllm rules fit ... --out data/rules/{backend}/) or leave out --rules"
                )
            return book
        fitted = fitted_dir(backend)
        return cls.load(fitted) if fitted is not None else cls.load()

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
        """Emotion evidence, matched prototypes, dominant/secondary emotion and conflicts.

        Raw evidence per emotion: its prior, plus weight x intensity / 5 of every active AU
        linked to it, plus weight x coverage of every matched prototype; neutral also gets
        ``neutral_activation_scale`` x (1 - activation) while the activation is below 1.
        """
        active = self.active_aus(reading)
        raw = {e: self.priors.get(e, 0.0) for e in EMOTIONS}
        priors = dict(raw)
        activation = 0.0
        contributions: dict[str, dict[str, float]] = {}
        for item in active:
            share = min(item.intensity, 5.0) / 5.0
            activation += share
            parts = {}
            for emotion, weight in self.associations.get(item.au, ()):
                raw[emotion] += weight * share
                parts[emotion] = weight * share
            contributions[item.au] = parts
        matches = self._match_prototypes(reading, {a.au: a for a in active})
        for match in matches:
            weight = next(p.weight for p in self.prototypes if p.name == match.prototype)
            raw[match.emotion] += weight * match.coverage
        raw["neutral"] += self.neutral_activation_scale * max(0.0, 1.0 - activation)
        total = sum(raw.values()) or 1.0
        scores = {e: raw[e] / total for e in EMOTIONS}
        ranked = ranked_emotions(scores)
        dominant = ranked[0]
        second = ranked[1]
        secondary = (
            second
            if scores[second] > 0 and scores[second] >= self.secondary_min_ratio * scores[dominant]
            else None
        )
        # secondary readings and conflicts come from the cues, not from the priors
        cues = {e: raw[e] - priors[e] for e in EMOTIONS}
        if secondary is not None and cues[secondary] <= 0:
            secondary = None
        top = max(cues.values())
        conflicts = tuple(
            f"{a}_vs_{b}"
            for a, b in self.opposing
            if top > 0
            and cues[a] >= self.conflict_min_ratio * top
            and cues[b] >= self.conflict_min_ratio * top
        )
        prior_share = {e: (priors[e] / raw[e] if raw[e] > 0 else 0.0) for e in EMOTIONS}
        return EmotionEvidence(
            scores,
            active,
            matches,
            dominant,
            secondary,
            conflicts,
            activation=activation,
            contributions=contributions,
            prior_share=prior_share,
        )

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


def ranked_emotions(scores: Mapping[str, float]) -> list[str]:
    """``EMOTIONS`` by their evidence ``scores`` (missing: 0), most first; a tie in
    ``EMOTIONS`` order."""
    return sorted(EMOTIONS, key=lambda e: (-scores.get(e, 0.0), EMOTIONS.index(e)))


def fitted_dir(backend: str) -> Path | None:
    """``data/rules/<backend>/`` when a table has been fitted for ``backend``, else None."""
    folder = data_dir() / FITTED_DIR / backend
    return folder if all((folder / name).is_file() for name in TABLE_FILES) else None


def _table_path(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"rule table {path} is missing")
    return path


def _table_id(folder: Path) -> str:
    """``<folder relative to data/>@<sha1 of its tables>`` (the absolute path outside data/)."""
    digest = hashlib.sha1()
    for name in (*TABLE_FILES, "priors.csv"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    try:
        where = folder.resolve().relative_to(data_dir().resolve().parent).as_posix()
    except ValueError:
        where = folder.resolve().as_posix()
    return f"{where}@{digest.hexdigest()[:8]}"


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
