#!/usr/bin/env bash
# The next demo model (the f2c4 autoencoder, 32^3 x 4 latents) trained on a lent GPU in one device
# call of under 10 minutes, then measured: autoencoder reconstruction and generation MMD/KID.
#
# Why one script: a session has 15 minutes of device time in all, so install, the three stages
# under wall-clock budgets and the benchmarks go in one command. Each stage runs under `timeout`;
# usb-train saves every 200 steps and resumes exactly, so a stage cut by its budget loses at most
# 200 steps and the next stage starts from the steps actually saved.
#
# Here, first:   bash scripts/device_wheels.sh      (monai, nibabel, nilearn as wheels in .whl/)
# Then:          device run  command="bash scripts/device_train_demo.sh"  carry=[".whl"]  timeout_s=600
# Back in $OUT:  run.log, log.tsv, autoencoder.json, generation-cuda.json, generation.png and the
#                model directory as model.tar.part-aa, -ab (tar split under 16 MB per file):
#                cat model.tar.part-* | tar x  ->  checkpoint/  (then scripts/bundle_demo_model.py).
# Budgets (seconds) and inputs can be changed: AE_S, LESION_S, BRAIN_S, PRESET, INIT, SAVE; the
# benchmarks' sizes: AE_N, GEN_N, GEN_STEPS.
set -uo pipefail
PRESET=${PRESET:-benchmarks/configs/demo_f2c4.json}
INIT=${INIT-benchmarks/checkpoints/ae_f2c4_whole.safetensors}  # empty: train the autoencoder from scratch
AE_S=${AE_S:-90}
LESION_S=${LESION_S:-150}
BRAIN_S=${BRAIN_S:-180}
OUT=${OUT:-/tmp/usb_device_out}
WORK=${WORK:-/tmp/usb_demo}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv
DEVICE=${DEVICE:-auto}

progress() {  # the steps of stage $1 in the last save (0 before the first save)
    python3 -c "
from pathlib import Path
from usb_model.checkpoint import load_state
state = Path('$WORK/state')
print(load_state(state, 'trainer')['progress'].get('$1', 0) if (state / 'trainer.safetensors').is_file() else 0)"
}

train() {  # budget_seconds steps
    echo "== $(date +%T) usb-train --steps $2 (at most $1 s)"
    timeout --signal=TERM "$1" python3 -m usb_model.train.cli "$WORK" --preset "$PRESET" ${INIT:+--init-autoencoder "$INIT"} \
        --device "$DEVICE" --steps "$2" --save-every "${SAVE:-200}" --log-every 50
    local rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ]; then echo "usb-train failed ($rc)"; exit $rc; fi
}

train "$AE_S" autoencoder=100000
A=$(progress autoencoder)
train "$LESION_S" "autoencoder=$A,lesion=100000"
L=$(progress lesion)
train "$BRAIN_S" "autoencoder=$A,lesion=$L,brain=100000"
B=$(progress brain)
echo "== reached autoencoder=$A lesion=$L brain=$B"
cp "$WORK/log.tsv" "$OUT/"

python3 benchmarks/autoencoder.py --model "$WORK" --n "${AE_N:-8}" --out "$OUT/autoencoder.json"
python3 benchmarks/generation.py --model "$WORK" --n "${GEN_N:-16}" ${GEN_STEPS:+--steps "$GEN_STEPS"} --device "$DEVICE" \
    --out "$OUT/generation-cuda.json" --figure "$OUT/generation.png"
tar cf - -C "$WORK" checkpoint | split -b 15M - "$OUT/model.tar.part-"
ls -l "$OUT"
