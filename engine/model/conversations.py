"""Shards -> training conversations in the ExpLLM paper's format, and exports for other trainers.

Each labelled record becomes one sample (deterministically, by a hash of its record id):

* a **CoT** sample (``cot_eligible`` records only: verified — complete, faithful, the
  Interpretation's verdict being the label, also where it weighs contrary evidence): system
  prompt, ``<image>`` + task + question -> the CoT text, then the label question
  -> the label (the CoT turn before the label turn, as in the paper);
* a **FER** sample (any record): system prompt, ``<image>`` + task + label question -> the label.

``mix`` = (FER, CoT) sets the shares among eligible records (the paper's 3:1 by default);
the other records give FER samples. The wording is ``data/prompts/expllm.json``
(``prompts()``), the task naming the classes of ``engine.types.EMOTIONS``. Exports
(``write_export``):

* ``paper``: JSONL, ``{"id", "image", "kind", "label", "messages": [{"role", "content"}]}``
  with the literal ``<image>`` placeholder in the first user turn;
* ``llava``: one JSON list, ``{"id", "image", "conversations": [{"from", "value"}]}`` (system
  prompt left to the trainer's conversation template, as in LLaVA's own data);
* ``messages``: OpenAI / Hugging Face chat JSONL, the user content as a list of
  ``{"type": "image", "image": PATH}`` and ``{"type": "text", "text": ...}`` parts.

Images are referenced by ``image_path`` (relative to the dataset root named in the shards'
manifest); with ``images_dir`` they are written there (from ``image_bytes`` when embedded, else
copied from the dataset root) and referenced relative to it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd

from engine.resources import data_file
from engine.store.shards import MANIFEST
from engine.store.stats import read_shards
from engine.types import EMOTIONS

IMAGE_TOKEN = "<image>"
#: The shard columns a conversation needs.
COLUMNS = ["record_id", "image_path", "image_bytes", "label", "cot_text", "verified"]


@dataclass(frozen=True)
class Sample:
    """One training conversation: ``messages`` (system, user, assistant, ...) about one image."""

    id: str
    image: str  # image_path, relative to the dataset root
    kind: str  # "cot" | "fer"
    label: str
    messages: list[dict[str, str]]
    image_bytes: bytes | None = field(default=None, repr=False, compare=False)

    def to_paper(self) -> dict:
        data = asdict(self)
        data.pop("image_bytes")
        return data


@dataclass(frozen=True)
class Prompts:
    """The wording of the training conversations (``data/prompts/expllm.json``)."""

    system: str
    task: str  # names the classes
    cot_question: str
    label_question: str
    follow_up: str

    @property
    def cot_prompt(self) -> str:
        """The first user turn of a CoT sample (also the prompt a new model is asked)."""
        return f"{IMAGE_TOKEN}\n{self.task}\n{self.cot_question}"

    @property
    def label_prompt(self) -> str:
        """The first user turn of a label-only sample."""
        return f"{IMAGE_TOKEN}\n{self.task}\n{self.label_question}"


@cache
def prompts() -> Prompts:
    """The training prompts, the task naming the classes of ``engine.types.EMOTIONS``."""
    data = json.loads(data_file("prompts/expllm.json").read_text(encoding="utf-8"))
    count = data["count_words"].get(str(len(EMOTIONS)), str(len(EMOTIONS)))
    task = data["task"].format(count=count, classes=", ".join(EMOTIONS))
    return Prompts(
        data["system"], task, data["cot_question"], data["label_question"], data["follow_up"]
    )


def label_conversation(label: str) -> list[dict[str, str]]:
    """The label-only conversation of training (the ``fer`` turns): the system prompt, the label
    question and ``label`` as the answer."""
    words = prompts()
    return [
        {"role": "system", "content": words.system},
        {"role": "user", "content": words.label_prompt},
        {"role": "assistant", "content": label},
    ]


def build_sample(row: dict, kind: str) -> Sample:
    """The ``kind`` conversation of one shard row."""
    words = prompts()
    system = {"role": "system", "content": words.system}
    if kind == "cot":
        messages = [
            system,
            {"role": "user", "content": words.cot_prompt},
            {"role": "assistant", "content": row["cot_text"]},
            {"role": "user", "content": words.follow_up},
            {"role": "assistant", "content": row["label"]},
        ]
    elif kind == "fer":
        messages = label_conversation(row["label"])
    else:
        raise ValueError(f"sample kind must be 'cot' or 'fer', got {kind!r}")
    return Sample(
        id=f"{row['record_id']}#{kind}",
        image=row["image_path"],
        kind=kind,
        label=row["label"],
        messages=messages,
        image_bytes=row.get("image_bytes"),
    )


def _kind(record_id: str, mix: tuple[int, int]) -> str:
    fer, cot = mix
    bucket = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) % (fer + cot)
    return "fer" if bucket < fer else "cot"


def parse_mix(text: str) -> tuple[int, int]:
    """``"FER:COT"`` (e.g. ``"3:1"``, ``"0:1"`` for CoT only) -> a pair of shares."""
    fer, sep, cot = text.partition(":")
    try:
        pair = (int(fer), int(cot))
    except ValueError:
        pair = (-1, -1)
    if not sep or min(pair) < 0 or sum(pair) == 0:
        raise ValueError(f"mix must be FER:COT with non-negative integers, got {text!r}")
    return pair


def read_rows(shards: str | Path) -> pd.DataFrame:
    """The labelled records of an Exp-CoT output folder, ``verified`` as a bool."""
    shards = Path(shards)
    if not (shards / MANIFEST).is_file():
        raise FileNotFoundError(f"{shards}: no {MANIFEST}; not an Exp-CoT output folder")
    frame = read_shards(shards, COLUMNS)
    if frame.empty:
        raise ValueError(f"{shards}: no shard-*.parquet files with records")
    frame = frame[frame["label"].notna()].copy()
    frame["verified"] = frame["verified"].fillna(False).astype(bool) & frame["cot_text"].notna()
    return frame.sort_values("record_id").reset_index(drop=True)


def cot_eligible(row: dict) -> bool:
    """Whether a record's CoT may be a training turn: verified (complete, faithful, the
    Interpretation's verdict is the label), so that every learnt Conclusion follows its
    Interpretation's verdict. Texts whose measured evidence favours another emotion are kept:
    they state it and weigh the contrary cues (the templates' honest phrasing)."""
    return bool(row["verified"]) and isinstance(row.get("cot_text"), str)


def build_samples(
    frame: pd.DataFrame, mix: tuple[int, int] = (3, 1), verified_cots: bool = True
) -> list[Sample]:
    """One sample per row of ``frame``: a row whose CoT may be learnt (``cot_eligible``) gets
    its kind drawn by record-id hash with shares ``mix``, any other row a label-only sample
    (``verified_cots=False``: every row with a CoT text is drawn so)."""
    out = []
    for row in frame.to_dict("records"):
        drawn = cot_eligible(row) if verified_cots else isinstance(row.get("cot_text"), str)
        out.append(build_sample(row, _kind(row["record_id"], mix) if drawn else "fer"))
    return out


def dataset_root(shards: str | Path, override: str | Path | None = None) -> Path:
    """The dataset root of the images: ``override``, else the manifest's ``KIND:PATH`` spec.

    A relative path is taken relative to the working directory, else to the repository root.
    """
    if override is not None:
        root = Path(override)
    else:
        manifest = json.loads((Path(shards) / MANIFEST).read_text())
        spec = manifest.get("config", {}).get("spec", "")
        _, sep, path = spec.partition(":")
        if not sep:
            raise ValueError(f"{Path(shards) / MANIFEST}: no dataset spec KIND:PATH in its config")
        root = Path(path)
        if not root.is_absolute() and not root.is_dir():
            root = Path(__file__).resolve().parents[2] / path
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} of {shards} not found (pass --data-root)")
    return root


