"""The derivative files one participant image produces: their names, sidecars and how each is written.

The workflow runs one sink node per output (``interfaces.derivatives.DerivativesSink``), each
naming its ``role`` here; this module is the one table of what a role is called and says.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from usb_model.atomic import atomic_write

from . import derivatives as d
from .images import check_orientation
from .model import TEMPLATE_SPACE
from .native import from_ras


@dataclass(frozen=True)
class Output:
    """One derivative: BIDS suffix (``None``: the input's own), ``desc``, whether it lies on the
    model grid (``space-``/``res-``), and how the work file becomes the output (``copy``; or
    ``mask``/``image``: from the work directory's RAS grid back onto the input's grid)."""

    suffix: str | None
    desc: str
    model_grid: bool = False
    convert: str = "copy"


#: Every role a sink can write. ``edited`` and ``edited_model`` take the task's desc.
OUTPUTS: dict[str, Output] = {
    "edited": Output(None, "{task}"),
    "edit_region": Output("mask", "editregion"),
    "lesion": Output("mask", "lesion"),
    "lesion_given": Output("mask", "lesiongiven"),
    "anomaly": Output(None, "anomaly"),
    "detected": Output("mask", "detected"),
    "uncertainty": Output(None, "uncertainty"),
    "brain_mask": Output("mask", "brain", convert="mask"),
    "preproc": Output(None, "preproc", convert="image"),
    "preproc_model": Output(None, "preproc", model_grid=True),
    "edited_model": Output(None, "{task}", model_grid=True),
    "lesion_model": Output("mask", "lesion", model_grid=True),
    "transform": Output("xfm", ""),
}


@dataclass(frozen=True)
class ImageContext:
    """What every output of one input image shares: where it goes and what its sidecar cites."""

    output_dir: Path
    bids_dir: Path
    anat: Path
    entities: dict[str, Any]
    suffix: str
    task: str
    res_label: str
    model: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    lesion_source: Path | None = None
    orientation: str | None = None
    growth: dict[str, Any] = field(default_factory=dict)  # heal: how the given mask was grown

    @property
    def desc(self) -> str:
        return "healed" if self.task == "heal" else "lesioned"

    @property
    def source(self) -> str:
        return d.bids_uri("raw", self.bids_dir, self.anat)

    @property
    def sources(self) -> list[str]:
        """The input, and the lesion mask's file where one was given."""
        sources = [self.source]
        if self.lesion_source is not None:
            try:
                sources.append(d.bids_uri("raw", self.bids_dir, self.lesion_source))
            except ValueError:  # a mask from outside the raw dataset
                sources.append(Path(os.path.abspath(self.lesion_source)).as_uri())
        return sources


def output_path(role: str, ctx: ImageContext) -> Path:
    """Where ``role`` of this image is written (BIDS entities in the schema's order)."""
    out = OUTPUTS[role]
    if role == "transform":
        ents = {"from": ctx.suffix, "to": TEMPLATE_SPACE, "mode": "image"}
        return d.derivative_path(ctx.output_dir, ctx.entities, "xfm", ".mat", **ents)
    ents = {"desc": out.desc.format(task=ctx.desc)}
    if out.model_grid:
        ents.update(space=TEMPLATE_SPACE, resolution=ctx.res_label)
    return d.derivative_path(ctx.output_dir, ctx.entities, out.suffix or ctx.suffix, **ents)


def write_output(role: str, in_file: str | Path, ctx: ImageContext) -> str:
    """Write one finished work file as derivative ``role`` (image and sidecar each atomically)."""
    out = OUTPUTS[role]
    path = output_path(role, ctx)
    if role == "transform":
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: shutil.copyfile(in_file, tmp))
        return str(path)
    img = nib.load(str(in_file))
    if out.convert != "copy":
        # Only the grid and orientation are needed here (the data were checked and read upstream).
        original = check_orientation(nib.load(str(ctx.anat)), ctx.anat, "image", ctx.orientation)
        native = np.asanyarray(from_ras(img, original).dataobj)
        data = native.astype(np.uint8) if out.convert == "mask" else native.astype(np.float32)
        img = nib.Nifti1Image(data, original.affine)
    d.write_nifti(img, path)
    d.write_json(sidecar(role, ctx), path.with_name(path.name.replace(".nii.gz", ".json")))
    return str(path)


