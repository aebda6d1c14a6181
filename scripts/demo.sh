#!/usr/bin/env bash
# The quickstart: from a fresh clone, set up a virtual environment, make a small synthetic BIDS
# dataset with lesions (usb-synth-dataset), heal it with the bundled demo model, and print the
# path of the first HTML report. Needs Python 3.10+ and pip only; everything stays in ./demo
# and ./.venv. Run again to reuse both.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"   # CPU build; see README for GPUs
python -m pip install --quiet -e ".[app]"

mkdir -p demo
if [ ! -f demo/bids/dataset_description.json ]; then
    usb-synth-dataset demo/bids --participants 2 --n-healthy 0 --seed 0 --voxel-size 1.2
fi
# stdout: the paths of the reports; progress and errors go to the terminal.
bids_usb demo/bids demo/derivatives/bids_usb participant -w demo/work --nprocs 2 | tee demo/reports.txt
echo "Open this report in a browser: $(head -n 1 demo/reports.txt)"
