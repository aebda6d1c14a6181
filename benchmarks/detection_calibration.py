"""Calibrate a model's detection on healthy brains: how far does its free healing pass depart from
a brain that has nothing to heal, and how much of a lesion stands out above that?

Detection (``USB.heal`` without a mask) calls a voxel lesion when the anomaly map exceeds
``SamplingConfig.detect_threshold``. A threshold below what healthy brains reach rewrites healthy
anatomy, so it is set from healthy brains of the model's training distribution (usb_model.synth,
seed 0, items from 5,000,000 on: never drawn in training), as the lowest threshold at which none
of them shows a lesion (a component of ``detect_min_ml`` or more: ``clear_threshold``), plus 10 %,
rounded up to 0.01. Until 2026-12-06 it was the highest 99.99th percentile of the map in the brain, rounded up
to 0.1: a handful of voxels, which the minimum volume drops anyway, so it was set higher than a
healthy brain needs; both are recorded. The same brains with a lesion drawn in show whether
lesions stand out above it (median anomaly inside the lesion) and what detection at that
threshold finds (Dice with the lesion, by lesion size: under 1 ml, 1-5 ml, 5 ml and more).

``--t-starts`` and ``--samples`` sweep the free pass (issue 22, item 4): a later start departs
further from healthy and lesioned brains alike, and averaging samples quiets the healthy
departure (random) more than the lesion's (systematic). Each setting gets its own threshold from
the same healthy brains. ``--size lo,hi`` draws the lesions' volumes (ml, log-uniform) instead
of the training mix (and no WMH-like spots, which have a size of their own), e.g. ``5,60`` for
the issue's >= 5 ml target.

    python benchmarks/detection_calibration.py --model DIR [--n 8] [--t-starts 200,400] [--samples 1,4]

Writes benchmarks/results/detection-calibration.json (or ``--out``); put the chosen setting's
threshold in the model's config.json (``sampling.detect_threshold``, ``detect_t_start``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256, read_meta  # noqa: E402
from usb_model.detection import POLARITIES, detect_lesions  # noqa: E402
from usb_model.fill import brain_region  # noqa: E402
from usb_model.metrics import dice  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.tasks import USB  # noqa: E402

FIRST_ITEM = 5_000_000
#: Lesion size bins (ml) for the Dice of detection, the issue's: small, 1-5 ml, >= 5 ml.
SIZE_BINS = {"under_1ml": (0.0, 1.0), "1_to_5ml": (1.0, 5.0), "5ml_plus": (5.0, math.inf)}


#: The threshold's margin over the healthy brains' highest clear threshold, for brains not in the
#: calibration set (a handful of brains: the controls of benchmarks/healing.py check it end to end).
MARGIN = 1.1


def threshold_for(healthy_clear: float) -> float:
    """The detection threshold healthy brains imply: the highest at which one of them still shows a
    lesion, with a 10 % margin, rounded up to 0.01."""
    return math.ceil(round(healthy_clear * MARGIN * 100, 6)) / 100


def held_out_items(grid, n: int, size="any") -> list[dict]:
    """``n`` triplets (healthy brain, the same with a lesion, its mask) never drawn in training;
    ``size`` (lo, hi ml) draws every lesion at that size, without the WMH-like spots of their own size."""
    data = TripletDataset(
        grid,
        FIRST_ITEM + n,
        0,
        healthy_fraction=0.0,
        contrast=grid.contrast,
        size=size,
        wmh_fraction=0.25 if size == "any" else 0.0,
    )
    return [data[FIRST_ITEM + i] for i in range(n)]


def clear_threshold(anomaly: np.ndarray, min_ml: float, voxel, tol: float = 0.002) -> float:
    """The lowest threshold at which detection finds nothing in a healthy brain's anomaly map.

    Detection drops components under ``min_ml``, so the map's extreme voxels (its 99.99th
    percentile, a handful of voxels) do not decide whether a healthy brain comes back unchanged:
    the largest connected excursion does. Bisection, since a higher threshold only shrinks the
    components above it."""
    lo, hi = 0.0, float(anomaly.max())
    if not detect_lesions(anomaly, lo, min_ml, voxel).any():
        return 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if detect_lesions(anomaly, mid, min_ml, voxel).any():
            lo = mid
        else:
            hi = mid
    return hi


def dice_by_size(rows: list[dict], key: str = "dice") -> dict:
    """Mean Dice (``key`` of each row) per lesion size bin."""
    by_size = {}
    for name, (lo, hi) in SIZE_BINS.items():
        scores = [r[key] for r in rows if lo <= r["lesion_ml"] < hi]
        by_size[name] = {"n": len(scores), "mean_dice": float(np.mean(scores)) if scores else None}
    return by_size


def summarise(rows: list[dict], t_start: int, samples: int, also: tuple[float, ...] = ()) -> dict:
    """One setting's threshold, and what detection at it finds in the lesioned brains; ``also``:
    other thresholds to score the same maps at (one chosen elsewhere, e.g. on real healthy heads
    by benchmarks/detection_controls.py)."""
    top = max(r["healthy_p99.99"] for r in rows)
    clear = max(r["healthy_clear"] for r in rows)
    threshold = threshold_for(clear)
    for r in rows:
        detected = r.pop("_anomaly_detected")
        r["dice"] = dice(detected(threshold), r["_mask"])
        for th in also:
            r[f"dice_at_{th:g}"] = dice(detected(th), r["_mask"])
        r.pop("_mask")
    by_size = dice_by_size(rows)
    return {
        "detect_t_start": t_start,
        "samples": samples,
        "healthy_max_p99.99": top,
        "healthy_max_clear": clear,
        "suggested_threshold": threshold,
        "lesions_above_suggestion": sum(r["lesion_median"] > threshold for r in rows),
        "dice_by_size": by_size,
        "dice_by_size_at": {f"{th:g}": dice_by_size(rows, f"dice_at_{th:g}") for th in also},
        "cases": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--t-starts", default=None, help="comma-separated free-pass starts (default: the model's)")
    parser.add_argument("--samples", default="1", help="comma-separated sample counts averaged per pass")
    parser.add_argument("--size", default=None, help="lo,hi: lesion volumes (ml) to draw instead of the training mix")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detection-calibration.json")
    parser.add_argument("--polarity", choices=POLARITIES, default=None, help="the anomaly map's (default: the model's)")
    parser.add_argument("--sigma", type=float, default=None, help="its smoothing in voxels (default: the model's)")
    parser.add_argument(
        "--also-thresholds", default="", help="comma-separated thresholds to score Dice at besides the suggested one"
    )
    args = parser.parse_args(argv)
    also = tuple(float(v) for v in args.also_thresholds.split(",") if v)
    torch.set_num_threads(args.threads)
    usb = USB.from_checkpoint(args.model)
    overrides = {
        k: v for k, v in (("detect_polarity", args.polarity), ("detect_sigma_vox", args.sigma)) if v is not None
    }
    usb.cfg = dataclasses.replace(usb.cfg, sampling=dataclasses.replace(usb.cfg.sampling, **overrides))
    s = usb.cfg.sampling
    t_starts = [int(t) for t in args.t_starts.split(",")] if args.t_starts else [s.detect_t_start]
    sample_counts = [int(n) for n in args.samples.split(",")]
    size = tuple(float(v) for v in args.size.split(",")) if args.size else "any"
    voxel = usb.cfg.grid.voxel_size
    items = held_out_items(usb.cfg.grid, args.n, size)
    settings, clock = [], time.perf_counter()
    for t_start in t_starts:
        for samples in sample_counts:
            rows = []
            for i, item in enumerate(items):
                mask = item["mask"][0].numpy() > 0
                row = {"item": FIRST_ITEM + i, "lesion_ml": float(mask.sum() * np.prod(voxel) / 1000), "_mask": mask}
                for kind in ("healthy", "lesioned"):
                    image = item[kind][0].numpy()
                    anomaly = usb.heal(
                        image, seed=i, n_samples=samples, detect_t_start=t_start, detect_threshold=math.inf
                    ).anomaly.numpy()
                    if kind == "healthy":
                        brain = brain_region(image)
                        row.update(
                            {f"healthy_p{q}": float(np.percentile(anomaly[brain], q)) for q in (99, 99.9, 99.99)}
                        )
                        row["healthy_clear"] = clear_threshold(anomaly, s.detect_min_ml, voxel)
                    else:
                        row["lesion_median"] = float(np.median(anomaly[mask])) if mask.any() else 0.0
                        row["_anomaly_detected"] = lambda th, a=anomaly: detect_lesions(a, th, s.detect_min_ml, voxel)
                rows.append(row)
                print(
                    {k: v for k, v in row.items() if not k.startswith("_")} | {"t_start": t_start, "samples": samples},
                    flush=True,
                )
            settings.append(summarise(rows, t_start, samples, also))
            last = settings[-1]
            print(
                f"t_start {t_start}, {samples} sample(s): healthy brains reach {last['healthy_max_p99.99']:.3f} "
                f"(clear above {last['healthy_max_clear']:.3f}); "
                f"threshold {last['suggested_threshold']}; Dice by size {last['dice_by_size']}",
                flush=True,
            )
    first = settings[0]
    result = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(checkpoint_directory(args.model)),
        "trained_steps": read_meta(checkpoint_directory(args.model)).get("notes", {}).get("trained_steps"),
        "n": args.n,
        "size": args.size or "training mix",
        "detect_polarity": s.detect_polarity,
        "detect_sigma_vox": s.detect_sigma_vox,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "command": "python benchmarks/detection_calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        # The first setting's numbers at the top, as the report reads them.
        **{
            k: first[k]
            for k in ("detect_t_start", "healthy_max_p99.99", "suggested_threshold", "lesions_above_suggestion")
        },
        "cases": first["cases"],
        "settings": settings,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(
        f"healthy brains reach {first['healthy_max_p99.99']:.3f}; suggested detect_threshold "
        f"{first['suggested_threshold']}; {first['lesions_above_suggestion']} of {args.n} lesions stand out above it"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
