"""Does a per-voxel healthy norm let detection separate lesions that one threshold cannot?

Detection (``usb_model.detection``) applies one threshold to the whole anomaly map. Healthy
brains depart from their free healing pass most in a few places (the cortex's edge, the
ventricles), so the threshold that keeps every healthy brain clean sits above the departure of
lesions elsewhere: on the bundled model, lesion medians of 0.06-0.15 against healthy brains that
clear only at 0.11, and real heads at 0.16 (detection-calibration-bundled-brighter15.json,
detection-controls.json). Because every participant is registered to the model grid, where a
healthy brain departs is a property of the template space, and can be subtracted.

The norm is made from healthy brains of the training distribution that neither the calibration
nor the scoring sees (usb_model.synth, items from 5,100,000), one free pass each, exactly as the
app runs it (``USB.heal`` without a mask). Each variant turns a brain's map ``A`` into a normed map:

- ``none``: ``A`` (the app's map);
- ``sub_max``: ``A`` minus the norm brains' per-voxel maximum, smoothed by ``--norm-sigma`` voxels;
- ``sub_mean2sd``: ``A`` minus their per-voxel mean plus two standard deviations, smoothed;
- ``z``: ``(A - mean) / sd``, with the smoothed sd floored at its median in the brain (a few
  norm brains give noisy per-voxel spreads).

Each variant's threshold is set as ``detection_calibration.py`` sets the app's (the lowest at
which no healthy brain shows a component of ``detect_min_ml`` or more, plus 10 %) on held-out
healthy brains and, with ``--heads``, on the real calibration head (ROBEX's reference); Colin 27's
head is scored at that threshold, never used to choose it. Dice with the lesion by size: lesions
drawn at 5-60 ml and at 1-5 ml into the same held-out brains.

    python benchmarks/detection_norm.py --model resources/models/demo --n-norm 12 --n 6 \\
        --heads scratch/detection-controls/work --out benchmarks/results/detection-norm.json

``--heads``: a work directory of ``benchmarks/detection_controls.py``; each head's model-grid
anomaly map, the one the app thresholded, is read from it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.detection_calibration import (  # noqa: E402
    FIRST_ITEM,
    clear_threshold,
    dice_by_size,
    held_out_items,
    threshold_for,
)
from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256  # noqa: E402
from usb_model.detection import detect_lesions  # noqa: E402
from usb_model.fill import brain_region  # noqa: E402
from usb_model.metrics import dice  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.tasks import USB  # noqa: E402

#: The norm's brains: never drawn in training (items below 5,000,000) nor by the calibration
#: (``FIRST_ITEM`` on, a few dozen).
NORM_FIRST = FIRST_ITEM + 100_000
VARIANTS = ("none", "sub_max", "sub_mean2sd", "z")
CALIBRATION_HEADS = ("robex",)
EVALUATION_HEADS = ("colin",)


def free_map(usb: USB, image: np.ndarray, seed: int, cache: Path | None = None, key: str = "") -> np.ndarray:
    """The app's anomaly map of ``image`` (one free pass, nothing detected); kept in ``cache`` as
    ``key``.npy when given, so that a rerun (other variants, a crash) reuses the passes."""
    path = cache / f"{key}.npy" if cache is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    anomaly = usb.heal(image, seed=seed, detect_threshold=math.inf).anomaly.numpy().astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, anomaly)
    return anomaly


def build_norm(maps: list[np.ndarray], brains: list[np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    """Per-voxel statistics of the norm brains' maps, smoothed by ``sigma`` voxels (the brains
    differ in shape, so a voxel's few samples stand for its neighbourhood)."""
    stack = np.stack(maps)
    inside = np.stack(brains).any(axis=0)
    mean, sd, top = stack.mean(axis=0), stack.std(axis=0), stack.max(axis=0)

    def smooth(volume):
        return ndimage.gaussian_filter(volume, sigma) if sigma > 0 else volume

    sd_s = smooth(sd)
    floor = float(np.median(sd_s[inside])) if inside.any() else 1e-3
    return {"mean": smooth(mean), "mean2sd": smooth(mean + 2 * sd), "max": smooth(top), "sd": np.maximum(sd_s, floor)}


