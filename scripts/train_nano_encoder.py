"""Train the ``nano`` face encoder: a small ResNet on 48x48 grey faces, from scratch, on FER+.

It is the vision half of the ``nano`` ExpLLM base (issue 4): trained first as an expression
classifier, its last feature map (8 x width channels, 6 x 6) later serves as visual tokens.
Exported to ONNX (``engine/weights/nano_encoder.onnx``: input ``image`` float32 [N,1,48,48]
in [0, 1]; outputs ``logits`` [N,8] in ``engine.types.EMOTIONS`` order and ``features``
[N,8w,6,6]), so inference needs only onnxruntime.

Protocol: FER+ Train (majority protocol, 26,940 faces) with the 10-annotator vote distributions
as soft targets; FER+ Valid for monitoring; FER+ Test (majority, 3,371) for the final figure.
Augmentation on the device: random affine (rotation +-15 deg, scale 0.85-1.15, shift +-10 %),
horizontal flip, brightness/contrast jitter, one random erased patch; with ``--transfer`` also
wider affine ranges, blur, gamma and a second occluder of random size and grey level (for faces
of other datasets: posed, sharper or softer, lit otherwise). SGD (momentum 0.9,
Nesterov), cosine learning rate with warm-up, weight decay 5e-4, bf16 autocast on CUDA (and
on the CPU with ``--cpu-bf16``).
Seeds fixed; deterministic algorithms where the backend has them.

``--init FILE.onnx`` starts from an exported encoder instead of at random (its batch norms, which
the export folds into the convolutions, are rebuilt from statistics on training faces);
``--swa`` keeps the learning rate constant after warm-up and returns the average of the weights
at each epoch's end (stochastic weight averaging, batch-norm statistics measured again).
``--train-on train+valid`` trains on FER+ Train and Valid together (30,336 faces; the final
model of a recipe chosen on Valid with Train alone): Valid is then not monitored.

    python scripts/train_nano_encoder.py                       # CPU or GPU, reads ../shared
    python scripts/train_nano_encoder.py --pack .work/ferplus.xz   # write a compact data pack
    python scripts/train_nano_encoder.py --packed .work/ferplus.xz --epochs 80 --out DIR
    python scripts/train_nano_encoder.py --packed .work/ferplus.xz --width 48 --init \
        engine/weights/nano_encoder.onnx --swa --lr 0.02 --epochs 12 --cpu-bf16 --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from functools import partial
from pathlib import Path

import numpy as np

EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EXPLLM_SHARED", REPO.parent / "shared"))


def load_split(spec: str, split: str) -> dict[str, np.ndarray]:
    """Grey 48x48 faces, majority labels and vote distributions of one FER+ split."""
    from engine.data.datasets import read_dataset
    from engine.data.images import load_image

    records = read_dataset(spec, split=split, protocol="majority").records
    images = np.stack([load_image(r)[:, :, 0] for r in records])
    labels = np.array([EMOTIONS.index(r.label) for r in records], np.int64)
    soft = np.array([[r.soft_label[e] for e in EMOTIONS] for r in records], np.float32)
    return {"x": images, "y": labels, "soft": soft}


def write_pack(path: Path, spec: str, splits: tuple[str, ...]) -> None:
    """One xz pack of ``splits``' faces (coded losslessly, ``scripts._packs``), labels and votes."""
    from scripts._packs import write_pack as write_arrays

    arrays = {}
    for split in splits:
        for key, value in load_split(spec, split).items():
            arrays[f"{split}_{key}"] = value
    write_arrays(path, arrays, faces=tuple(f"{split}_x" for split in splits))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {sorted(arrays)}")


def read_pack(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"x", "y", "soft"}}`` of a pack written by ``write_pack``."""
    from scripts._packs import read_pack as read_arrays

    data: dict[str, dict[str, np.ndarray]] = {}
    for key, value in read_arrays(path).items():
        split, name = key.split("_", 1)
        data.setdefault(split, {})[name] = value
    return data


def joined_splits(*splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One split of the faces, labels and vote distributions of ``splits``, in order."""
    return {key: np.concatenate([split[key] for split in splits]) for key in splits[0]}


