"""The one intensity convention shared by training and inference.

A brain is scaled so that the 99.5th percentile of its voxels maps to 1, then clipped to
[0, 1], zero outside the brain. Robust to a few hot voxels (plain min-max is not), and since
the training data (usb_model.synth) and the BIDS App's preprocessing both go through this
function, the model sees the same intensity distribution in both.
"""

from __future__ import annotations

import numpy as np

NORMALISATION_PERCENTILE = 99.5


def brain_scale(image: np.ndarray, brain: np.ndarray, percentile: float = NORMALISATION_PERCENTILE) -> float:
    """The divisor that maps the brain's intensities to [0, 1]."""
    values = np.asarray(image)[np.asarray(brain) > 0]
    if values.size == 0:
        raise ValueError("the brain mask is empty")
    scale = float(np.percentile(values, percentile))
    if scale <= 0:
        raise ValueError("the brain has no positive intensities")
    return scale


def normalise_brain(image: np.ndarray, brain: np.ndarray, scale: float | None = None) -> np.ndarray:
    scale = brain_scale(image, brain) if scale is None else scale
    return np.clip(np.where(np.asarray(brain) > 0, np.asarray(image, dtype=np.float32) / scale, 0.0), 0.0, 1.0).astype(np.float32)
