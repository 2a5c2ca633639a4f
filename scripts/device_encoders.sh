#!/usr/bin/env bash
# One GPU call (issue 13): two prior partners for the nano ExpLLM's planned reading
# (`prior_classifiers` in expllm_model.json), each 80 epochs from scratch on the FER+ pack
# (~3 min each on one H100/H200): a width-48 encoder with another seed, one trained with the
# `--transfer` augmentation, and the first one's recipe on FER+ Train + Valid (the final model
# where that recipe wins on Valid; Test only). Weights, figures and logs land in $OUT (12
# files). Then, here:
#   python benchmarks/prior_ensemble.py --partners DIR/nano_encoder_seed1.onnx ...
#
#   python scripts/train_nano_encoder.py --pack .work/ferplus_trainvalid.xz   # here, once
#   device: run bash scripts/device_encoders.sh, carry .work/ferplus_trainvalid.xz
set -euo pipefail
OUT=${OUT:-runs/device-encoders}
PACK=${PACK:-.work/ferplus_trainvalid.xz}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
"$PYTHON" scripts/train_nano_encoder.py --packed "$PACK" --width 48 --epochs 80 --seed 1 \
    --name nano_encoder_seed1 --out "$OUT" 2>&1 | tee "$OUT/seed1.log"
"$PYTHON" scripts/train_nano_encoder.py --packed "$PACK" --width 48 --epochs 80 --transfer \
    --name nano_encoder_transfer --out "$OUT" 2>&1 | tee "$OUT/transfer.log"
"$PYTHON" scripts/train_nano_encoder.py --packed "$PACK" --width 48 --epochs 80 --seed 1 \
    --train-on train+valid --name nano_encoder_seed1_tv --out "$OUT" 2>&1 | tee "$OUT/seed1_tv.log"
