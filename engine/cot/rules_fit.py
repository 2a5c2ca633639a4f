"""Fit rule tables to data: AU -> emotion weights that stay readable as FACS knowledge.

``expllm rules fit SHARDS --split train --out data/rules/<AU back end>/`` reads the measured
AUs and labels of an Exp-CoT output folder (``face_columns``, through the one shard reader,
``engine.store.stats.read_shards``) and fits the numbers of the rule book
(``engine.cot.rules``) so that its dominant emotion agrees with the labels more often, within
constraints that keep the table general:

* **Same model as the rule book.** Raw evidence of emotion e =
  ``prior[e] + sum_AU w[AU, e] * intensity / 5`` (active AUs only, ``rules.json`` threshold)
  ``+ sum_prototype v[p] * coverage`` (matched prototypes of e), plus for neutral
  ``neutral_activation_scale * max(0, 1 - activation)``. The fitted numbers go into the same
  files (``au_emotions.csv``, ``prototypes.csv``, ``rules.json``, plus ``priors.csv``) and
  ``RuleBook.evaluate`` reads them unchanged.
* **Non-negative and sparse.** Every weight and prior is >= 0; an L1 penalty with exact zeros
  (projected proximal gradient, FISTA) drops links the data does not need.
* **FACS links first.** A link may carry weight when it is in the hand-set
  ``au_emotions.csv`` (EMFACS, Du et al. 2014) or when the data supports it: on the fitting
  split, faces with the AU active carry the emotion significantly more often than faces overall
  (one-sided binomial z-test, Bonferroni-corrected ``alpha``, lift >= ``min_lift``, at least
  ``min_count`` faces). Each such link's source names its z, lift and count.
* **Prototypes kept.** The EMFACS and Du et al. prototypes stay as named rows; a fitted
  prototype weight never falls below its hand-set weight.
* **Priors as data.** A constant evidence per emotion (``priors.csv``), shifted so the smallest
  is 0.

The fit is a multinomial logistic regression on these raw scores (softmax cross-entropy, the
scores as logits), full batch, deterministic (no random numbers are drawn), numpy only.
Agreement (``au_supports_label``: the rules' dominant emotion = label) is then measured with
``RuleBook.evaluate`` itself, on the fitting split and on ``eval_splits`` (valid), per class,
and the table is written with its card (``engine.cot.rules_card``, ``fit_command``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.aus import au_definitions
from engine.aus.table import find_au_columns, reading_from_row
from engine.cot.rules import RuleBook
from engine.resources import data_dir
from engine.types import EMOTIONS, AUReading

#: Columns read from the shards besides the AU columns (``FACE_REQUIRED``: those the fit needs).
FACE_REQUIRED = ("record_id", "split", "label", "au_backend")
_META = ["record_id", "split", "label", "au_backend", "au_model_version", "dataset"]


@dataclass(frozen=True)
class FitOptions:
    """Knobs of ``fit_table``; the defaults made ``data/rules/mesh/``."""

    l1: float = 0.002  # L1 penalty per unit of AU weight (mean cross-entropy units)
    alpha: float = 0.001  # family-wise significance level of a new, data-supported link
    min_lift: float = 1.25  # P(emotion | AU active) / P(emotion) of a new link, at least
    min_count: int = 30  # faces with the AU active and the emotion, at least
    neutral_links: bool = False  # may an AU add evidence for neutral? (default: no)
    class_weight: str = "none"  # "none" (accuracy) or "balanced" (mean class accuracy)
    iterations: int = 2000  # at most; the fit stops once no parameter moves by 1e-5
    anchors: float = 0.5  # weight of the posed prototype faces, as a share of the data's
    prototype_cap: float = 3.0  # a prototype's weight stays within 1-3 x its hand-set weight
    threshold: float | None = None  # active threshold of the table (None: data/rules.json's)
    prune: float = 0.1  # links below this weight are dropped after the fit

    def __post_init__(self) -> None:
        if self.class_weight not in ("none", "balanced", "sqrt"):
            raise ValueError(
                f"class_weight must be none, balanced or sqrt, not {self.class_weight}"
            )


@dataclass
class Design:
    """The fit's inputs: per face, each AU's intensity / 5 when active (else 0), each
    prototype's coverage when matched (else 0), the neutral activation term, the label index."""

    aus: list[str]
    prototypes: list[str]
    x_au: np.ndarray  # (n, len(aus))
    x_proto: np.ndarray  # (n, len(prototypes))
    x_neutral: np.ndarray  # (n,)
    active: np.ndarray  # (n, len(aus)) bool
    y: np.ndarray  # (n,) index into EMOTIONS


