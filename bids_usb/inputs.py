"""Checking an anatomical image and its lesion mask together, before preprocessing.

A mask on the image's own grid is used as is. A mask on another grid of the same space (its
voxels fall inside the head) is resampled with nearest neighbour onto the image's grid, with a
warning. A mask that lies outside the head once placed in world coordinates, or that names
another template space, is in another space: that is an error (65), since guessing a
registration for it would silently heal the wrong place.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from .derivatives import parse_entities
from .errors import DataError
from .images import check_head, load_image, load_mask, same_grid

# At least this share of the mask's voxels must land inside the head for "same space".
MIN_INSIDE_HEAD = 0.5
# A lesion mask may cover at most this share of the head's voxels (skull and scalp included):
# beyond it no brain is left to register and no healthy tissue to heal from. The workflow checks
# the same against the brain itself once the skull is stripped (``preprocessing.cost_mask``).
MAX_LESION_FRACTION = 0.5


@dataclass
class PreparedInputs:
    anat: nib.Nifti1Image
    lesion: nib.Nifti1Image | None  # binary uint8 on the anat's grid, or None


def _space(path: str | Path) -> str | None:
    return parse_entities(path).get("space")


def head_mask(img: nib.Nifti1Image) -> np.ndarray:
    """The voxels above 5% of the image's 99th percentile: the head, roughly (no skull stripping)."""
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, bool)
    return data > 0.05 * float(np.percentile(positive, 99))


def orientation_contradiction(mask: nib.Nifti1Image, anat: nib.Nifti1Image) -> tuple[str, str] | None:
    """The two orientations (``("LPS", "RAS")``) when ``mask`` has its image's voxel grid (shape and
    voxel sizes) but a header that orders or flips the axes differently, else None.

    A mask written from the image's voxel array with another tool's header is the usual cause:
    placed by its header it lands mirrored, healing healthy tissue and keeping the lesion. A mask
    resampled to another orientation on purpose is just as possible, so neither is guessed."""
    if mask.shape[:3] != anat.shape[:3]:
        return None
    zooms = [np.linalg.norm(np.asarray(a.affine)[:3, :3], axis=0) for a in (mask, anat)]
    if not np.allclose(zooms[0], zooms[1], rtol=1e-3):
        return None
    codes = "".join(nib.aff2axcodes(mask.affine)), "".join(nib.aff2axcodes(anat.affine))
    return codes if codes[0] != codes[1] else None


def prepare_inputs(
    anat_path: str | Path,
    mask_path: str | Path | None,
    task: str,
    orientation: str | None = None,
    mask_orientation: str | None = None,
) -> PreparedInputs:
    """The image and its mask, checked: readable, 3D, finite, oriented, a head, and a mask that
    lies in that head and leaves most of it untouched. ``orientation`` is ``--assume-orientation``;
    ``mask_orientation`` (``--mask-orientation image|header``) settles a mask whose header
    contradicts its image's on the same grid: its voxels on the image's grid, or as its header says."""
    anat = load_image(anat_path, "image", orientation)
    check_head(anat, Path(anat_path))
    if mask_path is None:
        if task == "embed":
            raise DataError(
                f"{anat_path}: embedding needs a lesion mask; pass --lesion-mask FILE (a template-space mask) or give the image a lesion mask"
            )
        return PreparedInputs(anat, None)
    if _space(mask_path) != _space(anat_path):
        raise DataError(
            f"{mask_path}: the lesion mask is in space {_space(mask_path) or 'native'} but the image is in "
            f"{_space(anat_path) or 'native'} space; give a mask on the image's own grid"
        )
    if mask_orientation == "image":
        mask = load_mask(mask_path, orientation=orientation or "voxel")  # the header is replaced below
        if mask.shape[:3] == anat.shape[:3]:
            mask = nib.Nifti1Image(np.asanyarray(mask.dataobj), anat.affine)
            mask.set_data_dtype(np.uint8)
    else:
        mask = load_mask(mask_path, orientation=orientation)
    contradiction = orientation_contradiction(mask, anat)
    if contradiction and mask_orientation != "header":
        raise DataError(
            f"{mask_path}: the lesion mask has its image's grid but its header says {contradiction[0]} where the "
            f"image's says {contradiction[1]}, so placed by its header it would be mirrored or turned; fix the "
            "mask's header (e.g. fslcpgeom IMAGE MASK), or say which is right with --mask-orientation image "
            "(its voxels lie on the image's grid) or --mask-orientation header (its header is right)"
        )
    if not same_grid(mask, anat):
        mask = _resample_mask(mask, anat, mask_path)
    lesion = np.asanyarray(mask.dataobj) > 0
    if not lesion.any():
        if task == "embed":
            raise DataError(f"{mask_path}: the lesion mask is empty; embedding needs at least one lesion voxel")
        warnings.warn(
            f"{mask_path}: the lesion mask is empty, so this image is healed as if it had none: lesions are "
            "detected from the model's anomaly map (--heal-mode detect), and where nothing is detected the "
            "image comes back unchanged",
            stacklevel=2,
        )
        return PreparedInputs(anat, None)
    head = head_mask(anat)
    covered = float((lesion & head).sum()) / max(int(head.sum()), 1)
    if covered > MAX_LESION_FRACTION:
        raise DataError(
            f"{mask_path}: the lesion mask covers {100 * covered:.0f}% of the head; too little brain would be "
            "left to register and heal from. Check that this is the lesion (not a brain mask) and that it is not inverted"
        )
    return PreparedInputs(anat, mask)


def _resample_mask(mask: nib.Nifti1Image, anat: nib.Nifti1Image, mask_path) -> nib.Nifti1Image:
    data = np.asanyarray(mask.dataobj) > 0
    if data.any():
        idx = np.argwhere(data)
        world = nib.affines.apply_affine(mask.affine, idx)
        vox = np.rint(nib.affines.apply_affine(np.linalg.inv(anat.affine), world)).astype(int)
        inside = np.all((vox >= 0) & (vox < np.array(anat.shape[:3])), axis=1)
        head = head_mask(anat)
        in_head = np.zeros(len(vox), bool)
        in_head[inside] = head[tuple(vox[inside].T)]
        if in_head.mean() < MIN_INSIDE_HEAD:
            raise DataError(
                f"{mask_path}: only {100 * in_head.mean():.0f}% of the lesion mask falls inside the head once placed "
                "on the image; it is in another space. Give a mask on the image's own grid"
            )
    warnings.warn(
        f"{mask_path}: the lesion mask is on another grid than its image; resampled with nearest neighbour",
        stacklevel=3,
    )
    out = resample_from_to(
        nib.Nifti1Image(data.astype(np.float32), mask.affine), (anat.shape[:3], anat.affine), order=0
    )
    binary = (np.asanyarray(out.dataobj) > 0.5).astype(np.uint8)
    img = nib.Nifti1Image(binary, anat.affine)
    img.set_data_dtype(np.uint8)
    return img
