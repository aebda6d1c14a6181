"""End-to-end healing benchmark: native scans through the participant level, scored as the field
scores lesion filling.

What users run, measured as they would: T1w scans at native resolution (1 mm isotropic RAS,
and 1 x 1 x 3 mm oblique LPS), int16, written as a BIDS dataset with raw lesion masks, processed
by ``bids_usb BIDS OUT participant`` itself, and compared with the healthy scan they were made
from. Brains are synthesised from the MNI template (usb_model.synth) with seeds never used in
training (training: seed 0; here 9_100_000 + case). Lesion classes, drawn as T1w lesions look
(usb_model.synth.encode_lesion: a core darkened towards CSF, a partial-volume rim, smooth
texture): white-matter-hyperintensity-like spots (mild darkening, in white matter), lacunes
(0.2-1.5 ml, CSF-dark), cortical-subcortical infarcts (8-40 ml) and territorial infarcts
(50-120 ml). Two healthy controls, without masks.

Methods, each composited into the native scan: the input (``none``); an FSL ``lesion_filling``
style fill (``wm_fill``: white-matter mean plus white-matter noise, white matter being the bright
part of the brain outside the lesion); a template graft (``graft``: the 1 mm MNI template
moved onto the scan through the app's own registration, matched by a line fitted outside the
lesion); USB with the mask (``usb_mask``, the default) and the paper's mask-free ACG healing
at the paper's settings (``usb_acg``: t_start 300, stride 1); and, on copies without masks, USB's
detection mode (``usb_detect``).

Metrics: (a) the BraTS 2023 inpainting challenge's metric code (PyPI ``inpainting`` 0.0.12,
``generate_metrics``): SSIM, PSNR and MSE inside the lesion, normalised by the input outside
it; (b) ANTs Atropos 3-class segmentation (k-means init, antspyx) of the truth, the input and
each result on a box around the lesion: Dice per tissue inside the lesion dilated by 3 mm, and
grey/white-matter volume error (ml) against the truth in that box; (c) without a mask: the
share of a healthy control's brain voxels left bit-identical and the volume detected, and
detection Dice on lesioned scans. Single sample (``--n-samples 1``). A sweep of the mask mode's
``t_start`` and step count runs on the 1 mm scans, and one run there averages 4 samples.

    python benchmarks/healing.py [--model DIR] [--work scratch/healing] [--cases-per-class 2]

Writes benchmarks/results/healing.json and docs/figures/healing.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.config import GridConfig  # noqa: E402
from usb_model.fill import lift_fill, template_graft, wm_fill  # noqa: E402
from usb_model.synth import encode_lesion, random_lesion, synth_healthy  # noqa: E402
from usb_model.synth.native import native_grid, random_pose, to_native  # noqa: E402
from usb_model.template import load_template, template_1mm, template_brain_centre  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
SEED = 9_100_000
CLASSES = {
    # name: (volume range ml, darkening strength range, white matter only)
    "subtle": ((0.03, 1.5), (0.1, 0.3), True),  # several, as in an outside test on a real head (issue 23)
    "wmh": ((0.3, 2.0), (0.25, 0.5), True),
    "lacune": ((0.2, 1.5), (0.75, 0.95), False),
    "infarct": ((8.0, 40.0), (0.7, 0.9), False),
    "territorial": ((50.0, 120.0), (0.7, 0.9), False),
}
GRIDS = {"iso1": ("RAS", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), "aniso": ("LPS", (1.0, 1.0, 3.0), (6.0, 0.0, 4.0))}
SYNTH_FOV_MM = (184.0, 224.0, 192.0)
#: A real single-subject head that is not the template: Colin 27, skull-stripped, 1 mm, MNI space
#: (Debian's mricron-data), never used in training (--anatomy colin).
COLIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
#: The same head with its scalp, as users bring scans (--anatomy colin-head): the app strips it
#: itself (deepbet) instead of being told --skull-stripped.
COLIN_HEAD = Path("/usr/share/mricron/templates/ch2.nii.gz")
#: Masks as users give them (--mask): the lesion, 1 mm short of it (the rim left out), drawn on a
#: 2 mm grid (the file stays on that grid: the app resamples it), or 1 mm too large.
MASK_KINDS = ("exact", "short1", "grid2", "large1")
NATIVE_FOV_MM = (200.0, 248.0, 216.0)
USB_METHODS = {
    "usb_mask": [],  # the default: mask mode where a mask exists (the controls, without one, go to detection)
    "usb_acg": ["--heal-mode", "acg", "--t-start", "300", "--steps", "300"],
}
# Variants measured on request (--methods), e.g. a fill other than the model's default.
EXTRA_METHODS = {
    "usb_mask_graft": ["--fill", "graft"],
    "usb_mask_wm": ["--fill", "wm"],
    "usb_mask_auto": ["--fill", "auto"],
    # the fill made on the scan's own grid plus the model's change to it (--fill-residual)
    "usb_mask_residual": ["--fill-residual"],
    "usb_mask_auto_residual": ["--fill", "auto", "--fill-residual"],
    # the blend band the default had until 2026-12-02 (now 0-2 mm)
    "usb_mask_band14": ["--band-mm", "1", "4"],
    # the given mask healed as it is (no growth), and single fills under the model
    "usb_mask_nogrow": ["--mask-growth", "none"],
    "usb_mask_lift": ["--fill", "lift"],
    # the autoencoder over the edit region's box only (issue 26; the default passes over the whole grid)
    "usb_mask_edit": ["--ae-passes", "edit"],
    # a later start: the model regenerates more of the fill (issue 22: the model's own part of a heal)
    "usb_mask_t300": ["--t-start", "300", "--steps", "100"],
}
# (t_start, steps, samples) of the mask mode; the last run averages 4 samples at the default steps, so that
# the mean of samples (which flatters distortion metrics) is reported beside the single-sample numbers.
SWEEP = [(100, 34, 1), (200, 20, 1), (200, 67, 1), (300, 100, 1), (100, 34, 4)]


def sweep_name(t_start: int, steps: int, samples: int) -> str:
    return f"t{t_start}_n{steps}" + (f"_s{samples}" if samples > 1 else "")


# --------------------------------------------------------------------------- the dataset


def colin_brain():
    """Colin 27 as a SynthBrain: its own image in [0, 1], a white-matter map from its intensities
    (no tissue maps ship with it), parenchyma above CSF; and its grid's affine."""
    from usb_model.fill import white_matter
    from usb_model.synth.healthy import SynthBrain

    img = nib.load(str(COLIN))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    brain = ndimage.binary_fill_holes(data > 0)
    image = np.clip(data / np.percentile(data[brain], 99.5), 0, 1) * brain
    wm = ndimage.gaussian_filter(white_matter(image, brain).astype(np.float32), 1.0)
    gm = np.clip((image > 0.45) * brain - wm, 0, 1).astype(np.float32)
    return SynthBrain(image=image.astype(np.float32), brain_mask=brain, gm=gm, wm=wm), np.asarray(img.affine)