def training_targets(split: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """[faces, 8] training targets of a split: its vote distributions (``soft``) or its
    majority labels one-hot (``hard``)."""
    if kind == "hard":
        return np.eye(len(EMOTIONS), dtype=np.float32)[split["y"]]
    return split["soft"]


def balancing_weights(targets: np.ndarray, power: float) -> np.ndarray:
    """[8] loss weights per class: (class share of the targets) ** -power, scaled so that the
    training faces' mean weight is 1 (power 0: all 1)."""
    share = targets.mean(axis=0).clip(min=1e-6)
    weights = share**-power
    return (weights / (targets @ weights).mean()).astype(np.float32)


def build_model(width: int = 32):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))

    class NanoEncoder(nn.Module):
        """ResNet-10-style encoder: 48 -> 24 -> 12 -> 6, widths w, 2w, 4w, 8w."""

        def __init__(self):
            super().__init__()
            w = width
            self.stem = nn.Sequential(
                nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
            )
            self.stages = nn.Sequential(
                Block(w, w, 1),
                Block(w, 2 * w, 2),
                Block(2 * w, 4 * w, 2),
                Block(4 * w, 8 * w, 2),
            )
            self.dropout = nn.Dropout(0.3)
            self.head = nn.Linear(8 * w, len(EMOTIONS))

        def forward(self, image):
            features = self.stages(self.stem((image - 0.5) / 0.25))
            pooled = features.mean(dim=(2, 3))
            return self.head(self.dropout(pooled)), features

    return NanoEncoder()


def augment(x, generator, wide: bool = False):
    """Random affine, flip, brightness/contrast and one erased patch, on the batch's device
    (``wide``: rotation +-20 deg and scale 0.75-1.25)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    dev = x.device
    uniform = partial(_uniform, generator, n, dev)
    angle = uniform(-20, 20) * math.pi / 180 if wide else uniform(-15, 15) * math.pi / 180
    scale = uniform(0.75, 1.25) if wide else uniform(0.85, 1.15)
    flip = (torch.rand(n, device=dev, generator=generator) < 0.5).float() * 2 - 1
    tx, ty = uniform(-0.1, 0.1), uniform(-0.1, 0.1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = uniform(0.7, 1.3).view(n, 1, 1, 1)
    brightness = uniform(-0.15, 0.15).view(n, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    side = 16
    cy = torch.randint(0, 48 - side, (n,), device=dev, generator=generator)
    cx = torch.randint(0, 48 - side, (n,), device=dev, generator=generator)
    patch = _squares(cy, cx, side)
    erase = (torch.rand(n, device=dev, generator=generator) < 0.5).view(n, 1, 1)
    return x.masked_fill((patch & erase).unsqueeze(1), 0.5)


def training_batch(images, generator, transfer: bool):
    """uint8 faces [n, 48, 48] -> an augmented float batch [n, 1, 48, 48] in [0, 1]
    (``augment``, with ``transfer``: wide and ``transfer_augment``), channels last."""
    import torch

    x = augment(images.float().div(255).unsqueeze(1), generator, transfer)
    if transfer:
        x = transfer_augment(x, generator)
    return x.contiguous(memory_format=torch.channels_last)


def transfer_augment(x, generator):
    """Blur (p 0.3, sigma 0.5-1.5), gamma 0.7-1.4 and one occluder (p 0.5, 8-24 px, random
    grey) on top of ``augment``."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    dev = x.device
    uniform = partial(_uniform, generator, n, dev)
    taps = torch.arange(-2, 3, device=dev, dtype=x.dtype)
    sigma = uniform(0.5, 1.5).view(n, 1)
    kernel = torch.exp(-(taps.view(1, 5) ** 2) / (2 * sigma**2))
    kernel = kernel / kernel.sum(1, keepdim=True)
    blur = (torch.rand(n, device=dev, generator=generator) < 0.3).view(n, 1)
    identity = (taps == 0).to(x.dtype).view(1, 5)
    kernel = torch.where(blur, kernel, identity)
    planes = x.reshape(1, n, 48, 48)
    planes = F.conv2d(
        F.pad(planes, (2, 2, 0, 0), mode="replicate"), kernel.view(n, 1, 1, 5), groups=n
    )
    planes = F.conv2d(
        F.pad(planes, (0, 0, 2, 2), mode="replicate"), kernel.view(n, 1, 5, 1), groups=n
    )
    x = planes.reshape(n, 1, 48, 48).clamp(0, 1) ** uniform(0.7, 1.4).view(n, 1, 1, 1)
    side = torch.randint(8, 25, (n,), device=dev, generator=generator)
    cy = (uniform(0, 1) * (48 - side)).long()
    cx = (uniform(0, 1) * (48 - side)).long()
    patch = _squares(cy, cx, side)
    patch = patch & (torch.rand(n, device=dev, generator=generator) < 0.5).view(n, 1, 1)
    grey = uniform(0, 1).view(n, 1, 1, 1).expand_as(x)
    return torch.where(patch.unsqueeze(1), grey, x)


