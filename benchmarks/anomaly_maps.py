"""Which anomaly map separates lesions from a healthy brain's departure? One free pass per brain, every map.

Detection (``usb_model.detection``) thresholds ``|decode(free pass) - decode(input)|``, smoothed
by 0.7 voxels. A healthy brain's departure could be texture (zero-mean, cancelled by smoothing the
signed difference before taking its magnitude) or systematic (not cancelled); a lesion's is
systematic. Each variant's threshold is set as ``detection_calibration.py`` sets it (the lowest at
which no healthy brain shows a component of 1 ml or more, plus 10 %), on the same held-out
brains, healthy and with a lesion of 5-60 ml drawn in (usb_model.synth, items from 5,000,000);
Dice of detection with the lesion at it. ``abs_s0.7`` is the map the app uses.

    python benchmarks/anomaly_maps.py --model DIR [--n 4] [--t-start 400] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import usb_model.tasks as tasks  # noqa: E402
from benchmarks.detection_calibration import clear_threshold, held_out_items, threshold_for  # noqa: E402
from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256  # noqa: E402
from usb_model.detection import detect_lesions  # noqa: E402
from usb_model.metrics import dice  # noqa: E402

#: name: (how the samples' difference becomes a map, Gaussian sigma in voxels)
VARIANTS = {
    "abs_s0.7": ("abs", 0.7),
    "abs_s1.5": ("abs", 1.5),
    "signed_s0.7": ("signed", 0.7),
    "signed_s1.5": ("signed", 1.5),
    "signed_s2.5": ("signed", 2.5),
    "bright_s1.5": ("bright", 1.5),
}


def variant_map(free: np.ndarray, reconstruction: np.ndarray, brain: np.ndarray, kind: str, sigma: float) -> np.ndarray:
    """``abs``: smooth |difference| (the app's); ``signed``: |smoothed difference|; ``bright``: the
    smoothed difference where positive (a dark T1w lesion healed brightens)."""
    diff = free - reconstruction[None]
    if kind == "abs":
        out = ndimage.gaussian_filter(np.abs(diff).mean(0), sigma)
    else:
        smooth = ndimage.gaussian_filter(diff.mean(0), sigma)
        out = np.abs(smooth) if kind == "signed" else np.maximum(smooth, 0)
    return out * brain


@contextlib.contextmanager
def free_pass_capture():
    """A dict that every ``USB.heal`` in detect mode fills with its free pass's decoded samples
    (``free``), the decoded input (``recon``) and the brain, the inputs of every map variant:
    USB.heal hands them to ``tasks.anomaly_map``, which is wrapped meanwhile."""
    captured: dict[str, np.ndarray] = {}
    app_map = tasks.anomaly_map

    def spy(free, reconstruction, brain, *a, **k):
        captured.update(
            free=np.asarray(free, np.float32), recon=np.asarray(reconstruction, np.float32), brain=np.asarray(brain) > 0
        )
        return app_map(free, reconstruction, brain, *a, **k)

    tasks.anomaly_map = spy
    try:
        yield captured
    finally:
        tasks.anomaly_map = app_map


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--t-start", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "anomaly-maps.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    usb = tasks.USB.from_checkpoint(args.model)
    captured = free_pass_capture().__enter__()  # for the process's life
    voxel = usb.cfg.grid.voxel_size
    min_ml = usb.cfg.sampling.detect_min_ml
    rows: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    clock = time.perf_counter()
    for i, item in enumerate(held_out_items(usb.cfg.grid, args.n, (5.0, 60.0))):
        mask = item["mask"][0].numpy() > 0
        maps = {}
        for kind in ("healthy", "lesioned"):
            usb.heal(item[kind][0].numpy(), seed=i, detect_t_start=args.t_start, detect_threshold=math.inf)
            maps[kind] = {
                v: variant_map(captured["free"], captured["recon"], captured["brain"], *spec)
                for v, spec in VARIANTS.items()
            }
        for v in VARIANTS:
            rows[v].append(
                {
                    "clear": clear_threshold(maps["healthy"][v], min_ml, voxel),
                    "lesion_median": float(np.median(maps["lesioned"][v][mask])),
                    "lesion_ml": float(mask.sum() * np.prod(voxel) / 1000),
                    "_map": maps["lesioned"][v],
                    "_mask": mask,
                }
            )
        print(i, {v: (round(rows[v][-1]["clear"], 3), round(rows[v][-1]["lesion_median"], 3)) for v in VARIANTS})
    variants = {}
    for v, rs in rows.items():
        threshold = threshold_for(max(r["clear"] for r in rs))
        dices = [dice(detect_lesions(r.pop("_map"), threshold, min_ml, voxel), r.pop("_mask")) for r in rs]
        variants[v] = {"threshold": threshold, "mean_dice": float(np.mean(dices)), "dice": dices, "cases": rs}
        print(f"{v}: threshold {threshold:.2f}, Dice {[round(d, 2) for d in dices]}, mean {np.mean(dices):.3f}")
    result = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(checkpoint_directory(args.model)),
        "n": args.n,
        "t_start": args.t_start,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "command": "python benchmarks/anomaly_maps.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "variants": variants,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
