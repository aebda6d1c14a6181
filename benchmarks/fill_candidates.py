"""Which fill and which mask growth, on masks and anatomy the way users bring them (issue 23).

The fills and growths are numpy on the scan's own 1 mm grid, so every candidate can be scored
on every case in minutes, without the model; the app's defaults are chosen here and then
confirmed through the participant level (benchmarks/healing.py). Two anatomies, reported as
their own rows:

- ``template``: brains synthesised from the MNI template (usb_model.synth, seeds never used in
  training), the benchmark's former only anatomy; the graft's donor is the template itself,
  so there the graft is close to the truth;
- ``colin``: a real single-subject head, Colin 27 (``ch2bet.nii.gz`` of Debian's
  ``mricron-data``, skull-stripped, 1 mm, MNI space), never used in training. Its graft comes
  from the MNI template placed by world coordinates (both in MNI space: the few-mm mismatch of
  an affine registration between two heads).

Lesion classes as benchmarks/healing.py draws them (usb_model.synth.encode_lesion), plus
``subtle``: several white-matter lesions 0.03-1.5 ml that darken T1w by 10-30 %. Masks given as
users give them: ``exact`` (the whole lesion), ``short1`` (1 mm short of it), ``grid2`` (made on a
2 mm grid, resampled by nearest neighbour as the app does) and ``large1`` (1 mm too large).
Scored with the BraTS 2023 inpainting metrics on the whole true lesion (``psnr``, ``ssim``),
and on the true lesion with the healed mask (``psnr_union``: what a too-large mask costs the
healthy tissue under it).

    python benchmarks/fill_candidates.py [--cases-per-class 2] [--colin PATH]

Writes benchmarks/results/fill-candidates.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import usb_model.fill as fill_module  # noqa: E402
from usb_model.atomic import write_text  # noqa: E402
from usb_model.config import GridConfig  # noqa: E402
from usb_model.fill import prefill, white_matter, wm_fill  # noqa: E402
from usb_model.mask_growth import dilate_mm, grow_mask  # noqa: E402
from usb_model.synth import encode_lesion, random_lesion, synth_healthy  # noqa: E402
from usb_model.template import load_template, template_1mm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COLIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
SEED = 9_200_000
SYNTH_FOV_MM = (184, 224, 192)
CLASSES = {
    # name: (volume range ml, darkening strength range, white matter only, lesions per brain)
    "subtle": ((0.03, 1.5), (0.1, 0.3), True, 8),
    "wmh": ((0.3, 2.0), (0.25, 0.5), True, 3),
    "lacune": ((0.2, 1.5), (0.75, 0.95), False, 1),
    "infarct": ((8.0, 40.0), (0.7, 0.9), False, 1),
    "territorial": ((50.0, 120.0), (0.7, 0.9), False, 1),
}
MASKS = ("exact", "short1", "grid2", "large1")
ANATOMIES = ("colin", "template")
#: Every fill on the exact mask; the degraded masks compare growths under the two fills that matter.
DEGRADED_FILLS = ("wm", "auto", "auto_given")
FILL_KINDS = ("wm", "local", "lift", "graft", "auto")
GROWTH_VARIANTS = {
    # name: (method, grid_factor, reach_mm, fraction, seeded, min_edge_share[, edge_fraction[, rings[, dark[,
    # peel_large]]]])
    "none": ("none", 0.5, 1.5, 0.35, False, 0.0),
    "grid0.5": ("grid", 0.5, 1.5, 0.35, False, 0.0),
    "grid1": ("grid", 1.0, 1.5, 0.35, False, 0.0),
    "image": ("image", 0.5, 1.5, 0.35, False, 0.0),
    "image2": ("image", 0.5, 2.0, 0.25, False, 0.0),
    "auto": ("auto", 0.5, 1.5, 0.35, False, 0.0),
    "auto2": ("auto", 0.5, 2.0, 0.25, False, 0.0),  # the default's steps with image2's wider, fainter reach
    # the image growth only from the mask's own lesion-like voxels (grow_by_image(seeded=True))
    "auto_seeded": ("auto", 0.5, 1.5, 0.35, True, 0.0),
    "auto2_seeded": ("auto", 0.5, 2.0, 0.25, True, 0.0),
    # a component grows by the image only when half its edge is still lesion (min_edge_share)
    "auto_gated": ("auto", 0.5, 1.5, 0.35, False, 0.5),
    "auto2_gated": ("auto", 0.5, 2.0, 0.25, False, 0.5),
    "auto_f50_gated": ("auto", 0.5, 1.5, 0.5, False, 0.5),  # a stricter rim: half way to the core
    # image2's wide, faint growth behind a stricter edge test (edge_fraction)
    "auto2_gate35": ("auto", 0.5, 2.0, 0.25, False, 0.5, 0.35),
    "auto2_gate50": ("auto", 0.5, 2.0, 0.25, False, 0.5, 0.5),
    # and whole rings taken while their median is lesion-like (WMH and subtle lesions only):
    # grow_mask's defaults since 2026-12-06 (session 2)
    "auto2_gate50_rings": ("auto", 0.5, 2.0, 0.25, False, 0.5, 0.5, True),
    # and each small CSF-dark lesion fitted by its fill's prediction (mask_growth.fit_dark):
    # grow_mask's defaults since 2026-12-07
    "auto2_gate50_rings_dark": ("auto", 0.5, 2.0, 0.25, False, 0.5, 0.5, True, True, False),
    # and large CSF-dark lesions (infarcts) peeled by the same prediction (fit_dark(peel_large)):
    "auto2_gate50_rings_dark_peel": ("auto", 0.5, 2.0, 0.25, False, 0.5, 0.5, True, True, True),
}


def colin_anatomy(path: Path):
    """Colin 27 on its own 1 mm grid, normalised to [0, 1]; brain, parenchyma and a white-matter
    probability from its own intensities (no tissue maps ship with it)."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    brain = ndimage.binary_fill_holes(data > 0)
    image = np.clip(data / np.percentile(data[brain], 99.5), 0, 1) * brain
    wm = white_matter(image, brain).astype(np.float32)
    wm_prob = ndimage.gaussian_filter(wm, 1.0)
    parenchyma = brain & (image > 0.45)  # above CSF; T1w GM sits near 0.6-0.75 of WM
    mni = template_1mm()
    moving = nib.Nifti1Image(np.asarray(mni.t1w, np.float32), np.asarray(mni.affine))
    donor = np.asanyarray(resample_from_to(moving, (data.shape, img.affine), order=1).dataobj, dtype=np.float32)
    return image.astype(np.float32), brain, parenchyma, wm_prob, donor, img.affine


