"""How much a small lesion's fill depends on the affine registration's random seed.

The app's affine (ANTs, Mattes MI on randomly sampled points, seeded by ``--seed``) decides
where the template graft comes from, and so most of what fills a lesion. Re-running the
registration of some healing.py scans with other seeds, and grafting with each affine,
shows how far single-scan numbers in docs/benchmarks.md can move on seed alone (lesion PSNR,
BraTS ``inpainting`` metric, as in healing.py).

    python benchmarks/healing.py ...          # first: the scans and the app's work directory
    python benchmarks/registration_seed.py [--work scratch/healing] [--subs iso1lacune02,...] [--seeds 4]

Writes benchmarks/results/registration-seed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import healing  # noqa: E402

from bids_usb import preprocessing as prep  # noqa: E402
from usb_model.atomic import write_text  # noqa: E402
from usb_model.fill import template_graft  # noqa: E402
from usb_model.template import template_1mm  # noqa: E402


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=healing.ROOT / "scratch" / "healing")
    parser.add_argument("--subs", default="iso1wmh00,iso1lacune02,iso1lacune03,iso1infarct04")
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ[prep.ITK_THREADS] = "1"  # as the app registers: one ITK thread, so only the seed varies
    work = args.work.absolute()
    template_img = nib.load(str(work / "work" / "bids_usb_wf" / "model_template" / "template.nii.gz"))
    tpl = template_1mm()
    moving = nib.Nifti1Image(tpl.t1w.astype(np.float32), np.asarray(tpl.affine))
    rows, clock = [], time.perf_counter()
    for sub in args.subs.split(","):
        wf = work / "work" / "bids_usb_wf" / f"image_sub_{sub}_T1w_wf"
        brain = nib.load(str(wf / "skull_strip" / "brain.nii.gz"))
        cost = prep.cost_mask(
            nib.load(str(wf / "skull_strip" / "brain_mask.nii.gz")), nib.load(str(wf / "prepare" / "lesion_ras.nii.gz"))
        )
        anat = nib.load(str(work / "bids" / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"))
        lesioned = np.asanyarray(anat.dataobj).astype(np.float32)
        truth = load(work / "truth" / f"sub-{sub}_T1w.nii.gz")
        lesion = load(work / "truth" / f"sub-{sub}_lesion.nii.gz") > 0
        brain_truth = load(work / "truth" / f"sub-{sub}_brain.nii.gz") > 0
        psnr = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                reg = prep.register_to_template(brain, template_img, cost, tmp, seed=seed)
                moved = prep.to_native(moving, anat, reg)
                graft = template_graft(
                    lesioned, lesion, np.asanyarray(moved.dataobj, dtype=np.float32), brain=brain_truth
                )
            psnr.append(healing.inpainting_metrics(graft, truth, lesioned, lesion, brain_truth)["psnr"])
        rows.append(
            {
                "sub": sub,
                "lesion_ml": float(lesion.sum() * np.prod(anat.header.get_zooms()[:3]) / 1000),
                "graft_psnr_by_seed": psnr,
                "range_db": float(max(psnr) - min(psnr)),
            }
        )
        print(f"{sub}: " + " ".join(f"{p:.2f}" for p in psnr), flush=True)
    result = {
        "command": f"python benchmarks/registration_seed.py --subs {args.subs} --seeds {args.seeds}",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "cases": rows,
    }
    write_text(healing.RESULTS / "registration-seed.json", json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
