"""Putting an edit back into its input: outside the edit region the input is kept bit for bit.

The edit region is the lesion mask grown by ``outer_mm``; inside ``inner_mm`` of the mask the
edited image is taken whole, and between the two distances the weight falls linearly so that
there is no seam. Weights are exactly 0 beyond ``outer_mm``, which is what lets a caller promise
that voxels outside the region are unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def blend_weight(mask: np.ndarray, spacing=(1.0, 1.0, 1.0), inner_mm: float = 2.0, outer_mm: float = 6.0) -> np.ndarray:
    """Weight of the edited image per voxel: 1 near the mask, 0 beyond ``outer_mm``."""
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
