"""How ANTs' affine metric sampling rate moves the registration to the model template.

For each Colin-head scan of the healing benchmark, the app's affine (``_register``, single
threaded as the app runs it) is fitted with the lesion mask left out of its cost as each mask
kind gives it (exact, 1 mm too large, 2 mm grid), at each sampling rate. It reports the brain's
overlap with the template (Dice) and how far the template's brain points move between the mask
kinds (mean over points, mm): a registration that moves with the mask moves the graft and the
model grid under the heal. Reads the work directories of a head-table run
(``benchmarks/healing.py --work <prefix>-<mask> --anatomy colin-head ...``).

    python benchmarks/registration_sampling.py --work-prefix scratch/hb-fs-head
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"  # before ITK's first use: deterministic fits

import ants  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

import bids_usb.preprocessing as prep  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("exact", "large1", "grid2")
SCANS = ("subtle500", "wmh501", "lacune502", "infarct503", "territorial504")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-prefix", default="scratch/hb-fs-head")
    parser.add_argument("--rates", default="0.2,0.5,1.0")
    parser.add_argument("--out", default=str(RESULTS / "registration-sampling.json"))
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    wf = "work/bids_usb_wf"
    template = nib.load(f"{args.work_prefix}-exact/{wf}/model_template/template.nii.gz")
    points = np.argwhere(np.asanyarray(template.dataobj) > 0)[::5]
    world = nib.affines.apply_affine(template.affine, points)
    world[:, :2] *= -1  # RAS -> LPS, ITK's
    fit = ants.registration
    cases, summary = {}, {}
    for rate in rates:
        prep.ants.registration = lambda *a, _rate=rate, **k: fit(*a, **{**k, "aff_random_sampling_rate": _rate})
        overlaps, movements = [], []
        for scan in SCANS:
            moved, overlap = {}, {}
            for kind in KINDS:
                node = Path(f"{args.work_prefix}-{kind}/{wf}/image_sub_colinheadiso1{scan}_T1w_wf")
                brain_mask = nib.load(node / "skull_strip/brain_mask.nii.gz")
                cost = prep.cost_mask(brain_mask, nib.load(node / "prepare/lesion_ras.nii.gz"))
                with tempfile.TemporaryDirectory() as tmp:
                    reg = prep._register(nib.load(node / "skull_strip/brain.nii.gz"), template, cost, Path(tmp), 0)
                    transform = ants.read_transform(str(reg.transform))
                    moved[kind] = np.array([transform.apply_to_point(tuple(p)) for p in world])
                overlap[kind] = round(reg.overlap, 4)
            movement = {
                f"{a}-{b}": round(float(np.linalg.norm(moved[a] - moved[b], axis=1).mean()), 2)
                for i, a in enumerate(KINDS)
                for b in KINDS[i + 1 :]
            }
            cases[f"{scan} {rate}"] = {"overlap": overlap, "movement_mm": movement}
            overlaps += overlap.values()
            movements += movement.values()
            print(scan, rate, overlap, movement, flush=True)
        summary[str(rate)] = {
            "overlap_mean": round(statistics.mean(overlaps), 4),
            "overlap_min": min(overlaps),
            "movement_mean_mm": round(statistics.mean(movements), 2),
            "movement_max_mm": max(movements),
        }
        print(rate, summary[str(rate)], flush=True)
    prep.ants.registration = fit
    result = {
        "command": "python benchmarks/registration_sampling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": date.today().isoformat(),
        "summary": summary,
        "cases": cases,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