def make_scan(index: int, grid_name: str, klass: str | None, anatomy: str = "template"):
    """(healthy int16, lesioned int16, lesion uint8, brain uint8, affine) on a native grid."""
    rng = np.random.default_rng([SEED, index])
    head = None
    if anatomy in ("colin", "colin-head"):
        brain, src = colin_brain()
        if anatomy == "colin-head":  # the whole head, in the brain's units (its scalp may exceed 1)
            bet = np.asanyarray(nib.load(str(COLIN)).dataobj).astype(np.float32)
            data = np.asanyarray(nib.load(str(COLIN_HEAD)).dataobj).astype(np.float32)
            head = data / np.percentile(bet[brain.brain_mask], 99.5)
    else:
        template = load_template(GridConfig(shape=tuple(int(f) for f in SYNTH_FOV_MM), voxel_size=(1.0, 1.0, 1.0)))
        brain, src = synth_healthy(template, rng, "T1w"), np.asarray(template.affine)
    mask = np.zeros(brain.image.shape, bool)
    lesioned = brain.image
    if klass is not None:
        volume, strength, wm_only = CLASSES[klass]
        if klass in ("wmh", "subtle"):  # several spots, as white-matter disease comes
            for _ in range(3 if klass == "wmh" else 8):
                mask |= random_lesion(brain.brain_mask, rng, size=volume, wm=brain.wm, voxel_size=(1, 1, 1))
        else:
            mask = random_lesion(brain.parenchyma, rng, size=volume, voxel_size=(1, 1, 1))
        lesioned = encode_lesion(brain.image, mask, rng, "T1w", strength=strength)
    if head is not None:  # the lesion drawn into the head; outside the brain the scalp stays
        lesioned = np.where(brain.brain_mask, lesioned, head)
    orientation, zooms, oblique = GRIDS[grid_name]
    pose = random_pose(rng)
    if anatomy != "template":
        brain_centre = nib.affines.apply_affine(src, np.argwhere(brain.brain_mask).mean(0))
    else:
        brain_centre = template_brain_centre()
    centre = pose[:3, :3] @ brain_centre + pose[:3, 3]
    grid = native_grid(orientation, zooms, centre, NATIVE_FOV_MM, oblique)
    n_brain = to_native(brain.brain_mask.astype(np.float32), src, grid, pose) >= 0.5
    scale = float(rng.uniform(800.0, 1200.0))
    if head is None:
        healthy = to_native(brain.image, src, grid, pose) * n_brain
        sick = to_native(lesioned, src, grid, pose) * n_brain
    else:
        healthy = to_native(np.where(brain.brain_mask, brain.image, head), src, grid, pose)
        sick = to_native(lesioned, src, grid, pose)
    fraction = to_native(mask.astype(np.float32), src, grid, pose)
    lesion = ((fraction >= 0.25) | ((np.abs(sick - healthy) > 0.05) & (fraction > 0))) & n_brain
    top = 1.0 if head is None else max(float(healthy.max()), 1.0)  # a head's scalp above the brain's 1

    def units(a):
        return np.round(np.clip(a / top, 0, 1) * scale).astype(np.int16)

    return units(healthy), units(sick), lesion.astype(np.uint8), n_brain.astype(np.uint8), grid.affine


