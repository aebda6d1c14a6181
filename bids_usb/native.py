"""From the model grid back to the participant's own scan.

The model edits a normalised, bias-corrected, template-aligned copy of the brain. What goes
back is only the *change*: ``delta = edited - input`` on the model grid, mapped through the
inverse affine onto the exact native grid, multiplied by the normalisation scale and the N4
bias field (so that it is in the scanner's own intensity units and shading), and added to the
original voxels inside the edit region. Outside the region every voxel is the input's own
value, bit for bit, in the input's dtype, orientation and grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from usb_model.composite import blend_weight, composite

from . import preprocessing as prep

# Band of the blend between the edited and the original image, in mm from the edit region.
INNER_MM = 1.0
OUTER_MM = 4.0
# Without a lesion mask (heal only), the region is where the normalised image changed by more
# than this (a fraction of the brain's bright-tissue intensity).
CHANGE_THRESHOLD = 0.1


def from_ras(img_ras: nib.Nifti1Image, original: nib.Nifti1Image) -> nib.Nifti1Image:
    """Undo ``reorient_to_ras`` exactly (a permutation and flips: no interpolation)."""
    to_original = ornt_transform(axcodes2ornt("RAS"), io_orientation(original.affine))
    return img_ras.as_reoriented(to_original)


@dataclass
class NativeEdit:
    image: nib.Nifti1Image  # the composite, in the input's dtype and grid
    region: nib.Nifti1Image  # uint8: voxels that may differ from the input (blend weight > 0)
    weight: np.ndarray  # the blend weight itself (float32, native grid)


def edit_region(lesion_native: np.ndarray | None, delta_native: np.ndarray, spacing) -> np.ndarray:
    """The seed of the edit: the lesion mask when there is one, else the voxels that changed."""
    if lesion_native is not None and lesion_native.any():
        return lesion_native > 0
    return np.abs(delta_native) > CHANGE_THRESHOLD


def to_native_edit(
    original: nib.Nifti1Image,
    edited_model: nib.Nifti1Image,
    input_model: nib.Nifti1Image,
    registration: prep.Registration,
    scale: float,
    bias_ras: nib.Nifti1Image,
    lesion_native: np.ndarray | None,
) -> NativeEdit:
    """Compose the edit into ``original`` (the file as read: any orientation, any dtype)."""
    delta_model = np.asanyarray(edited_model.dataobj, dtype=np.float32) - np.asanyarray(input_model.dataobj, dtype=np.float32)
    delta_img = nib.Nifti1Image(delta_model, edited_model.affine)
    delta_native_norm = np.asanyarray(prep.to_native(delta_img, original, registration).dataobj, dtype=np.float32)
    bias = np.asanyarray(from_ras(bias_ras, original).dataobj, dtype=np.float32)
    spacing = original.header.get_zooms()[:3]
    seed = edit_region(lesion_native, delta_native_norm, spacing)
    weight = blend_weight(seed, spacing, inner_mm=INNER_MM, outer_mm=OUTER_MM)
    data = np.asanyarray(original.dataobj)
    edited = data.astype(np.float64) + delta_native_norm.astype(np.float64) * scale * bias
    edited = np.maximum(edited, 0.0) if data.min() >= 0 else edited  # no negative intensities where there were none
    out = composite(data, edited, weight)
    header = original.header.copy()
    image = nib.Nifti1Image(out, original.affine, header)
    image.set_data_dtype(data.dtype)
    region = nib.Nifti1Image((weight > 0).astype(np.uint8), original.affine)
    region.set_data_dtype(np.uint8)
    return NativeEdit(image=image, region=region, weight=weight)
