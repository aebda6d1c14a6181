"""Putting an edit back into its input: outside the edit region the input is kept bit for bit.

The edit region is the lesion mask grown by ``outer_mm``; inside ``inner_mm`` of the mask the
edited image is taken whole, and between the two distances the weight falls linearly so that
there is no seam. Weights are exactly 0 beyond ``outer_mm``, which is what lets a caller promise
that voxels outside the region are unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def blend_weight(mask: np.ndarray, spacing, inner_mm: float, outer_mm: float) -> np.ndarray:
    """Weight of the edited image per voxel: 1 near the mask, 0 beyond ``outer_mm``. The band
    has no default here: it is the checkpoint's ``SamplingConfig.band_mm``, one value for the
    Python API and the app alike."""
    if outer_mm <= inner_mm:
        raise ValueError(f"outer_mm ({outer_mm}) must exceed inner_mm ({inner_mm})")
    mask = np.asarray(mask) > 0
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    weight = (outer_mm - distance) / (outer_mm - inner_mm)
    return np.clip(weight, 0.0, 1.0).astype(np.float32)


def composite(original: np.ndarray, edited: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """original where weight == 0 (exactly), edited where weight == 1, a linear blend between.

    The result has the original's dtype; integer images are rounded and clipped to its range.
    """
    original = np.asarray(original)
    out = original.astype(np.float64) * (1 - weight) + np.asarray(edited, dtype=np.float64) * weight
    if np.issubdtype(original.dtype, np.integer):
        info = np.iinfo(original.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(original.dtype)
    keep = weight <= 0
    out[keep] = original[keep]
    return out


def heal_composite(
    original: np.ndarray, healed: np.ndarray, change: np.ndarray, lesion: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """A healed lesion put back into its input.

    Inside ``lesion`` the healed image itself (the fill); around it, within the blend band,
    the input plus ``weight * change``, where ``change = decode(healed) - decode(input)``: the
    model's edit with the autoencoder's reconstruction error cancelled, so voxels the model did
    not mean to change keep their own detail. Beyond the band (weight 0) the input, bit for bit.
    """
    original = np.asarray(original)
    edited = original.astype(np.float64) + np.asarray(change, dtype=np.float64)
    lesion = np.asarray(lesion) > 0
    edited[lesion] = np.asarray(healed, dtype=np.float64)[lesion]
    full = np.where(lesion, 1.0, weight).astype(np.float32)
    return (
        composite(original, edited, full)
        if not np.issubdtype(original.dtype, np.floating)
        else _float_composite(original, edited, full)
    )


def _float_composite(original: np.ndarray, edited: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``composite`` for a float image whose edit is already ``original + change``: no negative
    intensities where the input had none."""
    if original.min() >= 0:
        edited = np.maximum(edited, 0.0)
    return composite(original, edited, weight)


def within_local_range(values: np.ndarray, reference: np.ndarray, region: np.ndarray, size: int = 3) -> np.ndarray:
    """``values`` inside ``region`` clipped to the range ``reference`` spans over each voxel's
    ``size``^3 neighbourhood; elsewhere ``values`` as they are. ``values`` may carry leading
    axes (samples): the bounds are computed once and apply to each.

    The model's change to a fill is a field made on the coarse model grid: laid over a fill with
    1 mm anatomy it can push a voxel past its neighbours' contrast (sulcal CSF lifted to grey
    matter, a flat white-matter fill mottled). Bounded by the fill's own local range, the change
    may still move intensities towards the brain around the lesion, but it adds no new extremes:
    on the end-to-end benchmark (benchmarks/residual_variants.py) this never lowered lesion PSNR
    and raised it on average.
    """
    values = np.array(values, dtype=np.float64, copy=True)
    region = np.asarray(region) > 0
    if not region.any():
        return values
    margin = size // 2
    idx = np.argwhere(region)
    box = tuple(
        slice(max(int(lo) - margin, 0), min(int(hi) + margin + 1, n))
        for lo, hi, n in zip(idx.min(0), idx.max(0), region.shape)
    )
    ref = np.asarray(reference, dtype=np.float64)[box]
    lo, hi = ndimage.minimum_filter(ref, size=size), ndimage.maximum_filter(ref, size=size)
    inside = region[box]
    crop = values[(..., *box)]
    crop[..., inside] = np.clip(crop[..., inside], lo[inside], hi[inside])
    return values
