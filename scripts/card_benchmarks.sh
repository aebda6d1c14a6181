#!/usr/bin/env bash
# Every benchmark the model card reads, run on a candidate model before it is bundled (issue 22,
# item 6): the card shows only results measured on the bundled weights' sha256, so a new model
# (new weights: a fine-tune, an adopted autoencoder) arrives with none until these have run.
#
#   bash scripts/card_benchmarks.sh MODEL TAG [PART ...]
#
# MODEL: a checkpoint directory (e.g. usb_model.train.adopt's OUT/checkpoint); TAG names the
# results (benchmarks/results/<benchmark>-TAG*.json). PARTs, in this order by default:
#   autoencoder  held-out reconstruction, 8 brains (the issue's target) and 24        ~3 min
#   embed        embedding on the model grid (quality.py --embed-only, 8 brains)     ~10 min
#   generation   generate_pairs from noise, 16 samples, and the card's figure        ~10 min
#   lesion-from  --lesion-from generate, 4 seeds                                      ~5 min
#   calibrate    the detection threshold from healthy synthetic brains, then from   ~30 min
#                real healthy heads (detection_controls); the higher of the two (the
#                calibration's rule) goes into MODEL's config.json (sampling only: the
#                weights, and so the sha256 every result names, stay as they are)
#   heal-head    Colin 27's whole head, every class and a healthy control, with mask-free
#                detection and the step sweep, native 1 mm                             ~45 min
#   heal-masks   Colin 27's head with masks 1 mm short, on a 2 mm grid, 1 mm large   ~25 min
#   heal-template  brains synthesised from the template, each mask kind              ~35 min
# Times are for 2 CPU threads with nothing else running; stop the campaign's trainer first (it
# would halve both). A part whose results file exists is skipped, so an interrupted run
# resumes with the same command. Then bundle: python scripts/bundle_demo_model.py OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { echo "usage: bash scripts/card_benchmarks.sh MODEL TAG [PART ...]" >&2; exit 64; }
model=$1
tag=$2
shift 2
[ -f "$model/model.safetensors" ] || { echo "$model: not a checkpoint directory (no model.safetensors)" >&2; exit 66; }
parts=${*:-autoencoder embed generation lesion-from calibrate heal-head heal-masks heal-template}
results=benchmarks/results
work=scratch/card-$tag
mkdir -p "$work"

fresh() {  # true when the part's results file is still to be made
	if [ -f "$results/$1" ]; then
		echo "$1 exists: skipped" >&2
		return 1
	fi
	echo "== $1 ($(date -u +%H:%M))" >&2
}

heal() {  # heal RESULTS ARGS...: the healing benchmark on MODEL, in a work directory of its own
	local name=$1
	shift
	if fresh "$name"; then
		python benchmarks/healing.py --model "$model" --cases-per-class 1 --methods usb_mask --nprocs 2 --grids iso1 \
			--work "$work/${name%.json}" --results "$name" "$@"
	fi
}

for part in $parts; do
	case $part in
	autoencoder)
		for n in 8 24; do
			if fresh "autoencoder-$tag-n$n.json"; then
				python benchmarks/autoencoder.py --model "$model" --n "$n" --latent-reference resources/models/demo \
					--out "$results/autoencoder-$tag-n$n.json"
			fi
		done
		;;
	embed)
		if fresh "quality-embed-$tag.json"; then
			python benchmarks/quality.py --model "$model" --n 8 --embed-only --threads 2 --out "$results/quality-embed-$tag.json" \
				--figure "docs/figures/quality-embed-$tag.png"
		fi
		;;
	generation)
		if fresh "generation-$tag.json"; then
			python benchmarks/generation.py --model "$model" --n 16 --threads 2 --out "$results/generation-$tag.json" \
				--figure "docs/figures/generation-$tag.png"
		fi
		;;
	lesion-from)
		if fresh "lesion-from-generate-$tag.json"; then
			python benchmarks/lesion_from_generate.py --model "$model" --n 4 --threads 2 \
				--out "$results/lesion-from-generate-$tag.json"
		fi
		;;
	calibrate)
		if fresh "detection-calibration-$tag.json"; then
			python benchmarks/detection_calibration.py --model "$model" --n 4 --size 5,60 --threads 2 \
				--out "$results/detection-calibration-$tag.json"
		fi
		if fresh "detection-controls-$tag.json"; then
			python benchmarks/detection_controls.py --model "$model" --nprocs 2 --work "$work/controls" \
				--out "$results/detection-controls-$tag.json"
		fi
		python - "$model" "$results/detection-calibration-$tag.json" "$results/detection-controls-$tag.json" <<'EOF'
import json
import sys
from pathlib import Path

from usb_model.atomic import write_text

model, calibration, controls = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
synthetic = json.loads(Path(calibration).read_text())["suggested_threshold"]
heads = json.loads(Path(controls).read_text())["threshold_from_calibration_heads"]
config = json.loads((model / "config.json").read_text())
threshold = max(synthetic, heads)
print(f"detect_threshold {config['sampling']['detect_threshold']} -> {threshold} (synthetic {synthetic}, heads {heads})")
config["sampling"]["detect_threshold"] = threshold
write_text(model / "config.json", json.dumps(config, indent=2) + "\n")
EOF
		;;
	heal-head)
		heal "healing-colinhead-detect-$tag.json" --anatomy colin-head \
			--classes subtle,wmh,lacune,infarct,territorial,control
		;;
	heal-masks)
		for mask in short1 grid2 large1; do
			heal "healing-colinhead-$mask-$tag.json" --anatomy colin-head --mask "$mask" --no-detect --no-sweep \
				--classes subtle,wmh,lacune,infarct,territorial
		done
		;;
	heal-template)
		for mask in exact short1 grid2 large1; do
			heal "healing-template-$mask-$tag.json" --mask "$mask" --no-detect --no-sweep \
				--classes subtle,wmh,lacune,infarct,territorial
		done
		;;
	*)
		echo "unknown part $part" >&2
		exit 64
		;;
	esac
done
