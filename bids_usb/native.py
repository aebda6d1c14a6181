"""From the model grid back to the participant's own scan.

The model edits a normalised, bias-corrected, template-aligned copy of the brain. Everything
that goes back is mapped through the inverse affine onto the exact native grid and multiplied
by the normalisation scale and the N4 bias field (the scanner's own intensity units and
shading). Healing: inside the lesion, the decoded healed brain (the fill); in the blend band,
the original voxels plus ``decode(healed) - decode(input)``, the model's change with the
autoencoder's reconstruction error cancelled. Embedding: the original plus ``edited - input``.
Outside the edit region every voxel is the input's own value, bit for bit, in the input's
dtype, orientation and grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from usb_model.composite import blend_weight, composite, within_local_range
from usb_model.fill import GIVEN_DARK_RATIO, prefill
from usb_model.template import template_1mm

from . import preprocessing as prep

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


def native_fill(
    original: nib.Nifti1Image,
    lesion: np.ndarray,
    kind: str,
    registration: prep.Registration,
    template_source: str = "nilearn",
    given: np.ndarray | None = None,
    brain: np.ndarray | None = None,
) -> np.ndarray:
    """The lesion of ``original`` filled by ``kind`` (usb_model.fill.prefill) on its own grid, in its
    own intensities: for a graft, the 1 mm MNI template (the copy ``template_source``, the model's
    own) moved onto the scan by its registration. ``given``: the mask as the user gave it, when
    ``lesion`` is it grown (``auto`` reads a CSF-dark lesion's choice on it). ``brain``: the brain
    mask on this grid; ``original`` is the file as given, often a whole head, and a fill that read
    the scalp as brain would take the fat's intensity for white matter's."""
    data = np.asanyarray(original.dataobj, dtype=np.float32)
    template = None
    if kind in ("graft", "auto"):
        mni = template_1mm(template_source)
        moving = nib.Nifti1Image(np.asarray(mni.t1w, dtype=np.float32), np.asarray(mni.affine))
        template = np.asanyarray(prep.to_native(moving, original, registration).dataobj, dtype=np.float32)
    return prefill(
        data,
        lesion,
        kind,
        template=template,
        spacing=original.header.get_zooms()[:3],
        given=given,
        given_dark=GIVEN_DARK_RATIO if given is not None else None,
        brain=brain,
    )


def _native(
    array: np.ndarray, like: nib.Nifti1Image, original: nib.Nifti1Image, registration: prep.Registration
) -> np.ndarray:
    moved = prep.to_native(nib.Nifti1Image(np.asarray(array, dtype=np.float32), like.affine), original, registration)
    return np.asanyarray(moved.dataobj, dtype=np.float32)


def to_native_edit(
    original: nib.Nifti1Image,
    edited_model: nib.Nifti1Image,
    input_model: nib.Nifti1Image,
    registration: prep.Registration,
    scale: float,
    bias_ras: nib.Nifti1Image,
    lesion_native: np.ndarray | None,
    *,
    healed_model: nib.Nifti1Image | None = None,
    change_model: nib.Nifti1Image | None = None,
    fill_native: np.ndarray | None = None,
    fill_change_model: nib.Nifti1Image | None = None,
    band_mm: tuple[float, float],
) -> NativeEdit:
    """Compose the edit into ``original`` (the file as read: any orientation, any dtype).

    With ``healed_model`` and ``change_model`` (healing) the lesion gets the healed brain and
    the band the decoded change; otherwise (embedding) the change is ``edited - input``. With
    ``fill_native`` and ``fill_change_model`` (``fill_residual``) the lesion gets the fill made on
    this grid plus the model's change to the fill instead of the healed brain itself, bounded by
    the fill's local range (``usb_model.composite.within_local_range``).
    ``band_mm`` is the blend band (the checkpoint's ``SamplingConfig.band_mm``).
    """
    if change_model is not None:
        delta_model = np.asanyarray(change_model.dataobj, dtype=np.float32)
    else:
        delta_model = np.asanyarray(edited_model.dataobj, dtype=np.float32) - np.asanyarray(
            input_model.dataobj, dtype=np.float32
        )
    delta_native_norm = _native(delta_model, edited_model, original, registration)
    bias = np.asanyarray(from_ras(bias_ras, original).dataobj, dtype=np.float32)
    spacing = original.header.get_zooms()[:3]
    seed = edit_region(lesion_native, delta_native_norm, spacing)
    weight = blend_weight(seed, spacing, inner_mm=band_mm[0], outer_mm=band_mm[1])
    data = np.asanyarray(original.dataobj)
    units = scale * bias.astype(np.float64)
    edited = data.astype(np.float64) + delta_native_norm.astype(np.float64) * units
    if healed_model is not None and lesion_native is not None and lesion_native.any():
        inside = lesion_native > 0
        if fill_native is not None and fill_change_model is not None:
            fill_change = _native(
                np.asanyarray(fill_change_model.dataobj, dtype=np.float32), fill_change_model, original, registration
            )
            fill = np.asarray(fill_native, np.float64)
            edited[inside] = fill[inside] + fill_change[inside] * units[inside]
            edited = within_local_range(edited, fill, inside)
        else:
            healed = _native(
                np.asanyarray(healed_model.dataobj, dtype=np.float32), healed_model, original, registration
            )
            edited[inside] = healed[inside] * units[inside]
        weight = np.where(inside, 1.0, weight).astype(np.float32)
    edited = np.maximum(edited, 0.0) if data.min() >= 0 else edited  # no negative intensities where there were none
    out = composite(data, edited, weight)
    header = original.header.copy()
    image = nib.Nifti1Image(out, original.affine, header)
    image.set_data_dtype(data.dtype)
    region = nib.Nifti1Image((weight > 0).astype(np.uint8), original.affine)
    region.set_data_dtype(np.uint8)
    return NativeEdit(image=image, region=region, weight=weight)
