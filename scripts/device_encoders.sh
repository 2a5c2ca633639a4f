#!/usr/bin/env bash
# One GPU call (issue 13): prior partners for the nano ExpLLM's planned reading
# (`prior_classifiers` in expllm_model.json), each 80 epochs from scratch on the FER+ pack
# (~3 min each on one H100/H200): a width-48 encoder with another seed, one trained with the
# `--transfer` augmentation, and the first one's recipe on FER+ Train + Valid (the final model
# where that recipe wins on Valid; Test only). The three ONNX files and a tar of the figures
# and logs land in $OUT (4 files: a call brings back at most 8, 16 MiB each). Then, here:
#   python benchmarks/prior_ensemble.py --partners DIR/nano_encoder_seed1.onnx ...
#
#   python scripts/train_nano_encoder.py --pack .work/ferplus_trainvalid.xz   # here, once
#   (or `make device-prep`, which also builds what scripts/device_expllm.sh carries)
#   device: run bash scripts/device_encoders.sh, carry .work/ferplus_trainvalid.xz
# The pack (FER+ Train + Valid, faces coded losslessly by scripts/_packs.py) is 45.1 MB: with
# the ~19.5 MB tree it fits the 64 MiB a call sends (`python scripts/device_payload.py --split
# FILE` says how many calls a larger one needs).
set -euo pipefail
OUT=${OUT:-runs/device-encoders}
PACK=${PACK:-.work/ferplus_trainvalid.xz}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/device-encoders}
export PYTHONUNBUFFERED=1
EXTRA=("$@")  # passed on to every run (a CPU smoke run: --epochs 1 --limit 256)
mkdir -p "$OUT" "$WORK"
train() {
    local name=$1
    shift
    "$PYTHON" scripts/train_nano_encoder.py --packed "$PACK" --width 48 --name "$name" \
        --out "$WORK" "$@" "${EXTRA[@]}" 2>&1 | tee "$WORK/$name.log"
    cp "$WORK/$name.onnx" "$OUT/"
}
train nano_encoder_seed1 --epochs 80 --seed 1
train nano_encoder_transfer --epochs 80 --transfer
train nano_encoder_seed1_tv --epochs 80 --seed 1 --train-on train+valid
tar -cf "$OUT/figures_and_logs.tar" -C "$WORK" --exclude '*.pt' --exclude '*.onnx' .
