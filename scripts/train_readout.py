"""Train the nano ExpLLM's LM to read the face: its answer to the label-only question
(``engine.model.answers``), on faces or views of faces it has not seen, scored on FER+ Valid
faces against the encoder head (issue 13: the LM's own reading).

    git worktree add /tmp/expllm-v3 c5599d8        # version 3's weights, the warm start
    python scripts/train_readout.py --model /tmp/expllm-v3/engine/weights/expllm_nano \
        --train-on train-augmented --train-faces 3200 --steps 200 --out DIR   # version 4
    python scripts/train_readout.py --train-on valid-a --steps 200 --out DIR   # the diagnosis
    python scripts/train_readout.py --train-faces 6400 --face-seed 1 --steps 400 --lr 1e-4 \
        --eval-faces 800 --out DIR     # version 4 trained on (tried, not shipped: the card)
    python scripts/train_readout.py --train-faces 3200 --face-seed 2 --steps 200 --lr 1e-4 \
        --eval-faces 800 --target votes+head --out DIR   # distilled (tried, not shipped)

``train-augmented``: ``--train-faces`` FER+ Train faces (drawn by ``--face-seed``, 0), each seen
once through the encoder's wide training augmentation (``scripts/train_nano_encoder.py``:
rotation, scale, shift, flip, contrast, an erased patch; the same seed), its AUs measured on
that view: views neither the encoder nor the LM has seen, whose features look like a new face's
(the encoder head: 87.9 % on such views of 800 Train faces, 86.8 % on 800 Valid faces, 92.9 % on
the Train faces themselves). ``train``: the Train faces as they are; ``valid-a``: one half of
FER+ Valid (faces the encoder never saw; then only the other half is a fair test). Valid is
split in halves by seed 0 (a permutation of its majority-protocol faces); the first
``--eval-faces`` of half B are scored. Trained are the projectors and the LoRA of ``--model`` (a
warm start) on label-only turns (``engine.model.conversations.label_conversation``), by
``--target``: ``label``, the LM's loss of the label's answer tokens; ``votes``, ``head`` or
``votes+head``, the answer's cross-entropy over the class names against FER+'s vote shares,
the encoder head's probabilities on the view the LM sees, or their mean (distillation), plus
the label's answer loss. ``--widen-lora`` adds LM modules to the warm start's LoRA (a copy in
``--out``/warm_start; the new ones start at zero, so the copy reads as the warm start). AdamW,
``--lr`` with a 10-step warm-up and a cosine decay, batch 16, clipping 1.0, bfloat16 autocast
(where the CPU does bfloat16 natively, else float32: torch's emulation is ~8x slower),
seeds 0 (torch), ``--face-seed`` (the faces, the views) and 1 (the order). Prints JSON: the
LM's answer before and after and the encoder head on the scored faces; writes the trained model
and ``training_log.json`` (the settings, every step's loss, the figures) to ``--out``. Needs torch
(``pip install 'expllm[train,openface]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from engine.data.datasets import read_dataset
from engine.data.images import load_image
from engine.evaluation.scoring import argmax_labels, classification_metrics
from engine.model import load_model
from engine.model.answers import answer_scores, label_answers
from engine.model.config import ADAPTER_DIR, CONFIG_FILE, SHIPPED_MODEL
from engine.model.conversations import label_conversation
from engine.model.encoder import grey_face, softmax
from engine.model.settings import native_cpu_bfloat16
from engine.resources import shared_dir
from engine.types import EMOTIONS

BATCH = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument(
        "--train-on", choices=("train-augmented", "train", "valid-a"), default="train-augmented"
    )
    parser.add_argument("--train-faces", type=int, default=3200, help="with --train-on train*")
    parser.add_argument(
        "--face-seed", type=int, default=0, help="draws the Train faces and their views"
    )
    parser.add_argument(
        "--target",
        choices=("label", "votes", "head", "votes+head"),
        default="label",
        help="what the answer learns: the label's tokens (the LM's loss), or a distribution",
    )
    parser.add_argument(
        "--widen-lora",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="more LM modules for the LoRA (e.g. o_proj up_proj); new ones start at zero",
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-faces", type=int, default=160)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(0)
    valid = read_dataset(f"ferplus:{args.ferplus}", split="valid").records
    order = np.random.default_rng(0).permutation(len(valid))
    half_a = [valid[i] for i in order[: len(valid) // 2]]
    scored = [valid[i] for i in order[len(valid) // 2 :][: args.eval_faces]]
    if args.train_on == "valid-a":
        faces = half_a
    else:
        train = read_dataset(f"ferplus:{args.ferplus}", split="train").records
        draw = np.random.default_rng(args.face_seed)
        pick = draw.choice(len(train), args.train_faces, replace=False)
        faces = [train[i] for i in pick]

    model = load_model(_widened(args.model, args.widen_lora, args.out), trainable=True)
    images = [load_image(r) for r in faces]
    if args.train_on == "train-augmented":
        images = _augmented(images, args.face_seed)
    visuals = []
    for start in range(0, len(images), 256):
        visuals += model.visual_inputs(images[start : start + 256])
    scored_visuals = model.visual_inputs([load_image(r) for r in scored])
    labels = [r.label for r in scored]
    figures = {"train_on": args.train_on, "train_faces": len(faces), "steps": args.steps}
    head = argmax_labels(np.stack([v.log_prior for v in scored_visuals]))
    figures["head"] = classification_metrics(labels, head).headline()
    before = argmax_labels(label_answers(model, scored_visuals))
    figures["lm_answer_before"] = classification_metrics(labels, before).headline()
    print(json.dumps(figures), flush=True)

    examples = [
        (visual, label_conversation(record.label), _target(args.target, visual, record))
        for visual, record in zip(visuals, faces, strict=True)
    ]
    parameters = model.trainable_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / args.steps)),
    )
    shuffled = np.random.default_rng(1).permutation(len(examples))
    model.module.train()
    losses, start = [], time.perf_counter()
    for step in range(args.steps):
        at = (step * BATCH) % len(examples)
        chosen = [examples[i] for i in shuffled[at : at + BATCH]]
        with torch.autocast("cpu", torch.bfloat16, enabled=native_cpu_bfloat16()):
            if args.target == "label":
                loss = model.module(**model.collate([e[:2] for e in chosen])).loss
            else:
                loss = _distribution_loss(model, chosen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.save(args.out)
    trained = load_model(args.out)
    figures["seconds"] = round(time.perf_counter() - start)
    figures["loss_first_last_20"] = [np.mean(losses[:20]), np.mean(losses[-20:])]
    after = argmax_labels(label_answers(trained, scored_visuals))
    figures["lm_answer_after"] = classification_metrics(labels, after).headline()
    print(json.dumps(figures), flush=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    log = {"config": settings | {"batch_size": BATCH}, "steps": losses, "figures": figures}
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    return 0


def _widened(folder: Path, modules: list[str], out: Path) -> Path:
    """``folder``, or with ``modules`` its copy (``out``/warm_start) whose LoRA also adapts
    ``modules``: peft gives the new ones their zero start (B = 0), so the copy reads as
    ``folder`` until trained."""
    if not modules:
        return folder
    import shutil

    copy = out / "warm_start"
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    adapter = json.loads((copy / ADAPTER_DIR / "adapter_config.json").read_text())
    adapter["target_modules"] = sorted(set(adapter["target_modules"]) | set(modules))
    (copy / ADAPTER_DIR / "adapter_config.json").write_text(json.dumps(adapter, indent=1) + "\n")
    config = json.loads((copy / CONFIG_FILE).read_text())
    config["lora"]["targets"] = adapter["target_modules"]
    (copy / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return copy


def _target(kind: str, visual, record) -> np.ndarray | None:
    """The class distribution the answer learns for one face: FER+'s vote shares, the encoder
    head's probabilities on the view the LM sees (face + mirror), or their mean; ``None`` for
    ``label`` (the label's tokens)."""
    if kind == "label":
        return None
    head = softmax(visual.log_prior[None])[0]
    if kind == "head":
        return head
    if not record.soft_label:
        raise ValueError(f"{record.path}: no vote shares for --target {kind}")
    votes = np.array([record.soft_label[e] for e in EMOTIONS])
    return votes if kind == "votes" else (votes + head) / 2


def _distribution_loss(model, chosen):
    """Cross-entropy of the answer over the class names (``engine.model.answers``'s scores,
    normalised over the classes) against each face's target distribution, plus the LM's loss
    of the label's own answer tokens (the whole name and the end of turn), so that the name
    stays the answer the LM writes."""
    import torch
    from transformers import DynamicCache

    scores = answer_scores(model, model.module.lm, [e[0] for e in chosen], EMOTIONS, DynamicCache())
    targets = torch.tensor(np.stack([e[2] for e in chosen]), dtype=torch.float32)
    labels = torch.tensor([EMOTIONS.index(e[1][-1]["content"]) for e in chosen])
    spread = -(targets * torch.log_softmax(scores, dim=1)).sum(1).mean()
    return spread - scores.gather(1, labels[:, None]).mean()


def _augmented(images: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each RGB face once through the encoder's wide training augmentation (``seed``): grey,
    48 x 48, as ``scripts/train_nano_encoder.py`` trains on."""
    import torch

    from scripts.write_views import views_of

    grey = np.stack([grey_face(i) for i in images])
    views = views_of(grey, torch.Generator().manual_seed(seed))
    return [np.repeat(v[..., None], 3, axis=2) for v in views]


if __name__ == "__main__":
    sys.exit(main())