def template_anatomy(rng):
    template = load_template(GridConfig(shape=SYNTH_FOV_MM, voxel_size=(1.0, 1.0, 1.0)))
    brain = synth_healthy(template, rng, "T1w")
    return (
        brain.image,
        brain.brain_mask,
        brain.parenchyma,
        brain.wm,
        np.asarray(template.t1w),
        np.asarray(template.affine),
    )


def draw_case(anatomy, klass, rng):
    image, brain, parenchyma, wm, _donor, _affine = anatomy
    volume, strength, wm_only, count = CLASSES[klass]
    mask = np.zeros(image.shape, bool)
    for _ in range(count):
        if wm_only:
            mask |= random_lesion(brain, rng, size=volume, wm=wm, voxel_size=(1, 1, 1))
        else:
            mask |= random_lesion(parenchyma, rng, size=volume, voxel_size=(1, 1, 1))
    sick = encode_lesion(image, mask, rng, "T1w", strength=strength)
    # The true lesion: the mask and the partial-volume rim the encoding blurred beyond it.
    truth = (mask | (np.abs(sick - image) > 0.02)) & brain
    return sick, truth


def given_mask(truth, kind, affine):
    if kind == "exact":
        return truth.copy(), None
    if kind == "large1":
        return dilate_mm(truth, (1, 1, 1), 1.0), None
    if kind == "short1":
        core = ndimage.distance_transform_edt(truth) > 1.0
        labels, n = ndimage.label(truth)
        for index in range(1, n + 1):  # a component the erosion would empty keeps its voxels
            component = labels == index
            if not core[component].any():
                core |= component
        return core, None
    if kind == "grid2":
        coarse_affine = affine.copy()
        coarse_affine[:3, :3] = affine[:3, :3] * 2
        shape = tuple(int(np.ceil(s / 2)) for s in truth.shape)
        fine = nib.Nifti1Image(truth.astype(np.float32), affine)
        coarse = np.asanyarray(resample_from_to(fine, (shape, coarse_affine), order=1).dataobj) >= 0.5
        back = resample_from_to(
            nib.Nifti1Image(coarse.astype(np.float32), coarse_affine), (truth.shape, affine), order=0
        )
        return np.asanyarray(back.dataobj) > 0.5, (2.0, 2.0, 2.0)
    raise ValueError(kind)


