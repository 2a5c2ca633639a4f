"""Measure and write a fitted rule table: agreement with the labels, the table files and its
card (``table.json`` as data, ``CARD.md`` for people), and ``fit_command``, the whole of
``expllm rules fit`` (the statistics of the fit are ``engine.cot.rules_fit``'s)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cot.rules import TABLE_CARD, RuleBook
from engine.cot.rules_fit import (
    FitOptions,
    FittedTable,
    anchor_faces,
    build_design,
    fit_table,
    prototype_check,
    readings,
)
from engine.resources import data_dir
from engine.types import EMOTIONS, AUReading


def agreement(book: RuleBook, faces: pd.DataFrame, reads: list[AUReading]) -> dict:
    """``au_supports_label`` of ``book`` on ``faces``: overall, per class and per split."""
    dominant = [book.evaluate(r).dominant for r in reads]
    hit = np.array([d == y for d, y in zip(dominant, faces["label"], strict=True)])
    out = {"n": len(hit), "agreement": float(hit.mean()) if len(hit) else None, "per_class": {}}
    for emotion in EMOTIONS:
        rows = (faces["label"] == emotion).to_numpy()
        if rows.any():
            out["per_class"][emotion] = {"n": int(rows.sum()), "agreement": float(hit[rows].mean())}
    supported = [e["agreement"] for e in out["per_class"].values()]
    out["mean_class_agreement"] = float(np.mean(supported)) if supported else None
    return out


def write_table(table: FittedTable, out: Path | str, card: dict) -> Path:
    """Write the fitted tables, ``table.json`` (the card as data) and ``CARD.md`` into ``out``;
    the prototypes and ``rules.json`` start from the hand-set ones in ``data/``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "au_emotions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["au", "emotion", "weight", "source"])
        for link in sorted(table.links, key=lambda li: (li.au, -li.weight, li.emotion)):
            writer.writerow([link.au, link.emotion, f"{link.weight:.3f}", link.source])
    with (data_dir() / "prototypes.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (out / "prototypes.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            weight = table.prototype_weights.get(row["prototype"], float(row["weight"]))
            writer.writerow({**row, "weight": f"{weight:.3f}"})
    with (out / "priors.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["emotion", "weight", "source"])
        source = f"fitted on {card.get('dataset', '?')} {card.get('fit_split', '?')}"
        for emotion, weight in table.priors.items():
            writer.writerow([emotion, f"{weight:.3f}", source])
    config = json.loads((data_dir() / "rules.json").read_text())
    config["neutral_activation_scale"] = round(table.neutral_activation_scale, 3)
    config["active_threshold"] = card.get("active_threshold", config["active_threshold"])
    (out / "rules.json").write_text(
        "{\n"
        + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in config.items())
        + "\n}\n"
    )
    (out / TABLE_CARD).write_text(json.dumps(card, indent=2) + "\n")
    if "prototype_check" in card:  # a finished card (fit_command writes the tables first)
        (out / "CARD.md").write_text(card_markdown(card, table))
    return out


def card_markdown(card: dict, table: FittedTable) -> str:
    """The human-readable card of a fitted table (``CARD.md``)."""
    options, links = card["options"], card["links"]
    lines = [
        f"# Rule table fitted for the `{card['au_backend']}` AU back end",
        "",
        f"Made by `{card['command']}` (`engine/cot/rules_fit.py`, expllm "
        f"{card['engine_version']}); `table.json` holds this card as data. Read by "
        f"`engine.cot.rules.RuleBook`: runs with `--au-backend {card['au_backend']}` use it.",
        "",
        f"* **Data:** {card['dataset']}, `{card['fit_split']}` split only: {card['fit']['n']} "
        f"labelled faces, AUs from `{card['au_backend']}` "
        f"({', '.join(card['au_model_versions'])}), shards {', '.join(card['shards'])}.",
        "* **Model:** the rule book's own scores (`RuleBook.evaluate`): prior + weight x "
        f"intensity/5 of each active AU (threshold {card['active_threshold']}) + prototype "
        "weight x coverage + neutral scale x (1 - activation), fitted as a multinomial logistic "
        f"regression: non-negative, L1 {options['l1']} (sparse), FISTA, at most "
        f"{options['iterations']} iterations, deterministic, numpy only.",
        f"* **Links:** {links['total']} AU -> emotion links: {links['hand_set']} of the "
        f"{links['hand_set_available']} hand-set EMFACS / Du et al. links on AUs this back end "
        f"measures, and {links['new']} new ones the data supports (one-sided z-test on "
        f"`{card['fit_split']}`, family-wise alpha {options['alpha']}, lift >= "
        f"{options['min_lift']}, at least {options['min_count']} faces); each row of "
        "`au_emotions.csv` names its source.",
        "* **Prototypes:** the EMFACS and Du et al. prototypes are kept by name, each weight "
        f"between 1 and {options['prototype_cap']} x its hand-set weight. Posed prototype faces "
        f"(each prototype whole and with one AU left out, at intensities 2, 3 and 4, and a face "
        f"at rest) are weighed beside the data ({options['anchors']} x its weight), so that the "
        "table still reads FACS prototypes through its AU links.",
        f"* **Priors:** a constant evidence per emotion (`priors.csv`), fitted; neutral "
        f"activation scale {table.neutral_activation_scale:.3f} (`rules.json`).",
        "",
        "## Agreement",
        "",
        "`au_supports_label`: the rules' dominant emotion equals the label, measured with "
        "`RuleBook.evaluate` on the shards' AUs.",
        "",
        "| split | faces | fitted table | hand-set table (`data/`) |",
        "|---|---|---|---|",
    ]
    for name, figures in card["agreement"].items():
        hand = card["agreement_hand_set"][name]
        lines.append(
            f"| {name} | {figures['n']} | {_pct(figures['agreement'])} (class mean "
            f"{_pct(figures['mean_class_agreement'])}) | {_pct(hand['agreement'])} (class mean "
            f"{_pct(hand['mean_class_agreement'])}) |"
        )
    proto = card["prototype_check"]
    lines += [
        f"| posed prototypes | {proto['n']} | {_pct(proto['fitted'])} | "
        f"{_pct(proto['hand_set'])} |",
        "",
        "Per class (fitted / hand-set):",
        "",
        "| class | " + " | ".join(card["agreement"]) + " |",
        "|---|" + "---|" * len(card["agreement"]),
    ]
    for emotion in EMOTIONS:
        cells = []
        for name, figures in card["agreement"].items():
            mine = figures["per_class"].get(emotion)
            hand = card["agreement_hand_set"][name]["per_class"].get(emotion)
            cells.append(
                "-"
                if mine is None
                else f"{_pct(mine['agreement'])} / {_pct(hand['agreement'])} (n {mine['n']})"
            )
        lines.append(f"| {emotion} | " + " | ".join(cells) + " |")
    lines += ["", "## Weights", "", "| AU | emotion | weight | source |", "|---|---|---|---|"]
    for link in sorted(table.links, key=lambda li: (li.au, -li.weight)):
        lines.append(f"| {link.au} | {link.emotion} | {link.weight:.3f} | {link.source} |")
    lines += [
        "",
        "| prototype | emotion | AUs | weight |",
        "|---|---|---|---|",
        *(
            f"| {name} | {card['prototype_emotions'][name][0]} | "
            f"{card['prototype_emotions'][name][1]} | {weight:.3f} |"
            for name, weight in table.prototype_weights.items()
        ),
        "",
        "Priors: " + ", ".join(f"{e} {w:.3f}" for e, w in table.priors.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def fit_command(
    labelled: pd.DataFrame,
    shards: Sequence[Path | str],
    split: str,
    out: Path | str,
    eval_splits: Sequence[str] = ("valid",),
    options: FitOptions = FitOptions(),  # noqa: B008
    command: str = "",
) -> dict:
    """Fit a table on the ``split`` faces of ``labelled`` (the ``labelled_faces`` of ``shards``,
    one or more Exp-CoT output folders), measure agreement there and on ``eval_splits``, write
    table and card into ``out``; returns the card."""
    import engine

    base = RuleBook.load()
    if options.threshold is not None:
        base = replace(base, active_threshold=float(options.threshold))
    faces = labelled[labelled["split"] == split].reset_index(drop=True)
    if faces.empty:
        raise ValueError(f"{', '.join(map(str, shards))}: no labelled faces of split {split!r}")
    backends = sorted(labelled["au_backend"].dropna().unique())
    if len(backends) != 1:
        raise ValueError(f"the shards come from several AU back ends {backends}; fit one at a time")
    reads = readings(faces)
    design = build_design(base, list(faces["label"]), reads)
    table = fit_table(base, design, options)
    known = {(au, e) for au, pairs in base.associations.items() for e, _ in pairs}
    card = {
        "au_backend": backends[0],
        "au_model_versions": sorted(faces["au_model_version"].dropna().unique()),
        "dataset": ", ".join(sorted(faces["dataset"].dropna().unique())),
        "specs": sorted({_spec(folder) for folder in shards} - {None}),
        "fit_split": split,
        "shards": [str(folder) for folder in shards],
        "command": command or _default_command(shards, split, out),
        "engine_version": engine.__version__,
        "active_threshold": base.active_threshold,
        "options": asdict(options),
        "fit": {"n": len(faces), "loss": round(table.loss, 4)},
        "links": {
            "total": len(table.links),
            "hand_set": sum(not li.new for li in table.links),
            "hand_set_available": len({k for k in known if k[0] in design.aus}),
            "new": sum(li.new for li in table.links),
        },
        "prototype_emotions": {p.name: [p.emotion, p.aus] for p in base.prototypes},
    }
    out = Path(out)
    write_table(table, out, card)
    fitted = RuleBook.load(out)
    evaluated = {split: (faces, reads)}
    for name in eval_splits:
        frame = labelled[labelled["split"] == name].reset_index(drop=True)
        if len(frame) and name != split:
            evaluated[name] = (frame, readings(frame))
    card["agreement"] = {n: agreement(fitted, f, r) for n, (f, r) in evaluated.items()}
    hand = RuleBook.load()  # the hand-set tables of data/, as they are
    card["agreement_hand_set"] = {n: agreement(hand, f, r) for n, (f, r) in evaluated.items()}
    card["prototype_check"] = {
        "n": len(anchor_faces(hand)[0]),
        "fitted": prototype_check(fitted, hand)["agreement"],
        "hand_set": prototype_check(hand)["agreement"],
    }
    write_table(table, out, card)
    return card


def _spec(folder: Path | str) -> str | None:
    manifest = Path(folder) / "_manifest.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("config", {}).get("spec")


def _default_command(shards: Sequence[Path | str], split: str, out: Path | str) -> str:
    return f"expllm rules fit {' '.join(map(str, shards))} --split {split} --out {out}"
