"""The writer and reader without a model: the Jinja ``CoTRenderer`` and the rule reader."""

from __future__ import annotations

from engine.cot.render import CoTRenderer
from engine.cot.verify import infer_label
from engine.cot.writers.base import Draft, Reader, Writer, WriteRequest, WriterSetup


class TemplateWriter(Writer):
    """The Jinja renderer: deterministic, label-aware, one round."""

    name = "template"
    uses_model = False

    def __init__(self, renderer: CoTRenderer):
        self.renderer = renderer

    @classmethod
    def build(cls, name: str, renderer: CoTRenderer, setup: WriterSetup) -> TemplateWriter:
        return cls(renderer)

    @property
    def model(self) -> None:
        return None

    def write(self, requests: list[WriteRequest]) -> list[Draft]:
        drafts = []
        for request in requests:
            rendered = self.renderer.render(request.record_id, request.label, request.evidence)
            drafts.append(Draft(rendered.cot.text, rendered.template_id))
        return drafts


class RuleReader(Reader):
    """``engine.cot.verify.infer_label``: reads the description (Key Observations and
    Interpretation), never the Conclusion."""

    name = "rules"

    def read_many(self, texts: list[str]) -> list[str | None]:
        return [infer_label(t) for t in texts]