def plan(cases_per_class: int, anatomy: str = "template"):
    cases, index = [], 0 if anatomy == "template" else 500
    for grid_name in GRIDS:
        per_class = cases_per_class if grid_name == "iso1" else 1
        for klass in CLASSES:
            for _ in range(per_class):
                cases.append(
                    {
                        "sub": f"{anatomy.replace('-', '') if anatomy != 'template' else ''}{grid_name}{klass}{index:02d}",
                        "grid": grid_name,
                        "class": klass,
                        "index": index,
                        "anatomy": anatomy,
                    }
                )
                index += 1
        cases.append(
            {
                "sub": f"{anatomy.replace('-', '') if anatomy != 'template' else ''}{grid_name}control{index:02d}",
                "grid": grid_name,
                "class": None,
                "index": index,
                "anatomy": anatomy,
            }
        )
        index += 1
    return cases


def save(data, affine, path: Path, dtype):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def given_mask(lesion: np.ndarray, zooms, erode_mm: float) -> np.ndarray:
    """The mask the app is given: the lesion itself, or (``erode_mm`` > 0) only its voxels deeper
    than ``erode_mm`` inside it, as a manual mask that leaves out the partial-volume rim. A
    component the erosion would empty keeps its own voxels."""
    lesion = np.asarray(lesion) > 0
    if erode_mm <= 0:
        return lesion
    core = ndimage.distance_transform_edt(lesion, sampling=zooms) > erode_mm
    labels, n = ndimage.label(lesion)
    for index in range(1, n + 1):
        component = labels == index
        if not core[component].any():
            core |= component
    return core