@dataclass
class Link:
    """One AU -> emotion link: its fitted weight and where it comes from."""

    au: str
    emotion: str
    weight: float
    source: str
    new: bool = False  # supported by the data, not in the hand-set table


@dataclass
class FittedTable:
    """A fitted rule table and how it was made."""

    links: list[Link]
    prototype_weights: dict[str, float]
    priors: dict[str, float]
    neutral_activation_scale: float
    candidates: list[dict] = field(default_factory=list)  # data-supported links tested
    loss: float = 0.0


def face_columns() -> list[str]:
    """The shard columns the fit reads: who each face is, then its AU intensities and sides."""
    sided = [name for code in au_definitions() for name in (code, f"{code}_L", f"{code}_R")]
    return [*_META, *sided]


def labelled_faces(frame: pd.DataFrame, splits: Sequence[str] | None = None) -> pd.DataFrame:
    """The labelled faces (of ``splits`` when given) of a frame of shard rows, by record id;
    the caller reads the ``face_columns`` with ``engine.store.stats.read_shards``."""
    frame = frame[frame["label"].notna()]
    if splits:
        frame = frame[frame["split"].isin(list(splits))]
    return frame.sort_values("record_id").reset_index(drop=True)


def readings(frame: pd.DataFrame) -> list[AUReading]:
    """One ``AUReading`` per row (sides where both are present), as the ``table`` back end."""
    columns = find_au_columns(frame.columns)
    out = []
    for row in frame.to_dict("records"):
        reading = reading_from_row(row, columns, 1.0, str(row.get("au_backend")), "shard")
        out.append(reading or AUReading({}, str(row.get("au_backend")), "shard"))
    return out


def build_design(
    book: RuleBook, labels: Sequence[str], reads: list[AUReading], aus: Sequence[str] | None = None
) -> Design:
    """The features ``RuleBook.evaluate`` would weigh for each face (see ``Design``); ``aus``:
    the AU columns (default: every AU any reading has)."""
    if aus is None:
        present = {code for r in reads for code in r.intensities}
        aus = [code for code in au_definitions() if code in present]
    aus = list(aus)
    index = {code: i for i, code in enumerate(aus)}
    protos = [p.name for p in book.prototypes]
    pindex = {name: i for i, name in enumerate(protos)}
    n = len(reads)
    x_au = np.zeros((n, len(aus)))
    x_proto = np.zeros((n, len(protos)))
    for row, reading in enumerate(reads):
        active = book.active_aus(reading)
        for item in active:
            if item.au in index:
                x_au[row, index[item.au]] = min(item.intensity, 5.0) / 5.0
        for match in book._match_prototypes(reading, {a.au: a for a in active}):
            x_proto[row, pindex[match.prototype]] = match.coverage
    x_neutral = np.maximum(0.0, 1.0 - x_au.sum(axis=1))
    y = np.array([EMOTIONS.index(label) for label in labels], dtype=int)
    return Design(aus, protos, x_au, x_proto, x_neutral, x_au > 0, y)


def anchor_faces(book: RuleBook, levels: Sequence[float] = (2.0, 3.0, 4.0)):
    """Posed prototype faces, labelled with the prototype's emotion: every prototype of
    ``book`` with all its AUs, and (for prototypes of three AUs or more) with any one AU
    missing, at each of ``levels`` (unilateral tokens on one side only), plus a face at rest
    (neutral). The fit weighs them beside the data (``FitOptions.anchors``), so that a fitted
    table still reads FACS prototypes, whole or partly shown, as their emotions, through its
    AU links and not only through prototype matches; ``prototype_check`` scores the same faces.
    Returns (readings, labels, names)."""
    reads, labels, names = [AUReading({}, "posed", "v")], ["neutral"], ["rest"]
    for proto in book.prototypes:
        variants = [proto.tokens]
        if len(proto.tokens) >= 3:
            variants += [proto.tokens[:i] + proto.tokens[i + 1 :] for i in range(len(proto.tokens))]
        for number, tokens in enumerate(variants):
            for level in levels:
                intensities, sides = {}, {}
                for unilateral, au, _ in tokens:
                    intensities[au] = level
                    if unilateral:
                        sides[au] = (level, 0.0)
                reads.append(AUReading(intensities, "posed", "v", sides))
                labels.append(proto.emotion)
                names.append(
                    proto.name
                    if number == 0
                    else f"{proto.name}-{tokens_missing(proto.tokens, tokens)}"
                )
    return reads, labels, names


