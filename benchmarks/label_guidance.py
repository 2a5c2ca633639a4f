"""The nano ExpLLM's own reading against its encoder head, per label-guidance weight, on FER+
Valid (choose the weight here, never on Test); with ``--split test --limit 64`` its CPU speed.

    .venv/bin/python benchmarks/label_guidance.py [--limit 160] [--weights 0 1 3] [--split valid]

Samples ``--limit`` faces of ``--split`` (majority protocol, seed 0), measures them once, and
decodes each with AU grounding and every weight ``w`` (0: the LM's own reading); prints the
encoder head's accuracy and UAR on the same faces (with ``--lm-answer`` also the LM's own
answer to the label-only question, ``engine.model.answers``, and with ``--answer-weights`` that
answer + each weight x the prior-corrected head: the planned reading of
``reading_by_answer=true``), then per weight the accuracy
and UAR of the label read from the Conclusion, the share of CoTs in the exact format, the mean
AU faithfulness, the share of complete CoTs (every active AU cited, strongest first, up to the
table's cap), the shares of CoTs stating AU intensities, AU evidence and cues as measured, the
CoT wording figures (``engine.evaluation.cot_quality``: the Conclusion following the
Interpretation's lead, non-word tokens, annotation wording) and seconds per face.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cot.cue_claims import misstated_cues
from engine.cot.rules import RuleBook
from engine.cot.verify import conclusion_label, verify
from engine.data.datasets import read_dataset
from engine.data.images import load_image
from engine.evaluation.cot_quality import wording
from engine.evaluation.scoring import argmax_labels, classification_metrics
from engine.model import load_model
from engine.model.answers import label_answers
from engine.model.config import GENERATION_BATCH
from engine.resources import shared_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("engine/weights/expllm_nano"))
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--limit", type=int, default=160)
    parser.add_argument("--split", default="valid")
    parser.add_argument(
        "--balance", type=float, default=None, help="prior correction (default: the model's)"
    )
    parser.add_argument(
        "--weights", type=float, nargs="*", default=[0.0, 1.0, 3.0], help="none: no CoTs"
    )
    parser.add_argument("--batch-size", type=int, default=GENERATION_BATCH)
    parser.add_argument(
        "--lm-answer",
        action="store_true",
        help="also score the LM's answer to the label-only question (no CoT)",
    )
    parser.add_argument(
        "--answer-weights",
        type=float,
        nargs="*",
        default=[],
        help="with --lm-answer: also the LM's answer + W x the prior-corrected head, the "
        "reading of reading_by_answer=true at label guidance W (no CoT)",
    )
    parser.add_argument("--out", type=Path, help="CSV of every CoT (image, label, weight, cot)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="KEY=VALUE decoding setting (e.g. stated_facts=evidence), repeatable",
    )
    args = parser.parse_args(argv)
    records = read_dataset(f"ferplus:{args.ferplus}", split=args.split).records
    pick = np.random.default_rng(0).choice(len(records), min(args.limit, len(records)), False)
    records = [records[i] for i in sorted(pick)]
    model = load_model(args.model).to_device()
    visuals = model.visual_inputs([load_image(r) for r in records])
    labels = [r.label for r in records]
    groundings = model.groundings(visuals)
    cap = RuleBook.for_backend(model.config.au_backend).max_cited_aus
    base = model.config.decoding.with_options(dict(o.split("=", 1) for o in args.option))
    if args.balance is not None:
        base = replace(base, class_balance=args.balance)
    balanced = base.balanced(np.stack([v.log_prior for v in visuals]))
    head = argmax_labels(np.stack([v.log_prior for v in visuals]))
    head_balanced = argmax_labels(balanced)
    heads = {
        "encoder_head": classification_metrics(labels, head).headline(),
        "balanced": classification_metrics(labels, head_balanced).headline(),
    }
    if args.lm_answer:
        answers = label_answers(model, visuals)
        heads["lm_answer"] = classification_metrics(labels, argmax_labels(answers)).headline()
        for weight in args.answer_weights:
            joint = argmax_labels(answers + weight * balanced)
            heads[f"lm_answer_and_head_{weight:g}"] = classification_metrics(
                labels, joint
            ).headline()
    print(json.dumps(heads | {"split": args.split}), flush=True)
    rows = []
    for weight in args.weights:
        decoding = replace(base, grounded=True, label_guidance=weight)
        start = time.perf_counter()
        texts = []
        for i in range(0, len(visuals), args.batch_size):
            texts += model.generate(visuals[i : i + args.batch_size], decoding=decoding)
        seconds = (time.perf_counter() - start) / len(texts)
        checks = [
            verify(
                t,
                y,
                set(g.intensities),
                intensities=g.intensities,
                active=list(g.intensities.items()),
                cap=cap,
                evidence=g.evidence,
            )
            for t, y, g in zip(texts, labels, groundings, strict=True)
        ]
        rows += [
            {"image_path": r.relpath, "label": r.label, "weight": weight, "cot": t}
            for r, t in zip(records, texts, strict=True)
        ]
        words = wording(texts)
        row = {
            "weight": weight,
            "n": len(texts),
            **classification_metrics(labels, [conclusion_label(t) for t in texts]).headline(),
            "exact_format": round(float(np.mean([c.format_ok for c in checks])), 4),
            "faithfulness": round(float(np.mean([c.faithfulness for c in checks])), 4),
            "complete": round(float(np.mean([bool(c.complete) for c in checks])), 4),
            "quotes_as_measured": round(float(np.mean([not c.misquoted_aus for c in checks])), 4),
            "evidence_as_measured": round(
                float(np.mean([not c.misstated_evidence for c in checks])), 4
            ),
            "cues_as_measured": round(
                float(
                    np.mean(
                        [
                            not misstated_cues(t, g.rules_reading)
                            for t, g in zip(texts, groundings, strict=True)
                        ]
                    )
                ),
                4,
            ),
            "interpretation_agreement": round(words.interpretation_agreement, 4),
            "non_word_cots": round(words.non_word_cots, 4),
            "annotation_wording": round(words.annotation_wording, 4),
            "seconds_per_face": round(seconds, 3),
        }
        print(json.dumps(row), flush=True)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
