"""Calibrate a model's detection threshold on healthy brains: how far does its free healing pass
depart from a brain that has nothing to heal?

Detection (``USB.heal`` without a mask) calls a voxel lesion when the anomaly map exceeds
``SamplingConfig.detect_threshold``. A threshold below what healthy brains reach rewrites healthy
anatomy, so it is set from healthy brains of the model's training distribution (usb_model.synth,
seed 0, items from 5,000,000 on: never drawn in training), as the highest 99.99th percentile of
the anomaly map in the brain, rounded up; the same brains with a lesion drawn in show whether
lesions stand out above that (median anomaly inside the lesion).

    python benchmarks/detection_calibration.py --model DIR [--n 8]

Writes benchmarks/results/detection-calibration.json (or ``--out``); put the suggested threshold in the model's
config.json (``sampling.detect_threshold``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, read_meta  # noqa: E402
from usb_model.fill import brain_region  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.tasks import USB  # noqa: E402

FIRST_ITEM = 5_000_000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detection-calibration.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    usb = USB.from_checkpoint(args.model)
    data = TripletDataset(usb.cfg.grid, FIRST_ITEM + args.n, 0, healthy_fraction=0.0, contrast=usb.cfg.grid.contrast)
    rows, clock = [], time.perf_counter()
    for i in range(args.n):
        item = data[FIRST_ITEM + i]
        mask = item["mask"][0].numpy() > 0
        row = {"item": FIRST_ITEM + i, "lesion_ml": float(mask.sum() * np.prod(usb.cfg.grid.voxel_size) / 1000)}
        for kind in ("healthy", "lesioned"):
            image = item[kind][0].numpy()
            anomaly = usb.heal(image, seed=i, detect_threshold=math.inf).anomaly.numpy()
            brain = brain_region(image)
            if kind == "healthy":
                row.update({f"healthy_p{q}": float(np.percentile(anomaly[brain], q)) for q in (99, 99.9, 99.99)})
            else:
                row["lesion_median"] = float(np.median(anomaly[mask])) if mask.any() else 0.0
        rows.append(row)
        print(row, flush=True)
    top = max(r["healthy_p99.99"] for r in rows)
    result = {
        "model": str(args.model),
        "trained_steps": read_meta(checkpoint_directory(args.model)).get("notes", {}).get("trained_steps"),
        "n": args.n,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "detect_t_start": usb.cfg.sampling.detect_t_start,
        "healthy_max_p99.99": top,
        "suggested_threshold": math.ceil(top * 10) / 10,
        "lesions_above_suggestion": sum(r["lesion_median"] > math.ceil(top * 10) / 10 for r in rows),
        "cases": rows,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(
        f"healthy brains reach {top:.3f}; suggested detect_threshold {result['suggested_threshold']}; "
        f"{result['lesions_above_suggestion']} of {args.n} lesions stand out above it"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