def tokens_missing(full, part) -> str:
    """The AU a partial prototype leaves out, e.g. ``"without AU04"``."""
    missing = [au for _, au, _ in full if au not in {a for _, a, _ in part}]
    return "without " + "+".join(missing)


def candidate_links(design: Design, options: FitOptions) -> list[dict]:
    """Every (AU, emotion) pair tested as a new link, with its z, lift, count and verdict."""
    n, k = len(design.y), len(EMOTIONS)
    base = np.bincount(design.y, minlength=k) / n
    targets = [e for e in range(k) if options.neutral_links or EMOTIONS[e] != "neutral"]
    tests = len(design.aus) * len(targets)
    z_crit = _z_quantile(1.0 - options.alpha / max(tests, 1))
    out = []
    for j, au in enumerate(design.aus):
        on = design.active[:, j]
        total = int(on.sum())
        for e in targets:
            hits = int((design.y[on] == e).sum())
            expected = total * base[e]
            sd = math.sqrt(max(total * base[e] * (1 - base[e]), 1e-12))
            z = (hits - expected) / sd if total else 0.0
            lift = hits / expected if expected > 0 else 0.0
            out.append(
                {
                    "au": au,
                    "emotion": EMOTIONS[e],
                    "active": total,
                    "count": hits,
                    "lift": round(lift, 3),
                    "z": round(z, 2),
                    "supported": bool(
                        z > z_crit and lift >= options.min_lift and hits >= options.min_count
                    ),
                }
            )
    return out