def coarse_mask(lesion: np.ndarray, affine: np.ndarray, voxel_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The lesion as a mask drawn on a ``voxel_mm`` grid over the same field of view: a coarse
    voxel is lesion where at least half of it is (what a segmentation on that grid gives)."""
    from nibabel.processing import resample_from_to

    zooms = nib.affines.voxel_sizes(affine)
    coarse_affine = affine.copy()
    coarse_affine[:3, :3] = affine[:3, :3] @ np.diag(voxel_mm / zooms)
    shape = tuple(int(np.ceil(s * z / voxel_mm)) for s, z in zip(lesion.shape, zooms))
    # The coarse voxel's coverage: the fine mask averaged (box-smoothed) then sampled at its centre.
    factor = np.maximum(np.rint(voxel_mm / zooms).astype(int), 1)
    smooth = ndimage.uniform_filter(lesion.astype(np.float32), size=factor)
    fine = nib.Nifti1Image(smooth, affine)
    coverage = np.asanyarray(resample_from_to(fine, (shape, coarse_affine), order=1).dataobj)
    return (coverage >= 0.5).astype(np.uint8), coarse_affine


def mask_for_app(lesion: np.ndarray, affine: np.ndarray, kind: str, erode_mm: float = 0.0):
    """(mask, affine) given to the app for ``kind`` (MASK_KINDS); ``erode_mm`` as before."""
    zooms = nib.affines.voxel_sizes(affine)
    if kind == "exact":
        return given_mask(lesion, zooms, erode_mm).astype(np.uint8), affine
    if kind == "short1":
        return given_mask(lesion, zooms, 1.0).astype(np.uint8), affine
    if kind == "large1":
        grown = ndimage.distance_transform_edt(~(lesion > 0), sampling=zooms) <= 1.0
        return grown.astype(np.uint8), affine
    if kind == "grid2":
        return coarse_mask(lesion, affine, 2.0)
    raise ValueError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")


def given_on_image_grid(mask_path: Path, anat: Path) -> np.ndarray:
    """The given mask on the image's grid (nearest neighbour, as the app resamples one)."""
    from nibabel.processing import resample_from_to

    mask, image = nib.load(str(mask_path)), nib.load(str(anat))
    if mask.shape[:3] == image.shape[:3] and np.allclose(mask.affine, image.affine, atol=1e-3):
        return np.asanyarray(mask.dataobj) > 0
    data = nib.Nifti1Image((np.asanyarray(mask.dataobj) > 0).astype(np.float32), mask.affine)
    return np.asanyarray(resample_from_to(data, (image.shape[:3], image.affine), order=0).dataobj) > 0.5


def write_datasets(work: Path, cases, erode_mm: float = 0.0, mask_kind: str = "exact") -> None:
    """``bids`` (scans with their lesion masks: the given masks, see ``given_mask``),
    ``bids_nomask`` (the 1 mm lesioned scans and the controls, without masks: for detection) and
    ``truth`` (healthy scans, true lesion masks, brains)."""
    for root in ("bids", "bids_nomask"):
        (work / root).mkdir(parents=True, exist_ok=True)
        (work / root / "dataset_description.json").write_text(
            json.dumps({"Name": "bids_usb healing benchmark", "BIDSVersion": "1.9.0"})
        )
    for case in cases:
        sub, truth = f"sub-{case['sub']}", work / "truth"
        if (truth / f"{sub}_brain.nii.gz").is_file():
            continue
        healthy, sick, lesion, brain, affine = make_scan(
            case["index"], case["grid"], case["class"], case.get("anatomy", "template")
        )
        save(sick, affine, work / "bids" / sub / "anat" / f"{sub}_T1w.nii.gz", np.int16)
        if case["class"] is not None:
            given, given_affine = mask_for_app(lesion, affine, mask_kind, erode_mm)
            save(given, given_affine, work / "bids" / sub / "anat" / f"{sub}_label-lesion_roi.nii.gz", np.uint8)
        if case["grid"] == "iso1" or case["class"] is None:
            save(sick, affine, work / "bids_nomask" / sub / "anat" / f"{sub}_T1w.nii.gz", np.int16)
        save(healthy, affine, truth / f"{sub}_T1w.nii.gz", np.int16)
        save(lesion, affine, truth / f"{sub}_lesion.nii.gz", np.uint8)
        save(brain, affine, truth / f"{sub}_brain.nii.gz", np.uint8)


# --------------------------------------------------------------------------- running the app


def run_app(
    bids: Path, out: Path, work: Path, model: Path | None, extra: list[str], nprocs: int = 1, stripped: bool = True
) -> float:
    """One participant-level run; ``stripped``: the scans are brains (``--skull-stripped``), not heads."""
    if (out / "done").is_file():
        return float((out / "done").read_text())
    cmd = [
        sys.executable,
        "-m",
        "bids_usb",
        str(bids),
        str(out),
        "participant",
        "-w",
        str(work),
        *(["--skull-stripped"] if stripped else []),
        "--skip-bids-validation",
        "--nprocs",
        str(nprocs),
        "--omp-nthreads",
        "1",
        "--n-samples",
        "1",
        "--seed",
        "0",
        *extra,
    ]
    if model is not None:
        cmd += ["--model", str(model)]
    clock, clock_start = time.perf_counter(), time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - clock
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    (out / "done").write_text(f"{seconds:.1f}")
    (out / "node_seconds.json").write_text(json.dumps(node_seconds(work, started=clock_start)))
    return seconds


def run_parameters(out: Path, subs) -> dict:
    """The sampling parameters a run used, as the app wrote them into the sidecar of the first of
    ``subs`` it healed (so the results say what ran, not what the defaults were believed to be).
    Give lesioned scans: a control without a mask runs in detect mode whatever the run's options."""
    for sub in subs:
        sidecar = app_output(out, sub).with_name(f"sub-{sub}_desc-healed_T1w.json")
        if sidecar.is_file():
            return json.loads(sidecar.read_text()).get("USB", {})
    return {}


def model_sha256(out: Path, subs) -> str | None:
    """The weights the app healed with, as its sidecars cite them: what ties a result to a model
    (the model card reads only results measured on its own weights)."""
    return run_parameters(out, subs).get("Model", {}).get("SHA256")


def node_seconds(work: Path, started: float) -> dict[str, dict[str, float]]:
    """Seconds of the USB and native-composite nodes that ran in this run (cached ones did not)."""
    from nipype.utils.filemanip import loadpkl

    out: dict[str, dict[str, float]] = {}
    for node in ("usb", "to_native"):
        for path in work.glob(f"bids_usb_wf/*/{node}/result_{node}.pklz"):
            if path.stat().st_mtime >= started:
                out.setdefault(node, {})[path.parent.parent.name] = float(loadpkl(str(path)).runtime.duration)
    return out


def app_output(out: Path, sub: str, desc: str = "healed", suffix: str = "T1w") -> Path:
    return out / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-{desc}_{suffix}.nii.gz"


# --------------------------------------------------------------------------- baselines


def registered_template(out: Path, sub: str, anat: Path) -> np.ndarray:
    """The 1 mm MNI template moved onto the scan through the app's own registration."""
    from bids_usb.preprocessing import Registration
    from bids_usb.preprocessing import to_native as app_to_native

    template = template_1mm()
    xfm = next((out / f"sub-{sub}" / "anat").glob("*_xfm.mat"))
    moving = nib.Nifti1Image(template.t1w.astype(np.float32), np.asarray(template.affine))
    original = nib.load(str(anat))
    return np.asanyarray(app_to_native(moving, original, Registration(xfm)).dataobj, dtype=np.float32)


# --------------------------------------------------------------------------- metrics


def inpainting_metrics(pred, truth, lesioned, lesion, brain) -> dict[str, float]:
    import torch
    from inpainting.challenge_metrics_2023 import generate_metrics

    # The lesion's box with a margin wider than SSIM's window: the metrics only read the lesion's
    # voxels, and the whole brain would cost minutes per method at 1 mm. The normalisation uses the
    # input outside the lesion over the whole brain, as the challenge does.
    box = bounding_box(lesion, 8)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float32)[box]))[None]  # noqa: E731
    voided = np.asarray(lesioned, dtype=np.float32)[(brain > 0) & ~(lesion > 0)]
    m = generate_metrics(
        prediction=t(pred),
        target=t(truth),
        normalization_tensor=torch.from_numpy(voided),
        mask=torch.from_numpy(lesion[box] > 0)[None],
    )
    return {"ssim": float(m["ssim"]), "psnr": float(m["psnr"]), "mse": float(m["mse"])}