def _uniform(generator, n: int, device, low: float, high: float):
    """``n`` draws from U(low, high) on ``device``."""
    import torch

    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def _squares(top, left, side):
    """Masks [n, 48, 48] of the squares with top-left corners ``top``, ``left`` ([n]) and
    sides ``side`` ([n], or one for all)."""
    import torch

    device = top.device
    side = torch.as_tensor(side, device=device).view(-1, 1, 1)
    top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)
    rows = torch.arange(48, device=device).view(1, 48, 1)
    cols = torch.arange(48, device=device).view(1, 1, 48)
    return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


def load_exported(model, path: Path, images: np.ndarray) -> None:
    """Start ``model`` from an exported encoder (ONNX; the export folds each batch norm into
    its convolution): the folded weights, with batch norms whose running statistics are measured
    on ``images`` (uint8 [N, 48, 48]) and whose affine parts undo them, so that the model computes
    the exported function and trains on as a batch-normalised network."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    graph = onnx.load(str(path)).graph
    arrays = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    folded = [
        (arrays[node.input[1]], arrays[node.input[2]])
        for node in graph.node
        if node.op_type == "Conv"
    ]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    pairs = list(zip(layers[0::2], layers[1::2], strict=False))  # (convolution, its norm)
    if len(pairs) != len(folded):
        raise ValueError(f"{path}: {len(folded)} convolutions, the model has {len(pairs)}")
    with torch.no_grad():
        for (conv, norm), (weight, bias) in zip(pairs, folded, strict=True):
            if tuple(conv.weight.shape) != weight.shape:
                raise ValueError(
                    f"{path}: convolution {weight.shape} for {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(torch.tensor(weight))
            norm.running_mean.zero_()  # the identity plus the folded bias, until measured
            norm.running_var.fill_(1.0)
            norm.weight.fill_(math.sqrt(1 + norm.eps))
            norm.bias.copy_(torch.tensor(bias))
        model.head.weight.copy_(torch.tensor(arrays["head.weight"]))
        model.head.bias.copy_(torch.tensor(arrays["head.bias"]))
        inputs: dict[nn.Module, torch.Tensor] = {}

        def keep(norm, args):
            inputs[norm] = args[0].double()

        hooks = [norm.register_forward_pre_hook(keep) for _, norm in pairs]
        model.eval()
        model(torch.as_tensor(images).float().div(255).unsqueeze(1))
        for hook in hooks:
            hook.remove()
        for _, norm in pairs:
            seen = inputs[norm]
            mean, var = seen.mean(dim=(0, 2, 3)), seen.var(dim=(0, 2, 3))
            norm.bias.add_(mean.float())
            norm.running_mean.copy_(mean.float())
            norm.running_var.copy_(var.float())
            norm.weight.copy_((var + norm.eps).sqrt().float())


def evaluate(model, x, y, device, batch: int = 1024) -> dict[str, float]:
    """Accuracy and mean class accuracy with horizontal-flip averaging."""
    import torch

    model.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = torch.as_tensor(x[start : start + batch], device=device)
            chunk = chunk.float().div(255).unsqueeze(1)
            logits = model(chunk)[0].float().softmax(1) + model(chunk.flip(3))[0].float().softmax(1)
            preds.append(logits.argmax(1).cpu().numpy())
    pred = np.concatenate(preds)
    recalls = [float((pred[y == k] == k).mean()) for k in range(len(EMOTIONS)) if (y == k).any()]
    return {"accuracy": float((pred == y).mean()), "uar": float(np.mean(recalls)), "n": len(y)}


def train(data: dict[str, dict[str, np.ndarray]], args) -> tuple[object, dict]:
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    model = build_model(args.width)
    if args.init:
        load_exported(model, args.init, data["train"]["x"][:2048])
    model = model.to(device).to(memory_format=torch.channels_last)
    train_x = torch.as_tensor(data["train"]["x"][: args.limit], device=device)
    targets = training_targets(data["train"], args.targets)[: args.limit]
    train_soft = torch.as_tensor(targets, device=device)
    class_weights = torch.as_tensor(balancing_weights(targets, args.class_weight), device=device)
    steps_per_epoch = math.ceil(len(train_x) / args.batch)
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(0.03 * total))
    optimiser = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 1.0
            if args.swa
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        ),
    )
    averaged = torch.optim.swa_utils.AveragedModel(model) if args.swa else None
    half = device.type == "cuda" or args.cpu_bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=half)
    history = []
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), device=device, generator=generator)
        running = 0.0
        for step in range(steps_per_epoch):
            index = order[step * args.batch : (step + 1) * args.batch]
            x = training_batch(train_x[index], generator, args.transfer)
            with autocast:
                logits = model(x)[0]
            per_class = -(train_soft[index] * logits.float().log_softmax(1))
            loss = (per_class * class_weights).sum(1).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.item()
        if averaged is not None:
            averaged.update_parameters(model)
            draws = (
                torch.randint(0, len(train_x), (args.batch,), device=device, generator=generator)
                for _ in range(40)
            )  # batch-norm statistics of the average, over 40 augmented training batches
            torch.optim.swa_utils.update_bn(
                (training_batch(train_x[i], generator, args.transfer) for i in draws),
                averaged.module,
            )
        entry = {
            "epoch": epoch + 1,
            "loss": running / steps_per_epoch,
            "seconds": time.perf_counter() - started,
        }
        if "valid" in data and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
            valid = data["valid"]["x"], data["valid"]["y"], device
            entry["valid"] = evaluate(model, *valid)
            if averaged is not None:
                entry["valid_averaged"] = evaluate(averaged.module, *valid)
        history.append(entry)
        print(json.dumps(entry), flush=True)
    summary = {
        "device": str(device),
        "train_faces": len(train_x),
        "epochs": args.epochs,
        "seconds": time.perf_counter() - started,
        "history": history,
    }
    if averaged is not None:
        model = averaged.module
    if "test" in data:
        summary["test"] = evaluate(model, data["test"]["x"], data["test"]["y"], device)
    return model.cpu().float().eval(), summary


def export_onnx(model, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 48, 48),),
        str(path),
        input_names=["image"],
        output_names=["logits", "features"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=f"ferplus:{SHARED / 'data' / 'ferplus'}")
    parser.add_argument("--pack", type=Path, help="write a compact train+valid pack and stop")
    parser.add_argument("--packed", type=Path, help="train from a pack instead of --data")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--limit", type=int, help="first N training faces (smoke runs)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--targets",
        choices=["soft", "hard"],
        default="soft",
        help="the vote distributions (default) or the majority labels as training targets",
    )
    parser.add_argument(
        "--class-weight",
        type=float,
        default=0.0,
        help="weigh each class's loss by its share of the targets to the power -X (0: none)",
    )
    parser.add_argument(
        "--transfer", action="store_true", help="wider affine, blur, gamma and an occluder"
    )
    parser.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="bf16 autocast on the CPU too (fast with AMX or AVX-512 BF16; ~8x slower elsewhere)",
    )
    parser.add_argument(
        "--init", type=Path, help="start from an exported encoder (ONNX) instead of at random"
    )
    parser.add_argument(
        "--swa",
        action="store_true",
        help="constant learning rate after warm-up; keep the average of the epochs' weights",
    )
    parser.add_argument(
        "--train-on",
        choices=["train", "train+valid"],
        default="train",
        help="FER+ Train alone (Valid monitors) or Train and Valid together (nothing monitors)",
    )
    parser.add_argument("--name", default="nano_encoder", help="file stem of the outputs")
    parser.add_argument("--out", type=Path, default=REPO / "engine" / "weights")
    args = parser.parse_args()
    if args.pack:
        write_pack(args.pack, args.data, ("train", "valid"))
        return
    if args.packed:
        data = read_pack(args.packed)
    else:
        data = {split: load_split(args.data, split) for split in ("train", "valid", "test")}
    if args.train_on == "train+valid":
        valid = data.pop("valid")  # trained on: not monitored
        data["train"] = joined_splits(data["train"], valid)
    model, summary = train(data, args)
    summary["config"] = {k: str(v) for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}_training.json").write_text(json.dumps(summary, indent=1))
    import torch

    torch.save(model.state_dict(), args.out / f"{args.name}.pt")  # kept if the export fails
    export_onnx(model, args.out / f"{args.name}.onnx")
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
