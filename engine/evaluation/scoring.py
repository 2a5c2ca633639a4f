"""Score expression predictions against ground truth: metrics, CoT checks and a predictor registry.

Metrics are over the eight ``EMOTIONS``. A prediction without a label (no answer, an unknown
word, an unreadable image) counts as wrong; the confusion matrix keeps it in a ninth column,
``NO_LABEL``. Precision of a class never predicted is 0, so is its F1. UAR (mean class
accuracy) and macro-F1 average over the classes present in the ground truth or the predictions.

An evaluation may restrict the answers to a class set (``allowed_classes``): predictors answer
with the best class of the set, and an answer outside it (a peer's file) counts as wrong, in the
``NO_LABEL`` column, and is counted (``Metrics.outside_classes``).

Predictors share one API, ``predict(records, classes) -> list[Prediction]`` (one per record,
same order). They register in ``PREDICTORS`` and are built by name with
``create_predictor(name, **options)``; the concrete ones live in the modules of
``PREDICTORS``, imported when first needed, so this module stays light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np

from engine.cot.cue_claims import misstated_cues
from engine.cot.format import CoT
from engine.cot.rules import EmotionEvidence
from engine.cot.verify import completeness, conclusion_label, misstated_evidence, verify
from engine.evaluation.cot_quality import wording
from engine.registry import Registry
from engine.types import EMOTIONS, FaceRecord

#: The column of the confusion matrix holding predictions without a label.
NO_LABEL = "(none)"

#: ``--classes`` words: the eight classes, or the labels of the evaluated records.
ALL_CLASSES, DATASET_CLASSES = "all", "dataset"

#: Every predictor by name; each module (``data/plugins.json``) registers its own on import.
PREDICTORS: Registry[type[Predictor]] = Registry("predictor")


@dataclass(frozen=True)
class Prediction:
    """One predictor's answer for one record.

    ``label`` is one of ``EMOTIONS`` or None (no usable answer; ``error`` says why);
    ``probabilities`` maps ``EMOTIONS`` to scores where the predictor has them; ``cot`` is the
    chain-of-thought text for models that explain; ``seconds`` is the time spent on the record
    (0 for predictions read from files).
    """

    record_id: str
    label: str | None
    probabilities: dict[str, float] | None = None
    cot: str | None = None
    seconds: float = 0.0
    error: str | None = None

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in EMOTIONS:
            raise ValueError(f"prediction label {self.label!r} is not one of {EMOTIONS}")


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and ground-truth support of one class."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True)
class CoTMetrics:
    """Checks of the chain-of-thought texts of one predictor.

    ``exact_format``: share in the exact three-header format; ``conclusion_matches``: share
    whose label read from the text's Conclusion (``conclusion_label``) equals the predicted label;
    ``faithfulness_mean``/``fully_faithful``: of the AUs each text mentions, the share measured
    on the same image (mean, and the share of texts at 1.0), over the texts whose image was
    measured (``measured``); ``evidence_as_measured``: the share of texts that state the
    evidence as the rule tables measure it on the face's AUs (quoted shares such as "anger (31
    %)", the emotion said to carry the most evidence; ``engine.cot.verify.misstated_evidence``),
    over the texts whose evidence is known (None without any); ``cues_as_measured``: the share
    of texts whose cue claims ("Consistent with sadness is AU01 ...", "The strongest contrary
    cue is ...", a prototype named; ``engine.cot.cue_claims.misstated_cues``) hold on the rule
    tables' reading of the face, over the texts whose reading is known; ``complete``: the share
    of texts whose Key Observations cite every AU a complete CoT cites (the active ones up to
    the rule tables' cap), strongest first (``engine.cot.verify.completeness``), over the texts
    whose active AUs are known (None without any). The wording checks
    (``engine.evaluation.cot_quality.Wording``): ``interpretation_agreement``,
    ``first_emotion_agreement``, ``non_word_tokens``, ``non_word_cots``, ``annotation_wording``
    and the most frequent ``non_words``.
    """

    n: int
    exact_format: float
    conclusion_matches: float
    measured: int
    faithfulness_mean: float | None
    fully_faithful: float | None
    evidence_as_measured: float | None
    cues_as_measured: float | None
    complete: float | None
    interpretation_agreement: float
    first_emotion_agreement: float
    non_word_tokens: float
    non_word_cots: float
    annotation_wording: float
    non_words: tuple[str, ...]


@dataclass(frozen=True)
class Metrics:
    """How one predictor did on ``n`` records.

    ``confusion`` counts rows of true class (``EMOTIONS`` order) by columns of predicted class
    (``EMOTIONS`` then ``NO_LABEL``); ``confusion_normalised`` divides each row by its support.
    ``faces_per_second`` is None for predictors that were not timed (predictions from files);
    ``outside_classes`` counts the answers outside the evaluation's class set (scored as none).
    """

    predictor: str
    n: int
    answered: int
    accuracy: float
    uar: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]
    confusion_normalised: list[list[float]]
    seconds: float
    faces_per_second: float | None
    cot: CoTMetrics | None = None
    outside_classes: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (class names kept as keys, matrix labels added)."""
        data = asdict(self)
        data["confusion_rows"] = list(EMOTIONS)
        data["confusion_columns"] = [*EMOTIONS, NO_LABEL]
        return data

    def headline(self) -> dict[str, float]:
        """Accuracy and UAR, rounded to four places (the figures benchmarks print)."""
        return {"accuracy": round(self.accuracy, 4), "uar": round(self.uar, 4)}


def argmax_labels(scores: np.ndarray) -> list[str]:
    """The best-scored emotion of each row of ``scores`` [faces, ``EMOTIONS``]."""
    return [EMOTIONS[i] for i in np.asarray(scores).argmax(axis=1)]


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    predictor: str = "",
    seconds: float = 0.0,
) -> Metrics:
    """Metrics of predictions ``y_pred`` (labels or None) against labels ``y_true``."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} ground-truth labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("no records to score")
    unknown = sorted({t for t in y_true if t not in EMOTIONS}, key=str)
    if unknown:
        raise ValueError(f"ground-truth label(s) {unknown} not in {EMOTIONS}")
    unknown = sorted({p for p in y_pred if p is not None and p not in EMOTIONS}, key=str)
    if unknown:
        raise ValueError(f"predicted label(s) {unknown} not in {EMOTIONS}")
    columns = [*EMOTIONS, None]
    confusion = np.zeros((len(EMOTIONS), len(columns)), dtype=np.int64)
    for truth, pred in zip(y_true, y_pred, strict=True):
        confusion[EMOTIONS.index(truth), columns.index(pred)] += 1
    support = confusion.sum(axis=1)
    predicted = confusion[:, : len(EMOTIONS)].sum(axis=0)
    hits = np.diag(confusion[:, : len(EMOTIONS)])
    precision = np.divide(hits, predicted, out=np.zeros(len(EMOTIONS)), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(len(EMOTIONS)), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(len(EMOTIONS)), where=denominator > 0
    )
    present = (support > 0) | (predicted > 0)
    normalised = np.divide(
        confusion,
        support[:, None],
        out=np.zeros(confusion.shape),
        where=support[:, None] > 0,
    )
    n = len(y_true)
    return Metrics(
        predictor=predictor,
        n=n,
        answered=sum(p is not None for p in y_pred),
        accuracy=float(hits.sum() / n),
        uar=float(recall[support > 0].mean()),
        macro_f1=float(f1[present].mean()),
        per_class={
            e: ClassMetrics(
                float(precision[i]),
                float(recall[i]),
                float(f1[i]),
                int(support[i]),
                int(predicted[i]),
            )
            for i, e in enumerate(EMOTIONS)
        },
        confusion=confusion.tolist(),
        confusion_normalised=normalised.round(6).tolist(),
        seconds=float(seconds),
        faces_per_second=float(n / seconds) if seconds > 0 else None,
    )


def cot_metrics(
    predictions: Sequence[Prediction],
    measured: Sequence[frozenset[str] | None],
    evidence: Sequence[Mapping[str, float] | None] | None = None,
    cited: Sequence[Sequence[tuple[str, float]] | None] | None = None,
    rules_readings: Sequence[EmotionEvidence | None] | None = None,
) -> CoTMetrics | None:
    """CoT checks over the predictions that carry text; None when none does.

    ``measured[i]`` is the set of AUs measured above threshold on record ``i``'s image, or None
    where it was not measured (that text is then left out of faithfulness); ``evidence[i]`` the
    rule tables' share per emotion on those AUs (None: unknown); ``cited[i]`` the (AU,
    intensity) a complete CoT of that image cites (``RuleReading.cited``; None: unknown);
    ``rules_readings[i]`` the rule tables' whole reading of those AUs (None: unknown).
    """
    if len(predictions) != len(measured):
        raise ValueError(f"{len(predictions)} predictions but {len(measured)} AU sets")
    evidence = _rows(evidence, len(predictions), "evidence rows")
    rules_readings = _rows(rules_readings, len(predictions), "rule readings")
    cited = _rows(cited, len(predictions), "cited-AU rows")
    stated = _over_known(predictions, evidence, lambda cot, e: not misstated_evidence(cot, e))
    cues = _over_known(predictions, rules_readings, lambda cot, r: not misstated_cues(cot, r))
    complete = _over_known(predictions, cited, lambda cot, c: completeness(cot, c)[0])
    pairs = [(p, m) for p, m in zip(predictions, measured, strict=True) if p.cot is not None]
    if not pairs:
        return None
    exact = [CoT.is_exact(p.cot) for p, _ in pairs]
    matches = [p.label is not None and conclusion_label(p.cot) == p.label for p, _ in pairs]
    faithful = [verify(p.cot, None, m).faithfulness for p, m in pairs if m is not None]
    checks = wording([p.cot for p, _ in pairs])
    return CoTMetrics(
        n=len(pairs),
        exact_format=float(np.mean(exact)),
        conclusion_matches=float(np.mean(matches)),
        measured=len(faithful),
        faithfulness_mean=float(np.mean(faithful)) if faithful else None,
        fully_faithful=float(np.mean([f == 1.0 for f in faithful])) if faithful else None,
        evidence_as_measured=float(np.mean(stated)) if stated else None,
        cues_as_measured=float(np.mean(cues)) if cues else None,
        complete=float(np.mean(complete)) if complete else None,
        **asdict(checks),
    )


def _rows(rows: Sequence | None, n: int, what: str) -> Sequence:
    """Per-record rows (None: all unknown), checked to be one per prediction."""
    rows = rows if rows is not None else [None] * n
    if len(rows) != n:
        raise ValueError(f"{n} predictions but {len(rows)} {what}")
    return rows


def _over_known(predictions: Sequence[Prediction], rows: Sequence, check) -> list[bool]:
    """``check(cot, row)`` for each prediction with a text whose row is known."""
    return [
        check(p.cot, row)
        for p, row in zip(predictions, rows, strict=True)
        if p.cot is not None and row is not None
    ]


def allowed_classes(spec: str, labels: Iterable[str | None] = ()) -> tuple[str, ...]:
    """The classes predictors may answer, in ``EMOTIONS`` order: ``all`` (the eight),
    ``dataset`` (those among ``labels``, the evaluated records' labels) or a comma list of class
    names; ValueError naming a bad name."""
    text = spec.strip().lower()
    if text == ALL_CLASSES:
        return EMOTIONS
    names = labels if text == DATASET_CLASSES else (n.strip() for n in text.split(","))
    wanted = {n for n in names if n}
    unknown = sorted(wanted - set(EMOTIONS), key=str)
    if unknown:
        raise ValueError(
            f"class {unknown[0]!r} in --classes {spec!r} is not one of {', '.join(EMOTIONS)} "
            f"(or {ALL_CLASSES!r}, {DATASET_CLASSES!r})"
        )
    if not wanted:
        raise ValueError(f"--classes {spec!r} names no class")
    return tuple(e for e in EMOTIONS if e in wanted)


def best_of(scores: Mapping[str, float], classes: Sequence[str]) -> str:
    """The class of ``classes`` with the highest score (the first in ``EMOTIONS`` on a tie)."""
    return max((e for e in EMOTIONS if e in classes), key=scores.__getitem__)


def evaluate_predictions(
    name: str,
    records: Sequence[FaceRecord],
    predictions: Sequence[Prediction],
    measured: Sequence[frozenset[str] | None] | None = None,
    classes: Sequence[str] = EMOTIONS,
    evidence: Sequence[Mapping[str, float] | None] | None = None,
    cited: Sequence[Sequence[tuple[str, float]] | None] | None = None,
    rules_readings: Sequence[EmotionEvidence | None] | None = None,
) -> Metrics:
    """Metrics of one predictor's ``predictions`` for ``records`` (same order), CoT included
    (``measured``, ``evidence``, ``cited``, ``rules_readings``: ``cot_metrics``); answers
    outside ``classes`` count as none."""
    if len(records) != len(predictions):
        raise ValueError(f"{name}: {len(records)} records but {len(predictions)} predictions")
    for record, prediction in zip(records, predictions, strict=True):
        if record.record_id != prediction.record_id:
            raise ValueError(
                f"{name}: prediction for {prediction.record_id!r} where {record.record_id!r} "
                "was expected (predictions out of order)"
            )
    labels = [p.label for p in predictions]
    metrics = classification_metrics(
        [r.label for r in records],
        [label if label in classes else None for label in labels],
        predictor=name,
        seconds=sum(p.seconds for p in predictions),
    )
    outside = sum(label is not None and label not in classes for label in labels)
    measured = measured or [None] * len(predictions)
    cot = cot_metrics(predictions, measured, evidence, cited, rules_readings)
    return replace(metrics, cot=cot, outside_classes=outside)


class Predictor(ABC):
    """Predicts one expression per face record.

    Subclasses set ``name`` and implement ``predict``; records it cannot answer get a
    ``Prediction`` with ``label=None`` and an ``error`` instead of raising. Problems with the
    predictor itself (missing file, bad table) raise at construction, naming the file.
    """

    name: ClassVar[str]

    @abstractmethod
    def predict(
        self, records: Sequence[FaceRecord], classes: Sequence[str] = EMOTIONS
    ) -> list[Prediction]:
        """One prediction per record, in the same order, the best of ``classes`` where the
        predictor ranks classes."""

    def describe(self) -> str:
        """One line for reports (what and from where)."""
        return self.name


def create_predictor(name: str, **options) -> Predictor:
    """Build the predictor ``name`` of ``PREDICTORS`` with its ``options``."""
    return PREDICTORS.create(name, **options)  # type: ignore[return-value]