def edit_region_check(out: Path, sub: str, pred, lesioned, given, zooms) -> dict[str, float]:
    """What the app changed, against its own edit region: the voxels that differ from the input
    outside ``desc-editregion`` (the promise is none), the region's and the given mask's volume
    (a mask 1 mm too large must not make the app rewrite more than it grew to)."""
    path = app_output(out, sub, "editregion", "mask")
    if not path.is_file():
        return {}
    region = np.asanyarray(nib.load(str(path)).dataobj) > 0
    voxel_ml = float(np.prod(zooms)) / 1000
    changed = np.asarray(pred) != np.asarray(lesioned)
    return {
        "changed_outside_edit_region": int((changed & ~region).sum()),
        "changed_ml": float(changed.sum()) * voxel_ml,
        "edit_region_ml": float(region.sum()) * voxel_ml,
        "given_ml": float((np.asarray(given) > 0).sum()) * voxel_ml,
    }


def bounding_box(mask, margin: int):
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def atropos(image, brain, affine) -> np.ndarray:
    """Labels 1 CSF, 2 GM, 3 WM (k-means initialised, so ordered by intensity on T1w)."""
    import ants

    from bids_usb.preprocessing import to_ants

    img = to_ants(nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine))
    msk = to_ants(nib.Nifti1Image((np.asarray(brain) > 0).astype(np.float32), affine))
    seg = ants.atropos(a=img, m="[0.1,1x1x1]", c="[3,0]", i="kmeans[3]", x=msk)
    return seg["segmentation"].numpy().astype(np.uint8)


def tissue_scores(pred, truth_seg, lesion, brain, affine, zooms) -> dict[str, float]:
    seg = atropos(pred, brain, affine)
    near = ndimage.distance_transform_edt(~(lesion > 0), sampling=zooms) <= 3.0
    out = {}
    for label, name in ((1, "csf"), (2, "gm"), (3, "wm")):
        a, b = (seg == label) & near, (truth_seg == label) & near
        out[f"dice_{name}"] = float(2 * (a & b).sum() / (a.sum() + b.sum())) if (a.sum() + b.sum()) else float("nan")
    voxel_ml = float(np.prod(zooms)) / 1000
    for label, name in ((2, "gm"), (3, "wm")):
        out[f"{name}_volume_error_ml"] = float(((seg == label).sum() - (truth_seg == label).sum()) * voxel_ml)
    return out


def lesion_box(lesion, zooms, margin_mm: float = 25.0):
    """The box around the lesion that tissue segmentation sees: enough context for Atropos."""
    return bounding_box(lesion, int(np.ceil(margin_mm / min(zooms))))