def fit_table(
    book: RuleBook,
    design: Design,
    options: FitOptions = FitOptions(),  # noqa: B008
) -> FittedTable:
    """Fit weights, prototype weights, priors and the neutral scale (module docstring)."""
    k = len(EMOTIONS)
    neutral = EMOTIONS.index("neutral")
    known = {(au, e): w for au, pairs in book.associations.items() for e, w in pairs}
    candidates = candidate_links(design, options)
    supported = {(c["au"], c["emotion"]): c for c in candidates if c["supported"]}
    weights = _sample_weights(design.y, options.class_weight)
    if options.anchors > 0:
        reads, labels, _ = anchor_faces(book)
        posed = build_design(book, labels, reads, design.aus)
        share = options.anchors * weights.sum() / len(labels)
        weights = np.concatenate([weights, np.full(len(labels), share)])
        design = _stack(design, posed)
    weights = weights / weights.sum()

    # One parameter matrix over the features [AUs | prototypes | neutral term | 1]:
    # rows of AUs hold the (masked, >= 0, L1) links, a prototype row holds its weight in its
    # emotion's column (>= the hand-set weight, <= prototype_cap x it), the neutral-term row
    # holds the neutral scale (>= 0), the last row the priors (free, shifted to >= 0 after).
    n_au, n_proto = len(design.aus), len(book.prototypes)
    features = np.hstack(
        [design.x_au, design.x_proto, design.x_neutral[:, None], np.ones((len(design.y), 1))]
    )
    free = np.zeros((features.shape[1], k), dtype=bool)
    low = np.zeros(free.shape)
    high = np.full(free.shape, np.inf)
    for j, au in enumerate(design.aus):
        for e, emotion in enumerate(EMOTIONS):
            if emotion == "neutral" and not options.neutral_links:
                continue
            free[j, e] = (au, emotion) in known or (au, emotion) in supported
    for i, proto in enumerate(book.prototypes):
        e = EMOTIONS.index(proto.emotion)
        free[n_au + i, e] = True
        low[n_au + i, e] = proto.weight
        high[n_au + i, e] = proto.weight * options.prototype_cap
    free[n_au + n_proto, neutral] = True
    free[-1, :] = True
    low[-1, :] = -np.inf
    penalty = np.zeros(free.shape)
    penalty[:n_au] = options.l1
    theta = np.where(free, np.clip(0.5, low, high), 0.0)
    onehot = np.eye(k)[design.y]
    scaled = features * np.sqrt(weights)[:, None]
    step = 1.0 / max(0.5 * float(np.linalg.norm(scaled, 2) ** 2), 1e-9)

    def gradient(params: np.ndarray) -> tuple[np.ndarray, float]:
        logits = features @ params
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        loss = -float(weights @ np.log(prob[np.arange(len(prob)), design.y] + 1e-12))
        return features.T @ ((prob - onehot) * weights[:, None]), loss

    def prox(params: np.ndarray) -> np.ndarray:
        return np.where(free, np.clip(params - step * penalty, low, high), 0.0)

    point, last, momentum = theta, theta, 1.0
    for _ in range(options.iterations):  # FISTA: proximal gradient with Nesterov momentum
        grad, _ = gradient(point)
        landed = prox(point - step * grad)
        following = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        point = landed + (momentum - 1) / following * (landed - last)
        moved = float(np.abs(landed - last).max())
        last, momentum = landed, following
        if moved < 1e-5:
            break
    final = last.copy()
    final[:n_au] = np.where(final[:n_au] >= options.prune, final[:n_au], 0.0)
    _, loss = gradient(final)
    hand_sources = {(r["au"], r["emotion"]): r["source"] for r in _hand_rows()}
    links = []
    for j, au in enumerate(design.aus):
        for e, emotion in enumerate(EMOTIONS):
            weight = float(final[j, e])
            if weight <= 0:
                continue
            if (au, emotion) in known:
                source = hand_sources.get((au, emotion), "hand-set table")
                links.append(Link(au, emotion, weight, source))
            else:
                c = supported[(au, emotion)]
                source = (
                    f"data: {c['count']} of {c['active']} faces with {au} active are {emotion} "
                    f"(lift {c['lift']:.2f}, z {c['z']:.1f})"
                )
                links.append(Link(au, emotion, weight, source, new=True))
    priors = final[-1] - final[-1].min()
    return FittedTable(
        links=links,
        prototype_weights={
            p.name: float(final[n_au + i, EMOTIONS.index(p.emotion)])
            for i, p in enumerate(book.prototypes)
        },
        priors={e: float(v) for e, v in zip(EMOTIONS, priors, strict=True)},
        neutral_activation_scale=float(final[n_au + n_proto, neutral]),
        candidates=candidates,
        loss=loss,
    )


def _stack(first: Design, second: Design) -> Design:
    return Design(
        first.aus,
        first.prototypes,
        np.vstack([first.x_au, second.x_au]),
        np.vstack([first.x_proto, second.x_proto]),
        np.concatenate([first.x_neutral, second.x_neutral]),
        np.vstack([first.active, second.active]),
        np.concatenate([first.y, second.y]),
    )


def _sample_weights(y: np.ndarray, kind: str) -> np.ndarray:
    counts = np.bincount(y, minlength=len(EMOTIONS)).astype(float)
    if kind == "none":
        return np.ones(len(y))
    per_class = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(EMOTIONS), 0.0)
    if kind == "sqrt":
        per_class = np.sqrt(per_class)
    return per_class[y]


def _z_quantile(p: float) -> float:
    """The standard normal quantile (bisection on erfc; no scipy)."""
    low, high = -10.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _hand_rows() -> list[dict[str, str]]:
    with (data_dir() / "au_emotions.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def prototype_check(book: RuleBook, reference: RuleBook | None = None) -> dict:
    """How often ``book`` reads the posed prototype faces of ``reference`` (default: ``book``;
    ``anchor_faces``: each EMFACS / Du et al. prototype at intensities 2, 3 and 4, and a face
    at rest) as their emotions: a check that a fitted table still reads FACS prototypes."""
    reads, labels, names = anchor_faces(reference or book)
    per: dict[str, list[str]] = {}
    hits = 0
    for reading, label, name in zip(reads, labels, names, strict=True):
        dominant = book.evaluate(reading).dominant
        hits += dominant == label
        per.setdefault(name, []).append(dominant)
    return {"agreement": hits / len(reads), "readings": per}