def normed(anomaly: np.ndarray, norm: dict[str, np.ndarray], variant: str) -> np.ndarray:
    """``anomaly`` under a variant; zero where the map is (outside the brain)."""
    inside = anomaly > 0
    if variant == "none":
        out = anomaly
    elif variant == "sub_max":
        out = np.maximum(anomaly - norm["max"], 0.0)
    elif variant == "sub_mean2sd":
        out = np.maximum(anomaly - norm["mean2sd"], 0.0)
    elif variant == "z":
        out = np.maximum((anomaly - norm["mean"]) / norm["sd"], 0.0)
    else:
        raise ValueError(variant)
    return (out * inside).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n-norm", type=int, default=12, help="healthy brains the norm is made of")
    parser.add_argument("--n", type=int, default=6, help="held-out brains (healthy, and with a lesion of each size)")
    parser.add_argument("--norm-sigma", type=float, default=1.5, help="smoothing of the norm, voxels")
    parser.add_argument("--heads", type=Path, default=None, help="a benchmarks/detection_controls.py work directory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="keep each free pass's map here (reused by a rerun)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detection-norm.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter()
    usb = USB.from_checkpoint(args.model)
    grid, s = usb.cfg.grid, usb.cfg.sampling
    voxel = grid.voxel_size

    norm_data = TripletDataset(grid, NORM_FIRST + args.n_norm, 0, healthy_fraction=0.0, contrast=grid.contrast)
    maps, brains = [], []
    for i in range(args.n_norm):
        image = norm_data[NORM_FIRST + i]["healthy"][0].numpy()
        maps.append(free_map(usb, image, seed=i, cache=args.cache, key=f"norm{NORM_FIRST + i}"))
        brains.append(brain_region(image))
        print(f"norm brain {i + 1}/{args.n_norm}: p99.9 {np.percentile(maps[-1][brains[-1]], 99.9):.3f}", flush=True)
    norm = build_norm(maps, brains, args.norm_sigma)

    healthy, lesioned = [], []  # (item, map); (item, lesion ml, mask, map)
    for size in ((5.0, 60.0), (1.0, 5.0)):
        for i, item in enumerate(held_out_items(grid, args.n, size)):
            if size[0] == 5.0:  # the same healthy brains under either size
                healthy.append(
                    (FIRST_ITEM + i, free_map(usb, item["healthy"][0].numpy(), i, args.cache, f"healthy{i}"))
                )
            mask = item["mask"][0].numpy() > 0
            ml = float(mask.sum() * np.prod(voxel) / 1000)
            anomaly = free_map(usb, item["lesioned"][0].numpy(), i, args.cache, f"lesioned{size[0]:g}-{size[1]:g}_{i}")
            lesioned.append((FIRST_ITEM + i, ml, mask, anomaly))
            print(f"held-out {size} item {i}: {ml:.1f} ml", flush=True)

    heads = {}
    if args.heads is not None:
        from detection_controls import model_grid_anomaly

        for name in (*CALIBRATION_HEADS, *EVALUATION_HEADS):  # the map the app itself thresholded
            heads[name] = np.asanyarray(nib.load(str(model_grid_anomaly(args.heads, name))).dataobj).astype(np.float32)

    results = {}
    for variant in VARIANTS:
        clears = [clear_threshold(normed(a, norm, variant), s.detect_min_ml, voxel) for _, a in healthy]
        head_clear = {
            name: clear_threshold(normed(a, norm, variant), s.detect_min_ml, voxel) for name, a in heads.items()
        }
        chosen_on = clears + [head_clear[n] for n in CALIBRATION_HEADS if n in head_clear]
        threshold = threshold_for(max(chosen_on))
        rows = []
        for item, ml, mask, anomaly in lesioned:
            m = normed(anomaly, norm, variant)
            found = detect_lesions(m, threshold, s.detect_min_ml, voxel)
            rows.append(
                {
                    "item": item,
                    "lesion_ml": ml,
                    "lesion_median": float(np.median(m[mask])),
                    "dice": dice(found, mask),
                    "detected_ml": float(found.sum() * np.prod(voxel) / 1000),
                }
            )
        heads_at = {
            name: {
                "clear": round(c, 4),
                "detected_ml": float(
                    detect_lesions(normed(heads[name], norm, variant), threshold, s.detect_min_ml, voxel).sum()
                    * np.prod(voxel)
                    / 1000
                ),
                "role": "calibration" if name in CALIBRATION_HEADS else "evaluation",
            }
            for name, c in head_clear.items()
        }
        results[variant] = {
            "threshold": threshold,
            "healthy_clear_max": max(clears),
            "heads": heads_at,
            "dice_by_size": dice_by_size(rows),
            "cases": rows,
        }
        print(
            f"{variant}: threshold {threshold} (synthetic healthy clear {max(clears):.3f}, heads "
            f"{ {n: h['clear'] for n, h in heads_at.items()} }); Dice by size "
            f"{ {k: v['mean_dice'] for k, v in results[variant]['dice_by_size'].items()} }; "
            f"heads detected { ({n: h['detected_ml'] for n, h in heads_at.items()}) } ml",
            flush=True,
        )
    result = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(checkpoint_directory(args.model)),
        "n_norm": args.n_norm,
        "n": args.n,
        "norm_sigma": args.norm_sigma,
        "detect_t_start": s.detect_t_start,
        "detect_polarity": s.detect_polarity,
        "detect_sigma_vox": s.detect_sigma_vox,
        "detect_min_ml": s.detect_min_ml,
        "variants": results,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "command": "python benchmarks/detection_norm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
