"""What speaks for and against reading a face as an emotion: the measured cues a CoT cites when
it reasons towards the expected expression (``engine.cot.render``), from a rule book's evidence
(``engine.cot.rules.EmotionEvidence``)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.cot.rules import ActiveAU, EmotionEvidence, PrototypeMatch


@dataclass(frozen=True)
class Support:
    """What speaks for and against reading a face as ``emotion`` (``support``).

    ``consistent``: active AUs that add evidence for ``emotion``, strongest contribution first
    (the ``contrary`` AU too when it also adds some);
    ``prototypes``: matched prototypes of ``emotion``; ``calm``: the face's overall activity is
    low enough to add neutral evidence (activation below 1); ``mild``: no active AU reaches
    level D (pronounced); ``contrary``: the active AU that adds the most evidence
    for the rules' dominant emotion over ``emotion`` when that is not ``emotion`` (None when
    the dominant reading is neutral, or the same emotion).
    """

    emotion: str
    supported: bool
    consistent: tuple[ActiveAU, ...]
    prototypes: tuple[PrototypeMatch, ...]
    calm: bool
    contrary: ActiveAU | None
    mild: bool = False

    @property
    def has_cues(self) -> bool:
        """Whether any measured cue is consistent with ``emotion`` (for neutral: a calm or mild
        face)."""
        quiet = self.emotion == "neutral" and (self.calm or self.mild)
        return bool(self.consistent or self.prototypes or quiet)


def support(evidence: EmotionEvidence, emotion: str) -> Support:
    """The measured cues consistent with reading the face as ``emotion`` and the strongest
    contrary cue (see ``Support``)."""

    def pull(item: ActiveAU, target: str) -> float:
        return evidence.contributions.get(item.au, {}).get(target, 0.0)

    consistent = tuple(
        sorted(
            (a for a in evidence.active if pull(a, emotion) > 0),
            key=lambda a: (-pull(a, emotion), -a.intensity, a.au),
        )
    )
    contrary = None
    if evidence.dominant not in (emotion, "neutral") and evidence.active:
        # the AU that pulls hardest towards the dominant emotion and away from ``emotion``
        def net(a: ActiveAU) -> float:
            return pull(a, evidence.dominant) - pull(a, emotion)

        best = max(evidence.active, key=lambda a: (net(a), pull(a, evidence.dominant)))
        contrary = best if net(best) > 0 else None
    return Support(
        emotion=emotion,
        supported=evidence.dominant == emotion,
        consistent=consistent,
        prototypes=tuple(m for m in evidence.prototypes if m.emotion == emotion),
        calm=evidence.activation < 1.0,
        contrary=contrary,
        mild=all(a.level in ("", "A", "B", "C") for a in evidence.active),
    )
