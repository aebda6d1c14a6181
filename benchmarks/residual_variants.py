"""How much of the model's change to the fill should reach the lesion? Measured on the healing
benchmark's own outputs, without rerunning the app.

With ``--fill-residual`` the lesion holds the native fill plus the model's change to it
(``decode(healed) - decode(filled)``, made on the 3 mm model grid and moved to the scan). The
change lifts lesion PSNR but costs tissue Dice (healing-residual.json): it is a 3 mm field laid
over 1 mm anatomy. This script takes a finished ``benchmarks/healing.py`` run of the default
(``usb_mask``), recovers the change on the native grid as ``output - fill`` inside the lesion (the
fill rebuilt exactly as the app builds it, from the app's own registration), and scores ways of
applying it with the same metrics as healing.py (BraTS ``inpainting`` PSNR/SSIM in the lesion,
Atropos tissue Dice inside the lesion dilated by 3 mm):

- ``fill``: the fill alone (the model's change dropped);
- ``full``: fill + change (the app's output, as a check);
- ``half``: fill + change / 2;
- ``smooth``: fill + the change smoothed by a Gaussian of ``--sigma-mm`` inside the lesion (only its
  slow part: local intensity level, no 3 mm edges);
- ``range``: fill + change, clipped to the fill's own range over a 3 x 3 x 3 neighbourhood (the
  change may move intensities, never past the fill's local tissue contrast).

Those five touch the lesion only. Around it the app also writes the blend band
(``SamplingConfig.band_mm``; ``--app-band``, the one the run used: (1, 4) up to 2026-12-02, weight 1 up to
1 mm from the lesion, 0 from 4 mm, since then (0, 2)): the input plus the
model's decoded change ``decode(healed) - decode(input)``. Two more variants keep ``full`` in the
lesion and vary the band:

- ``app``: the app's output as written (its band);
- ``band_0_2``: a band from 0 to 2 mm (the same change, scaled by the narrower weight).

    python benchmarks/healing.py --classes wmh,lacune,infarct,territorial --methods usb_mask \
        --no-sweep --no-detect --work scratch/heal --results healing-variants-base.json
    python benchmarks/residual_variants.py --work scratch/heal

Writes benchmarks/results/residual-variants.json. The variants are built from ``output - fill``:
they assume the app wrote the unbounded fill + change, as it did up to 2026-12-02, when ``range``
became what the app writes (``usb_model.composite.within_local_range``); on a later app run
``full`` is ``range`` already.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.healing import (  # noqa: E402
    CLASSES,
    app_output,
    atropos,
    crop,
    given_on_image_grid,
    inpainting_metrics,
    lesion_box,
    mean,
    model_sha256,
    plan,
    tissue_scores,
)
from bids_usb.native import native_fill  # noqa: E402
from bids_usb.preprocessing import Registration  # noqa: E402
from usb_model.atomic import write_text  # noqa: E402
from usb_model.composite import blend_weight, within_local_range  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
VARIANTS = ("fill", "full", "half", "smooth", "range", "app", "band_0_2")


def smooth_inside(values: np.ndarray, mask: np.ndarray, sigma_vox) -> np.ndarray:
    """Gaussian smoothing of ``values`` over ``mask`` only (normalised convolution)."""
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox)
    smoothed = ndimage.gaussian_filter(np.where(mask, values, 0).astype(np.float32), sigma_vox)
    return np.where(mask, smoothed / np.maximum(weight, 1e-6), 0.0)


def variants(fill: np.ndarray, change: np.ndarray, lesion: np.ndarray, zooms, sigma_mm: float) -> dict:
    sigma_vox = [sigma_mm / z for z in zooms]
    out = {
        "fill": fill,
        "full": fill + change,
        "half": fill + 0.5 * change,
        "smooth": fill + smooth_inside(change, lesion, sigma_vox),
        "range": within_local_range(fill + change, fill, lesion),  # what the app writes since
    }
    return {k: np.where(lesion, np.maximum(v, 0.0), fill) for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the healing.py work directory")
    parser.add_argument("--method", default="usb_mask", help="the healing.py run to read (a --fill-residual one)")
    parser.add_argument("--fill", default="auto", help="the fill that run used")
    parser.add_argument("--sigma-mm", type=float, default=4.0)
    parser.add_argument(
        "--app-band", type=float, nargs=2, default=(1.0, 4.0), help="the band (mm) the healing.py run was made with"
    )
    parser.add_argument("--cases-per-class", type=int, default=2)
    parser.add_argument("--anatomy", default="template", help="the healing.py run's --anatomy")
    parser.add_argument("--results", default="residual-variants.json", help="file name under benchmarks/results/")
    args = parser.parse_args(argv)
    work = args.work.absolute()
    clock = time.perf_counter()
    rows = []
    for case in plan(args.cases_per_class, args.anatomy):
        sub = case["sub"]
        if case["class"] is None or not (work / "truth" / f"sub-{sub}_T1w.nii.gz").is_file():
            continue
        out_path = app_output(work / "out" / args.method, sub)
        if not out_path.is_file():
            continue
        truth_img = nib.load(str(work / "truth" / f"sub-{sub}_T1w.nii.gz"))
        truth = np.asanyarray(truth_img.dataobj).astype(np.float32)
        lesion = np.asanyarray(nib.load(str(work / "truth" / f"sub-{sub}_lesion.nii.gz")).dataobj) > 0
        # What the app was given (the lesion, or its core with healing.py --erode-mm): the fill,
        # the change and the band follow it; the scores stay on the whole lesion.
        brain = np.asanyarray(nib.load(str(work / "truth" / f"sub-{sub}_brain.nii.gz")).dataobj) > 0
        anat = work / "bids" / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
        original = nib.load(str(anat))
        given = given_on_image_grid(anat.parent / f"sub-{sub}_label-lesion_roi.nii.gz", anat)
        # The mask the app healed (the given one grown, usb_model.mask_growth), as it wrote it; the
        # fill is rebuilt on it, its choice read on the given mask, as ToNative does.
        healed_path = app_output(work / "out" / args.method, sub, "lesion", "mask")
        healed = np.asanyarray(nib.load(str(healed_path)).dataobj) > 0 if healed_path.is_file() else given
        lesioned = np.asanyarray(original.dataobj).astype(np.float32)
        output = np.asanyarray(nib.load(str(out_path)).dataobj).astype(np.float32)
        xfm = next((work / "out" / args.method / f"sub-{sub}" / "anat").glob("*_xfm.mat"))
        grown = app_output(work / "out" / args.method, sub, "lesiongiven", "mask").is_file()  # a growth ran
        app_brain = nib.load(str(app_output(work / "out" / args.method, sub, "brain", "mask")))
        fill = native_fill(
            original,
            healed,
            args.fill,
            Registration(xfm),
            given=given if grown else None,
            brain=np.asanyarray(app_brain.dataobj) > 0,
        )
        given = healed  # from here on, what the app healed
        change = np.where(given, output - fill, 0.0).astype(np.float32)
        zooms = truth_img.header.get_zooms()[:3]
        box = lesion_box(lesion, zooms)
        t_c, l_c, b_c = crop([truth, lesion, brain], box)
        sub_affine = truth_img.affine.copy()
        sub_affine[:3, 3] = truth_img.affine[:3, :3] @ np.array([s.start for s in box]) + truth_img.affine[:3, 3]
        truth_seg = atropos(t_c, b_c, sub_affine)
        candidates = {
            k: np.where(given, v, lesioned) for k, v in variants(fill, change, given, zooms, args.sigma_mm).items()
        }
        candidates["app"] = output
        default = blend_weight(given, zooms, inner_mm=args.app_band[0], outer_mm=args.app_band[1])
        narrow = blend_weight(given, zooms, inner_mm=0.0, outer_mm=2.0)
        ratio = np.where(default > 0, narrow / np.maximum(default, 1e-6), 0.0)
        candidates["band_0_2"] = np.where(given, output, lesioned + ratio * (output - lesioned))
        for name, pred in candidates.items():
            rows.append(
                {
                    "sub": sub,
                    "grid": case["grid"],
                    "class": case["class"],
                    "variant": name,
                    **inpainting_metrics(pred, truth, lesioned, lesion, brain),
                    **tissue_scores(crop([pred], box)[0], truth_seg, l_c, b_c, sub_affine, zooms),
                }
            )
        print(f"{sub}: " + "  ".join(f"{r['variant']} {r['psnr']:.2f}" for r in rows[-len(VARIANTS) :]), flush=True)

    def summary(sel):
        return {
            v: {
                "psnr": mean([r["psnr"] for r in sel if r["variant"] == v]),
                "ssim": mean([r["ssim"] for r in sel if r["variant"] == v]),
                "tissue_dice": mean(
                    [np.nanmean([r["dice_csf"], r["dice_gm"], r["dice_wm"]]) for r in sel if r["variant"] == v]
                ),
            }
            for v in VARIANTS
        }

    result = {
        "command": f"python benchmarks/residual_variants.py --work {args.work} --method {args.method} "
        f"--fill {args.fill} --sigma-mm {args.sigma_mm} --cases-per-class {args.cases_per_class} "
        f"--anatomy {args.anatomy} --results {args.results}",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "model_sha256": model_sha256(work / "out" / args.method, [r["sub"] for r in rows]),
        "summary": {"all": summary(rows), **{k: summary([r for r in rows if r["class"] == k]) for k in CLASSES}},
        "cases": rows,
    }
    write_text(RESULTS / args.results, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"]["all"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