def _llava(sample: Sample, image: str) -> dict:
    turns = [m for m in sample.messages if m["role"] != "system"]
    return {
        "id": sample.id,
        "image": image,
        "conversations": [
            {"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
            for m in turns
        ],
    }


def _messages(sample: Sample, image: str) -> dict:
    out = []
    for message in sample.messages:
        content = message["content"]
        if message["role"] == "user" and content.startswith(IMAGE_TOKEN):
            text = content[len(IMAGE_TOKEN) :].lstrip("\n")
            parts = [{"type": "image", "image": image}, {"type": "text", "text": text}]
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": message["role"], "content": content})
    return {"id": sample.id, "messages": out}


def _paper(sample: Sample, image: str) -> dict:
    return {**sample.to_paper(), "image": image}


#: Export formats: name -> (row builder, JSON Lines?).
EXPORTS: dict[str, tuple[Callable[[Sample, str], dict], bool]] = {
    "paper": (_paper, True),
    "llava": (_llava, False),
    "messages": (_messages, True),
}


def _image_refs(
    samples: list[Sample], root: Path | None, images_dir: Path | None
) -> Iterator[tuple[Sample, str]]:
    for sample in samples:
        if images_dir is None:
            yield sample, sample.image
            continue
        target = images_dir / sample.image
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if sample.image_bytes is not None:
                target.write_bytes(sample.image_bytes)
            else:
                source = root / sample.image if root else Path(sample.image)
                if not source.is_file():
                    raise FileNotFoundError(f"{sample.id}: image {source} not found")
                shutil.copyfile(source, target)
        yield sample, sample.image


def write_export(
    samples: list[Sample],
    fmt: str,
    out: str | Path,
    root: Path | None = None,
    images_dir: str | Path | None = None,
) -> int:
    """Write ``samples`` to ``out`` in format ``fmt``; returns the number of samples written."""
    if fmt not in EXPORTS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {sorted(EXPORTS)}")
    builder, lines = EXPORTS[fmt]
    images = Path(images_dir) if images_dir else None
    rows = [builder(s, ref) for s, ref in _image_refs(samples, root, images)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        if lines:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            json.dump(rows, fh, ensure_ascii=False, indent=1)
    return len(rows)


def answer_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """The chat-template text of ``messages`` cut into (text, is_assistant_answer) pieces."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(
            messages[:index], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template is not prefix-stable; cannot mask prompts")
        pieces += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return pieces
