"""The one intensity convention shared by training and inference.

A brain is scaled so that the 99.5th percentile of its voxels maps to 1, then clipped to
[0, 1], zero outside the brain. Robust to a few hot voxels (plain min-max is not), and since
the training data (usb_model.synth) and the BIDS App's preprocessing both go through this
function, the model sees the same intensity distribution in both.

A model trained elsewhere may have used another rule; its config says which
(``GridConfig.normalisation``). The authors' published USB models use min-max: on a
skull-stripped scan (background 0) that is the brain's maximum mapped to 1, the 100th percentile.
"""

from __future__ import annotations

import numpy as np

NORMALISATION_PERCENTILE = 99.5
# Where that percentile lands, per contrast. FLAIR keeps headroom above normal tissue for the
# bright lesions it is used to show (usb_model.synth scales its FLAIR brains the same way).
TOP = {"T1w": 1.0, "FLAIR": 0.75}
# GridConfig.normalisation -> the percentile of the brain's intensities that maps to the top.
NORMALISATIONS = {"percentile": NORMALISATION_PERCENTILE, "minmax": 100.0}


def normalisation_percentile(method: str) -> float:
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown intensity normalisation {method!r}; choose one of {', '.join(NORMALISATIONS)}")
    return NORMALISATIONS[method]


def intensity_top(contrast: str, method: str = "percentile") -> float:
    """Where the scale lands: the contrast's headroom for this project's rule, 1 for min-max."""
    return TOP[contrast] if method == "percentile" else 1.0


def brain_scale(image: np.ndarray, brain: np.ndarray, percentile: float = NORMALISATION_PERCENTILE) -> float:
    """The divisor that maps the brain's intensities to [0, 1]."""
    values = np.asarray(image)[np.asarray(brain) > 0]
    if values.size == 0:
        raise ValueError("the brain mask is empty")
    scale = float(np.percentile(values, percentile))
    if scale <= 0:
        raise ValueError("the brain has no positive intensities")
    return scale


def normalise_brain(
    image: np.ndarray, brain: np.ndarray, scale: float | None = None, contrast: str = "T1w", method: str = "percentile"
) -> np.ndarray:
    """``image / scale * top`` inside the brain, clipped to [0, 1]; 0 outside (``method``: see
    ``NORMALISATIONS``; ``scale`` defaults to that rule's percentile of the brain)."""
    scale = brain_scale(image, brain, normalisation_percentile(method)) if scale is None else scale
    scaled = np.asarray(image, dtype=np.float32) / scale * intensity_top(contrast, method)
    return np.clip(np.where(np.asarray(brain) > 0, scaled, 0.0), 0.0, 1.0).astype(np.float32)
