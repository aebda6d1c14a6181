"""Which derivative files one participant image produces, with their sidecars."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from usb_model.atomic import atomic_write

from . import derivatives as d
from .images import check_orientation
from .model import TEMPLATE_SPACE
from .native import from_ras


def write_participant_outputs(
    *,
    output_dir: Path,
    bids_dir: Path,
    anat: Path,
    entities: dict[str, Any],
    suffix: str,
    task: str,
    files: dict[str, str | None],
    parameters: dict[str, Any],
    model: dict[str, Any],
    lesion_source: Path | None,
    res_label: str,
    orientation: str | None = None,
) -> dict[str, str]:
    """Copy a finished image's results from the work directory into the derivatives dataset.

    ``files`` holds work-directory paths: edited, edit_region, lesion_native, uncertainty,
    brain_mask_ras, preproc_ras, transform, image_model, edited_model, lesion_model.
    Returns {role: written path}.
    """
    output_dir, anat = Path(output_dir), Path(anat)
    # Only the grid and orientation are needed here (the data were checked and read upstream).
    original = check_orientation(nib.load(str(anat)), anat, "image", orientation)
    src = d.bids_uri("raw", bids_dir, anat)
    sources = [src]
    if lesion_source is not None:
        try:
            sources.append(d.bids_uri("raw", bids_dir, lesion_source))
        except ValueError:  # a mask from outside the raw dataset
            sources.append(Path(lesion_source).resolve().as_uri())
    desc = "healed" if task == "heal" else "lesioned"
    usb_meta = {"Task": task, **{_camel(k): v for k, v in parameters.items()}, "Model": model}
    written: dict[str, str] = {}

    def put_nifti(role, img, suffix_, meta, **ents):
        path = d.derivative_path(output_dir, entities, suffix_, **ents)
        d.write_nifti(img, path)
        d.write_json(meta, path.with_name(path.name.replace(".nii.gz", ".json")))
        written[role] = str(path)

    put_nifti(
        role="edited",
        img=nib.load(files["edited"]),
        suffix_=suffix,
        desc=desc,
        meta={
            "SkullStripped": False,
            "Sources": sources,
            "USB": usb_meta,
            "Description": (
                f"The input {suffix} with the lesion "
                f"{'replaced by healthy-looking tissue' if task == 'heal' else 'drawn in'} by USB; "
                "every voxel outside the edit region is the input's own value."
            ),
        },
    )
    put_nifti(
        role="edit_region",
        img=nib.load(files["edit_region"]),
        suffix_="mask",
        desc="editregion",
        meta={
            "Type": "ROI",
            "Sources": [src],
            "Description": "Voxels that may differ from the input (the lesion grown by the blend band).",
        },
    )
    if files.get("lesion_native") and not files.get("detected"):
        put_nifti(
            role="lesion",
            img=nib.load(files["lesion_native"]),
            suffix_="mask",
            desc="lesion",
            meta={
                "Type": "Lesion",
                "Sources": sources,
                "Description": "The lesion healed" if task == "heal" else "The lesion embedded",
            },
        )
    if files.get("anomaly"):
        how = (
            f"USB healing without a mask (mode detect): |decode(healed) - decode(input)| from a free healing pass "
            f"starting at t = {parameters.get('detect_t_start')}, averaged over samples, smoothed, on the model grid, "
            "mapped to this grid; in normalised intensity ([0, 1] = the brain's bright tissue)."
        )
        put_nifti(
            role="anomaly",
            img=nib.load(files["anomaly"]),
            suffix_=suffix,
            desc="anomaly",
            meta={"SkullStripped": False, "Sources": [src], "Units": "normalised intensity", "Description": how},
        )
    if files.get("detected"):
        put_nifti(
            role="detected",
            img=nib.load(files["detected"]),
            suffix_="mask",
            desc="detected",
            meta={
                "Type": "Lesion",
                "Sources": [src],
                "Description": (
                    f"Lesion detected by USB: the anomaly map above {parameters.get('detect_threshold')}, "
                    f"connected components of at least {parameters.get('detect_min_ml')} ml; this is the region healed."
                ),
            },
        )
    if files.get("uncertainty"):
        put_nifti(
            role="uncertainty",
            img=nib.load(files["uncertainty"]),
            suffix_=suffix,
            desc="uncertainty",
            meta={
                "SkullStripped": False,
                "Sources": sources,
                "Units": "input intensity units",
                "Description": f"Voxelwise standard deviation over {parameters.get('n_samples')} USB samples, inside the edit region.",
            },
        )
    brain = from_ras(nib.load(files["brain_mask_ras"]), original)
    brain = nib.Nifti1Image(np.asanyarray(brain.dataobj).astype(np.uint8), original.affine)
    put_nifti(
        role="brain_mask",
        img=brain,
        suffix_="mask",
        desc="brain",
        meta={
            "Type": "Brain",
            "Sources": [src],
            "Description": "Brain mask (deepbet, or the non-zero voxels of a skull-stripped input).",
        },
    )
    preproc = from_ras(nib.load(files["preproc_ras"]), original)
    put_nifti(
        role="preproc",
        img=nib.Nifti1Image(np.asanyarray(preproc.dataobj, dtype=np.float32), original.affine),
        suffix_=suffix,
        desc="preproc",
        meta={"SkullStripped": False, "Sources": [src], "Description": "N4 bias-field corrected input."},
    )
    space = {"space": TEMPLATE_SPACE, "resolution": res_label}
    grid = {"Resolution": f"The USB model grid ({res_label.replace('p', '.')} voxels) in {TEMPLATE_SPACE}"}
    put_nifti(
        role="preproc_model",
        img=nib.load(files["image_model"]),
        suffix_=suffix,
        desc="preproc",
        **space,
        meta={
            **grid,
            "SkullStripped": True,
            "Sources": [src],
            "Description": "The input on the model grid as USB saw it: bias-corrected, skull-stripped, affinely registered, intensities normalised to [0, 1].",
        },
    )
    put_nifti(
        role="edited_model",
        img=nib.load(files["edited_model"]),
        suffix_=suffix,
        desc=desc,
        **space,
        meta={
            **grid,
            "SkullStripped": True,
            "Sources": [src],
            "USB": usb_meta,
            "Description": "USB's output on the model grid (before the native composite).",
        },
    )
    if files.get("lesion_model"):
        put_nifti(
            role="lesion_model",
            img=nib.load(files["lesion_model"]),
            suffix_="mask",
            desc="lesion",
            **space,
            meta={**grid, "Type": "Lesion", "Sources": sources},
        )
    xfm = d.derivative_path(
        output_dir, entities, "xfm", ".mat", **{"from": suffix, "to": TEMPLATE_SPACE, "mode": "image"}
    )
    xfm.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(xfm, lambda tmp: shutil.copyfile(files["transform"], tmp))
    written["transform"] = str(xfm)
    return written


def _camel(name: str) -> str:
    special = {
        "band_mm": "BandMM",
        "detect_t_start": "DetectTStart",
        "detect_min_ml": "DetectMinML",
        "t_start": "TStart",
        "alpha0": "Alpha0",
        "k": "K",
        "lcg_eta": "LCGEta",
        "ddim_eta": "DDIMEta",
        "acg": "ACG",
        "lcg": "LCG",
        "n_samples": "NSamples",
    }
    return special.get(name, "".join(p.capitalize() for p in name.split("_")))