def crop(arrays, box):
    return [np.asarray(a)[box] for a in arrays]


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "scratch" / "healing")
    parser.add_argument("--cases-per-class", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument(
        "--classes", default=None, help="comma-separated lesion classes (and 'control') to run; default all"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated USB methods; default {','.join(USB_METHODS)} (also: {','.join(EXTRA_METHODS)})",
    )
    parser.add_argument("--no-detect", action="store_true", help="skip the mask-free detection run")
    parser.add_argument(
        "--nprocs",
        type=int,
        default=1,
        help="scans the app processes at once (its own --nprocs, one thread each); "
        "wall times then count that many scans at a time",
    )
    parser.add_argument("--results", default="healing.json", help="file name under benchmarks/results/")
    parser.add_argument(
        "--anatomy",
        choices=("template", "colin", "colin-head"),
        default="template",
        help="template: brains synthesised from the MNI template; colin: Colin 27, a real head that is not the "
        "template (apt-get install mricron-data), skull-stripped; colin-head: the same with its scalp, stripped by "
        "the app itself (no --skull-stripped), as users bring scans. Use a --work of its own.",
    )
    parser.add_argument(
        "--mask",
        choices=MASK_KINDS,
        default="exact",
        help="the masks given to the app (scores stay on the whole true lesion). Use a --work of its own.",
    )
    parser.add_argument("--grids", default=",".join(GRIDS), help=f"comma-separated native grids ({', '.join(GRIDS)})")
    parser.add_argument(
        "--erode-mm",
        type=float,
        default=0.0,
        help="give the app masks without the lesion's outer ERODE_MM (an under-segmented manual mask); "
        "scores stay on the whole lesion. Use a --work of its own.",
    )
    args = parser.parse_args(argv)
    try:  # the scoring comes last: fail before an hour of app runs, not after
        import inpainting  # noqa: F401
    except ImportError:
        parser.error("the BraTS metrics are missing: pip install -e '.[bench]' (inpainting==0.0.12), then rerun")
    work = args.work.absolute()
    if args.anatomy != "template" and not (COLIN.is_file() and COLIN_HEAD.is_file()):
        parser.error(f"{COLIN}: Colin 27 is missing; apt-get install mricron-data, then rerun")
    stripped = args.anatomy != "colin-head"
    cases = [c for c in plan(args.cases_per_class, args.anatomy) if c["grid"] in args.grids.split(",")]
    if args.classes:
        keep = set(args.classes.split(","))
        cases = [c for c in cases if (c["class"] or "control") in keep]
    methods = {**USB_METHODS, **EXTRA_METHODS}
    chosen = args.methods.split(",") if args.methods else list(USB_METHODS)
    usb_methods = {name: methods[name] for name in chosen}
    clock = time.perf_counter()
    write_datasets(work, cases, args.erode_mm, args.mask)
    print(f"datasets written ({time.perf_counter() - clock:.0f} s)", flush=True)
    wall = {}
    for method, extra in usb_methods.items():
        wall[method] = run_app(
            work / "bids", work / "out" / method, work / "work", args.model, extra, args.nprocs, stripped
        )
        print(f"{method}: {wall[method]:.0f} s for {len(cases)} scans", flush=True)
    if not args.no_detect:
        wall["usb_detect"] = run_app(
            work / "bids_nomask",
            work / "out" / "usb_detect",
            work / "work_nomask",
            args.model,
            ["--heal-mode", "detect"],
            args.nprocs,
            stripped,
        )
        print(f"usb_detect: {wall['usb_detect']:.0f} s", flush=True)
    sweep_runs = {}
    if not args.no_sweep:
        iso = [c["sub"] for c in cases if c["grid"] == "iso1" and c["class"]]
        for t_start, steps, samples in SWEEP:
            name = "sweep_" + sweep_name(t_start, steps, samples)
            extra = [
                "--n-samples",
                str(samples),
                "--heal-mode",
                "mask",
                "--t-start",
                str(t_start),
                "--steps",
                str(steps),
                "--participant-label",
                *iso,
            ]
            sweep_runs[name] = {
                "t_start": t_start,
                "steps": steps,
                "samples": samples,
                "seconds": run_app(
                    work / "bids", work / "out" / name, work / "work", args.model, extra, args.nprocs, stripped
                ),
            }
            print(f"{name}: {sweep_runs[name]['seconds']:.0f} s", flush=True)

    rows, control_rows, detect_rows, sweep_rows, figure_cases = [], [], [], [], {}
    for case in cases:
        sub = case["sub"]
        truth_img = nib.load(str(work / "truth" / f"sub-{sub}_T1w.nii.gz"))
        truth = np.asanyarray(truth_img.dataobj).astype(np.float32)
        lesion = np.asanyarray(nib.load(str(work / "truth" / f"sub-{sub}_lesion.nii.gz")).dataobj) > 0
        brain = np.asanyarray(nib.load(str(work / "truth" / f"sub-{sub}_brain.nii.gz")).dataobj) > 0
        anat = work / "bids" / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
        lesioned = np.asanyarray(nib.load(str(anat)).dataobj).astype(np.float32)
        zooms = truth_img.header.get_zooms()[:3]
        if case["class"] is None and args.no_detect:
            continue
        if case["class"] is None:
            for method, out in (("usb_detect", work / "out" / "usb_detect"),):
                healed = np.asanyarray(nib.load(str(app_output(out, sub))).dataobj).astype(np.float32)
                det_path = app_output(out, sub, "detected", "mask")
                detected = (
                    np.asanyarray(nib.load(str(det_path)).dataobj) > 0 if det_path.is_file() else np.zeros_like(brain)
                )
                control_rows.append(
                    {
                        "sub": sub,
                        "grid": case["grid"],
                        "method": method,
                        "unchanged_fraction": float((healed[brain] == lesioned[brain]).mean()),
                        "detected_ml": float(detected.sum() * np.prod(zooms) / 1000),
                    }
                )
                print(
                    f"{sub}: unchanged {control_rows[-1]['unchanged_fraction']:.4f}, detected {control_rows[-1]['detected_ml']:.2f} ml",
                    flush=True,
                )
            continue
        # The baselines fill what the app was given (the whole lesion unless --erode-mm).
        given = given_on_image_grid(anat.parent / f"sub-{sub}_label-lesion_roi.nii.gz", anat)
        first_run = work / "out" / next(iter(usb_methods))
        preds = {
            "none": lesioned,
            "wm_fill": wm_fill(lesioned, given, brain=brain, rng=np.random.default_rng(case["index"])),
            "graft": template_graft(lesioned, given, registered_template(first_run, sub, anat), brain=brain),
            "lift": lift_fill(lesioned, given, brain=brain, spacing=zooms),
        }
        for method in usb_methods:
            preds[method] = np.asanyarray(nib.load(str(app_output(work / "out" / method, sub))).dataobj).astype(
                np.float32
            )
        if case["grid"] == "iso1" and not args.no_detect:
            out = work / "out" / "usb_detect"
            preds["usb_detect"] = np.asanyarray(nib.load(str(app_output(out, sub))).dataobj).astype(np.float32)
            det_path = app_output(out, sub, "detected", "mask")
            detected = (
                np.asanyarray(nib.load(str(det_path)).dataobj) > 0 if det_path.is_file() else np.zeros_like(lesion)
            )
            dice = float(2 * (detected & lesion).sum() / (detected.sum() + lesion.sum()))
            detect_rows.append(
                {
                    "sub": sub,
                    "class": case["class"],
                    "lesion_ml": float(lesion.sum() * np.prod(zooms) / 1000),
                    "dice": dice,
                    "detected_ml": float(detected.sum() * np.prod(zooms) / 1000),
                }
            )
        box = lesion_box(lesion, zooms)
        t_c, l_c, b_c = crop([truth, lesion, brain], box)
        sub_affine = truth_img.affine.copy()
        sub_affine[:3, 3] = truth_img.affine[:3, :3] @ np.array([s.start for s in box]) + truth_img.affine[:3, 3]
        truth_seg = atropos(t_c, b_c, sub_affine)
        volume_ml = float(lesion.sum() * np.prod(zooms) / 1000)
        for method, pred in preds.items():
            row = {
                "sub": sub,
                "anatomy": case["anatomy"],
                "mask": args.mask,
                "grid": case["grid"],
                "class": case["class"],
                "lesion_ml": volume_ml,
                "method": method,
                **inpainting_metrics(pred, truth, lesioned, lesion, brain),
                **tissue_scores(crop([pred], box)[0], truth_seg, l_c, b_c, sub_affine, zooms),
            }
            if method in usb_methods:
                row.update(edit_region_check(work / "out" / method, sub, pred, lesioned, given, zooms))
            rows.append(row)
        print(
            f"{sub} ({volume_ml:.1f} ml): " + "  ".join(f"{r['method']} {r['psnr']:.1f}" for r in rows[-len(preds) :]),
            flush=True,
        )
        if case["grid"] == "iso1" and case["class"] not in figure_cases:
            figure_cases[case["class"]] = (truth, preds, lesion)
        if sweep_runs and case["grid"] == "iso1":
            for name, spec in sweep_runs.items():
                pred = np.asanyarray(nib.load(str(app_output(work / "out" / name, sub))).dataobj).astype(np.float32)
                sweep_rows.append(
                    {
                        "sub": sub,
                        "class": case["class"],
                        **spec,
                        **inpainting_metrics(pred, truth, lesioned, lesion, brain),
                    }
                )

    result = summarise(rows, control_rows, detect_rows, sweep_rows, wall, cases, args)
    write_text(RESULTS / args.results, json.dumps(result, indent=2) + "\n")
    if args.results == "healing.json":  # the full run makes the figure
        figure(figure_cases)
    print(json.dumps(result["summary"], indent=1))
    return 0


def mean(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarise(rows, control_rows, detect_rows, sweep_rows, wall, cases, args) -> dict:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = ("psnr", "ssim", "mse", "dice_csf", "dice_gm", "dice_wm", "gm_volume_error_ml", "wm_volume_error_ml")
    summary = {"all": {m: {k: mean([r[k] for r in rows if r["method"] == m]) for k in metrics} for m in methods}}
    for klass in CLASSES:
        summary[klass] = {
            m: {k: mean([r[k] for r in rows if r["method"] == m and r["class"] == klass]) for k in metrics}
            for m in methods
        }
    for grid in GRIDS:
        summary[f"grid_{grid}"] = {
            m: {k: mean([r[k] for r in rows if r["method"] == m and r["grid"] == grid]) for k in ("psnr", "ssim")}
            for m in methods
        }
    for m in methods:
        outside = [
            r["changed_outside_edit_region"] for r in rows if r["method"] == m and "changed_outside_edit_region" in r
        ]
        if outside:
            summary["all"][m]["changed_outside_edit_region_max"] = max(outside)
    n_scans = len(cases)
    node_times = {}
    for run_dir in sorted((args.work.absolute() / "out").iterdir()):
        path = run_dir / "node_seconds.json"
        if path.is_file():
            times = json.loads(path.read_text())
            node_times[run_dir.name] = {node: mean(list(v.values())) for node, v in times.items()}
    sweep = {}
    for t_start, steps, samples in SWEEP:
        name = sweep_name(t_start, steps, samples)
        sel = [r for r in sweep_rows if (r["t_start"], r["steps"], r.get("samples", 1)) == (t_start, steps, samples)]
        if sel:
            sweep[name] = {
                "t_start": t_start,
                "steps": steps,
                "samples": samples,
                "psnr": mean([r["psnr"] for r in sel]),
                "ssim": mean([r["ssim"] for r in sel]),
                "seconds_all_scans": sel[0]["seconds"],
                "usb_node_seconds_per_scan": node_times.get(f"sweep_{name}", {}).get("usb", float("nan")),
            }
    return {
        "command": "python benchmarks/healing.py"
        + (f" --model {args.model}" if args.model else "")
        + f" --cases-per-class {args.cases_per_class}"
        + (f" --classes {args.classes}" if args.classes else "")
        + (f" --methods {args.methods}" if args.methods else "")
        + (" --no-sweep" if args.no_sweep else "")
        + (" --no-detect" if args.no_detect else "")
        + (f" --nprocs {args.nprocs}" if args.nprocs != 1 else "")
        + (f" --erode-mm {args.erode_mm}" if args.erode_mm else "")
        + (f" --anatomy {args.anatomy}" if args.anatomy != "template" else "")
        + (f" --mask {args.mask}" if args.mask != "exact" else "")
        + (f" --grids {args.grids}" if args.grids != ",".join(GRIDS) else "")
        + (f" --results {args.results}" if args.results != "healing.json" else ""),
        "date": time.strftime("%Y-%m-%d"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),  # orders a day's runs (the model card keeps the newest)
        "model": str(args.model or "bundled demo"),
        "model_sha256": model_sha256(
            args.work.absolute() / "out" / "usb_mask", [c["sub"] for c in cases if c["class"]]
        ),
        "seed": SEED,
        "n_scans": n_scans,
        "wall_seconds_per_run": wall,
        "wall_seconds_per_scan": {k: v / n_scans for k, v in wall.items()},
        "mean_node_seconds_per_scan": node_times,
        "parameters": {
            run_dir.name: run_parameters(run_dir, [c["sub"] for c in cases if c["class"]])
            for run_dir in sorted((args.work.absolute() / "out").iterdir())
            if run_dir.name in wall or run_dir.name.startswith("sweep_")
        },
        "summary": summary,
        "controls": control_rows,
        "detection": detect_rows,
        "detection_dice_5ml_plus": mean([r["dice"] for r in detect_rows if r["lesion_ml"] >= 5]),
        "sweep": sweep,
        "cases": rows,
        "sweep_cases": sweep_rows,
    }


def figure(figure_cases) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not figure_cases:
        return
    methods = ["truth", "none", "wm_fill", "graft", "usb_mask", "usb_acg", "usb_detect"]
    fig, axes = plt.subplots(
        len(figure_cases), len(methods), figsize=(1.9 * len(methods), 2.1 * len(figure_cases)), squeeze=False
    )
    for row, (klass, (truth, preds, lesion)) in enumerate(figure_cases.items()):
        z = int(np.argmax(lesion.sum(axis=(0, 1))))
        vmax = float(np.percentile(truth[truth > 0], 99.5))
        for col, method in enumerate(methods):
            ax = axes[row, col]
            img = truth if method == "truth" else preds.get(method)
            if img is not None:
                ax.imshow(np.rot90(img[:, :, z]), cmap="gray", vmin=0, vmax=vmax)
                ax.contour(np.rot90(lesion[:, :, z]), levels=[0.5], colors="r", linewidths=0.4)
            ax.set_title(f"{method}" if row == 0 else "", fontsize=8)
            ax.set_ylabel(klass if col == 0 else "", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "healing.png", dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
