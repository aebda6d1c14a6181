"""Seconds per 160^3 training triplet on one CPU core (target: at most 2 s).

Why: training data are synthesized on the fly by DataLoader workers; if one triplet took
longer than a GPU step, the GPU would wait. Run from the repository root:

    python benchmarks/synth.py            # 20 triplets after one warm-up, T1w
    python benchmarks/synth.py --n 40 --contrast FLAIR

It prints the numbers and writes them to benchmarks/results/synth.json. The template load
(once per process, cached) is timed separately and not counted per triplet.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core for numpy's BLAS too, set before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.config import GridConfig  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.template import load_template  # noqa: E402

TARGET_S = 2.0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="triplets to time (after one warm-up)")
    parser.add_argument("--size", type=int, default=160, help="grid edge (voxels, 1 mm)")
    parser.add_argument("--contrast", default="T1w", choices=["T1w", "FLAIR"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synth.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    grid = GridConfig(shape=(args.size,) * 3, voxel_size=(1.0, 1.0, 1.0))
    t0 = time.perf_counter()
    load_template(grid)
    template_s = time.perf_counter() - t0

    # healthy_fraction=0: every timed item carries a lesion (the costlier case).
    ds = TripletDataset(grid, length=args.n + 1, seed=args.seed, healthy_fraction=0.0, contrast=args.contrast)
    ds[args.n]  # warm-up (imports, allocator)
    times, volumes = [], []
    for i in range(args.n):
        t = time.perf_counter()
        item = ds[i]
        times.append(time.perf_counter() - t)
        volumes.append(float(item["mask"].sum()) / 1000.0)
    healthy = TripletDataset(grid, length=5, seed=args.seed, healthy_fraction=1.0, contrast=args.contrast)
    healthy_times = []
    for i in range(5):
        t = time.perf_counter()
        healthy[i]
        healthy_times.append(time.perf_counter() - t)

    times_arr = np.array(times)
    result = {
        "benchmark": "usb_model.synth TripletDataset.__getitem__",
        "grid": list(grid.shape),
        "voxel_size_mm": list(grid.voxel_size),
        "contrast": args.contrast,
        "threads": torch.get_num_threads(),
        "n_triplets": args.n,
        "seconds_per_triplet_mean": round(float(times_arr.mean()), 4),
        "seconds_per_triplet_median": round(float(np.median(times_arr)), 4),
        "seconds_per_triplet_p90": round(float(np.percentile(times_arr, 90)), 4),
        "seconds_per_triplet_max": round(float(times_arr.max()), 4),
        "seconds_per_healthy_item_mean": round(float(np.mean(healthy_times)), 4),
        "template_load_seconds": round(template_s, 3),
        "lesion_volume_ml_range": [round(min(volumes), 3), round(max(volumes), 3)],
        "target_seconds": TARGET_S,
        "meets_target": bool(times_arr.mean() <= TARGET_S),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    for key, value in result.items():
        if key != "machine":
            print(f"{key:32s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
