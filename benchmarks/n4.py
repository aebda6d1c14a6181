"""N4 bias correction fitted on the whole grid against the head only: seconds, and how closely
each recovers a known smooth field, on 1 mm scans with a background.

The check needs no ground-truth bias: the scan is multiplied by a known smooth field F (log-field
from a 4^3 random lattice, std 0.15, cubic) and N4 runs on the scan with and without F. The ratio
of the two estimated fields should be F, up to N4's free scale; the mean and 95th percentile of
|ratio / F - 1| over the tissue (above the 20th percentile of the non-zero voxels) are reported.

Scans: the participant benchmark's synthetic 1 mm T1w (usb-synth-dataset, seed 11) and the
MNI152 2009 template at 1 mm that nilearn ships.

    python benchmarks/n4.py [--threads 2]

Writes benchmarks/results/n4.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"shrink_factor": 4, "convergence": {"iters": [50, 50, 30], "tol": 1e-6}}  # the app's


def scans(tmp: Path):
    import nibabel as nib
    import numpy as np
    from nilearn.datasets import load_mni152_template

    from bids_usb.preprocessing import reorient_to_ras
    from usb_model.synth.bids_writer import write_dataset

    write_dataset(tmp / "bids", participants=1, seed=11, n_healthy=0, voxel_size=(1.0, 1.0, 1.0), variety=False)
    synth = reorient_to_ras(nib.load(str(tmp / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")))
    yield "synthetic participant (benchmarks/participant.py)", np.asanyarray(synth.dataobj).astype(np.float32)
    yield (
        "MNI152 2009 template, 1 mm (nilearn)",
        np.asanyarray(load_mni152_template(resolution=1).dataobj).astype(np.float32),
    )


def smooth_field(shape, seed: int = 0):
    import numpy as np
    from scipy.ndimage import zoom

    lattice = np.random.default_rng(seed).normal(0, 0.15, (4, 4, 4))
    log_field = zoom(lattice, np.array(shape) / 4, order=3)[: shape[0], : shape[1], : shape[2]]
    log_field = np.pad(log_field, [(0, s - f) for s, f in zip(shape, log_field.shape)], mode="edge")
    return np.exp(log_field).astype(np.float32)


def estimate(data, on_head: bool):
    import ants

    from bids_usb.preprocessing import head_mask

    image = ants.from_numpy(data, spacing=(1.0, 1.0, 1.0))
    kwargs = dict(SETTINGS)
    start = time.perf_counter()  # the mask is part of the cost
    if on_head:
        kwargs["mask"] = head_mask(image)
    field = ants.n4_bias_field_correction(image, return_bias_field=True, **kwargs).numpy()
    return field, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in scans(Path(tmp)):
            field = smooth_field(data.shape)
            tissue = data > np.percentile(data[data > 0], 20)
            for how, on_head in (("whole grid (before)", False), ("head only (now)", True)):
                plain, seconds = estimate(data, on_head)
                biased, seconds_biased = estimate(data * field, on_head)
                ratio = (biased / np.maximum(plain, 1e-6))[tissue]
                ratio /= np.median(ratio / field[tissue])
                error = np.abs(ratio / field[tissue] - 1)
                row = {
                    "scan": name,
                    "shape": list(data.shape),
                    "background_fraction": round(float((data == 0).mean()), 3),
                    "fit_on": how,
                    "seconds": round((seconds + seconds_biased) / 2, 2),
                    "field_error_mean": round(float(error.mean()), 4),
                    "field_error_p95": round(float(np.percentile(error, 95)), 4),
                }
                rows.append(row)
                print(
                    f"{name:<52} {how:<20} {row['seconds']:6.1f} s  |ratio/F - 1| mean {row['field_error_mean']:.4f}"
                    f"  p95 {row['field_error_p95']:.4f}",
                    flush=True,
                )
    result = {
        "command": "python benchmarks/n4.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_after": os.getloadavg(),
        "n4_settings": SETTINGS,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "n4.json"
    out.with_suffix(".json.tmp").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".json.tmp").replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
