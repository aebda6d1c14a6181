#!/usr/bin/env bash
# The Python packages the lent GPU machine lacks, as wheels for its Python 3.12, into .whl/
# (git-ignored; carried by the device call). Everything else usb_model needs (torch, numpy,
# scipy, safetensors, einops, click, torchmetrics, matplotlib, scikit-learn, pandas) is in the
# device's image (see the device tool's KINDS.md). Versions: the ones this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "monai==1.6.1" "nibabel==5.4.2" "nilearn==0.14.1"
ls -l .whl