def sidecar(role: str, ctx: ImageContext) -> dict[str, Any]:
    """The JSON sidecar of ``role``: what the file is and where it came from."""
    p = ctx.parameters
    usb = {"Task": ctx.task, **{_camel(k): v for k, v in p.items()}, "Model": ctx.model}
    grid = {"Resolution": f"The USB model grid ({ctx.res_label.replace('p', '.')} voxels) in {TEMPLATE_SPACE}"}
    src = [ctx.source]
    if role == "edited":
        change = "replaced by healthy-looking tissue" if ctx.task == "heal" else "drawn in"
        return {
            "SkullStripped": False,
            "Sources": ctx.sources,
            "USB": usb,
            "Description": (
                f"The input {ctx.suffix} with the lesion {change} by USB; "
                "every voxel outside the edit region is the input's own value."
            ),
        }
    if role == "edit_region":
        return {
            "Type": "ROI",
            "Sources": src,
            "Description": "Voxels that may differ from the input (the lesion grown by the blend band).",
        }
    if role == "lesion":
        what = "The lesion healed" if ctx.task == "heal" else "The lesion embedded"
        if ctx.growth:
            g = ctx.growth
            if not g.get("changed", g["healed_voxels"] != g["given_voxels"]):
                what += ": the given mask, unchanged by its growth (MaskGrowth)"
            else:
                # fit_dark can also drop a CSF-dark lesion's healthy-looking outer layer
                changed = "grown" if g["healed_voxels"] > g["given_voxels"] else "fitted"
                what += f": the given mask ({g['given_ml']:.2f} ml) {changed} to {g['healed_ml']:.2f} ml (MaskGrowth)"
            return {"Type": "Lesion", "Sources": ctx.sources, "Description": what, "MaskGrowth": g}
        return {"Type": "Lesion", "Sources": ctx.sources, "Description": what}
    if role == "lesion_given":
        return {
            "Type": "Lesion",
            "Sources": ctx.sources,
            "Description": "The lesion mask as given, on this image's grid; the mask healed is desc-lesion.",
        }
    if role == "anomaly":
        how = (
            "USB healing without a mask (mode detect): |decode(healed) - decode(input)| from a free healing pass "
            f"starting at t = {p.get('detect_t_start')}, averaged over samples, smoothed, on the model grid, "
            "mapped to this grid; in normalised intensity ([0, 1] = the brain's bright tissue)."
        )
        return {"SkullStripped": False, "Sources": src, "Units": "normalised intensity", "Description": how}
    if role == "detected":
        return {
            "Type": "Lesion",
            "Sources": src,
            "Description": (
                f"Lesion detected by USB: the anomaly map above {p.get('detect_threshold')}, "
                f"connected components of at least {p.get('detect_min_ml')} ml; this is the region healed."
            ),
        }
    if role == "uncertainty":
        return {
            "SkullStripped": False,
            "Sources": ctx.sources,
            "Units": "input intensity units",
            "Description": (
                f"Voxelwise standard deviation over {p.get('n_samples')} USB samples, inside the edit region."
            ),
        }
    if role == "brain_mask":
        return {
            "Type": "Brain",
            "Sources": src,
            "Description": "Brain mask (deepbet, or the non-zero voxels of a skull-stripped input).",
        }
    if role == "preproc":
        return {"SkullStripped": False, "Sources": src, "Description": "N4 bias-field corrected input."}
    if role == "preproc_model":
        return {
            **grid,
            "SkullStripped": True,
            "Sources": src,
            "Description": (
                "The input on the model grid as USB saw it: bias-corrected, skull-stripped, affinely registered, "
                "intensities normalised to [0, 1]."
            ),
        }
    if role == "edited_model":
        return {
            **grid,
            "SkullStripped": True,
            "Sources": src,
            "USB": usb,
            "Description": "USB's output on the model grid (before the native composite).",
        }
    if role == "lesion_model":
        return {**grid, "Type": "Lesion", "Sources": ctx.sources}
    raise ValueError(f"unknown derivative role {role!r}; known: {', '.join(OUTPUTS)}")


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