def metrics(pred, truth_img, sick, region, brain):
    import torch
    from inpainting.challenge_metrics_2023 import generate_metrics

    idx = np.argwhere(region)
    lo, hi = np.maximum(idx.min(0) - 8, 0), np.minimum(idx.max(0) + 9, region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)[box]))[None]  # noqa: E731
    m = generate_metrics(
        prediction=t(pred),
        target=t(truth_img),
        normalization_tensor=torch.from_numpy(np.asarray(sick, np.float32)[brain & ~region]),
        mask=torch.from_numpy(region[box])[None],
    )
    return float(m["psnr"]), float(m["ssim"])


def fill(sick, healed_mask, kind, donor, brain, given=None):
    if kind.endswith("_gauss"):  # ... small dark lesions filled by the Gaussian mean (before 2026-12-06)
        saved, fill_module.AUTO_LOCAL_FILL = fill_module.AUTO_LOCAL_FILL, "gaussian"
        try:
            return fill(sick, healed_mask, kind.removesuffix("_gauss"), donor, brain, given)
        finally:
            fill_module.AUTO_LOCAL_FILL = saved
    if kind == "auto_given":  # auto, each lesion's fill chosen on the mask as given (not the app's way)
        return prefill(sick, healed_mask, "auto", template=donor, given=given)
    if kind == "auto_given_dark":  # ... only where the given mask's core is CSF-dark
        return prefill(sick, healed_mask, "auto", template=donor, given=given, given_dark=0.5)
    if kind.startswith("auto_given_dark_grey"):  # ... a pale lesion in grey matter filled locally below
        # this fraction (%) of the white-matter mean; _grey0: never (before 2026-12-07), _grey100: always
        # _shallow: the grey test without the deep core's (AUTO_GREY_DEEP_MM 1: the 1 mm core again)
        level = int(kind.rsplit("_grey", 1)[1].removesuffix("_shallow")) / 100
        deep = 1.0 if kind.endswith("_shallow") else fill_module.AUTO_GREY_DEEP_MM
        saved = fill_module.AUTO_GREY_TISSUE, fill_module.AUTO_GREY_DEEP_MM
        fill_module.AUTO_GREY_TISSUE, fill_module.AUTO_GREY_DEEP_MM = (level if level > 0 else None), deep
        try:
            return prefill(sick, healed_mask, "auto", template=donor, given=given, given_dark=0.5)
        finally:
            fill_module.AUTO_GREY_TISSUE, fill_module.AUTO_GREY_DEEP_MM = saved
    if kind.startswith("auto_given_dark_local"):  # ... auto's local fill up to another size (ml)
        saved, fill_module.AUTO_LOCAL_ML = fill_module.AUTO_LOCAL_ML, float(kind.rsplit("_local", 1)[1])
        try:
            return prefill(sick, healed_mask, "auto", template=donor, given=given, given_dark=0.5)
        finally:
            fill_module.AUTO_LOCAL_ML = saved
    if kind.startswith("auto_given_dark_p"):  # ... the contrast read on a low percentile of the core
        saved, fill_module.CONTRAST_PERCENTILE = fill_module.CONTRAST_PERCENTILE, int(kind.rsplit("_p", 1)[1])
        try:
            return prefill(sick, healed_mask, "auto", template=donor, given=given, given_dark=0.5)
        finally:
            fill_module.CONTRAST_PERCENTILE = saved
    if kind == "wm_noise":
        return wm_fill(sick, healed_mask, brain=brain, rng=np.random.default_rng(0))
    return prefill(sick, healed_mask, kind, template=donor)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases-per-class", type=int, default=2)
    parser.add_argument("--colin", type=Path, default=COLIN)
    parser.add_argument("--anatomies", default="colin,template")
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--growths", default=",".join(GROWTH_VARIANTS), help="growth variants on the degraded masks")
    parser.add_argument("--degraded-fills", default=",".join(DEGRADED_FILLS), help="fills on the degraded masks")
    parser.add_argument(
        "--exact-fills", default="auto_given_dark,auto_given_dark_gauss", help="more fills on the exact mask"
    )
    parser.add_argument("--results", default="fill-candidates.json")
    args = parser.parse_args(argv)
    if not args.colin.is_file():
        parser.error(f"{args.colin}: Colin 27 is missing; apt-get install mricron-data, or pass --colin PATH")
    rows, clock = [], time.perf_counter()
    colin = colin_anatomy(args.colin) if "colin" in args.anatomies.split(",") else None
    for anatomy_name in args.anatomies.split(","):
        for klass in args.classes.split(","):
            for case in range(args.cases_per_class):
                rng = np.random.default_rng([SEED, ANATOMIES.index(anatomy_name), list(CLASSES).index(klass), case])
                anatomy = colin if anatomy_name == "colin" else template_anatomy(rng)
                image, brain, _p, _w, donor, affine = anatomy
                sick, truth = draw_case(anatomy, klass, rng)
                base = {"anatomy": anatomy_name, "class": klass, "case": case, "lesion_ml": float(truth.sum() / 1000)}
                psnr, ssim = metrics(sick, image, sick, truth, brain)
                rows.append({**base, "mask": "-", "growth": "-", "fill": "none", "psnr": psnr, "ssim": ssim})
                for mask_kind in MASKS:
                    given, source_voxel = given_mask(truth, mask_kind, affine)
                    given &= brain
                    for growth_name, (
                        method,
                        factor,
                        reach,
                        fraction,
                        seeded,
                        edge_share,
                        *extra,
                    ) in GROWTH_VARIANTS.items():
                        if growth_name not in args.growths.split(",") and growth_name != "none":
                            continue
                        if mask_kind == "exact" and not growth_name.startswith(("none", "auto")):
                            continue
                        if growth_name.startswith("grid") and source_voxel is None:
                            continue  # grid growth only acts on a mask from a coarser grid
                        healed_mask, growth = grow_mask(
                            sick,
                            given,
                            (1, 1, 1),
                            method=method,
                            source_voxel_mm=source_voxel,
                            brain=brain,
                            grid_factor=factor,
                            reach_mm=reach,
                            fraction=fraction,
                            seeded=seeded,
                            min_edge_share=edge_share,
                            edge_fraction=extra[0] if extra else None,
                            rings=len(extra) > 1 and extra[1],  # off unless the variant says
                            dark=len(extra) > 2 and extra[2],
                            peel_large=len(extra) > 3 and extra[3],
                        )
                        if mask_kind == "exact" and growth_name == "none":
                            kinds = (*FILL_KINDS, "wm_noise", *args.exact_fills.split(","))
                        else:
                            kinds = args.degraded_fills.split(",")
                        for kind in kinds:
                            pred = fill(sick, healed_mask, kind, donor, brain, given)
                            psnr, ssim = metrics(pred, image, sick, truth, brain)
                            # what a too-large mask costs the healthy tissue under it
                            psnr_u = (
                                metrics(pred, image, sick, truth | healed_mask, brain)[0]
                                if mask_kind == "large1"
                                else psnr
                            )
                            rows.append(
                                {
                                    **base,
                                    "mask": mask_kind,
                                    "growth": growth_name,
                                    "fill": kind,
                                    "psnr": psnr,
                                    "ssim": ssim,
                                    "psnr_union": psnr_u,
                                    "covered": float((healed_mask & truth).sum() / truth.sum()),
                                    "healed_over_true": float(healed_mask.sum() / truth.sum()),
                                }
                            )
                print(
                    f"{anatomy_name} {klass} {case} ({base['lesion_ml']:.2f} ml): {time.perf_counter() - clock:.0f} s",
                    flush=True,
                )
    result = {
        "command": "python benchmarks/fill_candidates.py"
        + (f" --cases-per-class {args.cases_per_class}" if args.cases_per_class != 2 else "")
        + (f" --anatomies {args.anatomies}" if args.anatomies != "colin,template" else "")
        + (f" --classes {args.classes}" if args.classes != ",".join(CLASSES) else "")
        + (f" --growths {args.growths}" if args.growths != ",".join(GROWTH_VARIANTS) else "")
        + (f" --degraded-fills {args.degraded_fills}" if args.degraded_fills != ",".join(DEGRADED_FILLS) else "")
        + (f" --exact-fills {args.exact_fills}" if args.exact_fills != "auto_given_dark,auto_given_dark_gauss" else ""),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "summary": summarise(rows),
        "rows": rows,
    }
    write_text(RESULTS / args.results, json.dumps(result, indent=1) + "\n")
    print_table(result["summary"])
    return 0


def summarise(rows):
    out = {}
    for r in rows:
        key = f"{r['anatomy']}|{r['class']}|{r['mask']}|{r['growth']}|{r['fill']}"
        out.setdefault(key, []).append(r)
    return {
        key: {
            "n": len(v),
            "psnr": float(np.mean([r["psnr"] for r in v])),
            "ssim": float(np.mean([r["ssim"] for r in v])),
            **({"psnr_union": float(np.mean([r["psnr_union"] for r in v]))} if "psnr_union" in v[0] else {}),
        }
        for key, v in out.items()
    }


def print_table(summary):
    for key, v in summary.items():
        print(
            f"{key:55s} psnr {v['psnr']:6.2f}  ssim {v['ssim']:.4f}"
            + (f"  union {v['psnr_union']:6.2f}" if "psnr_union" in v else "")
        )


if __name__ == "__main__":
    raise SystemExit(main())
