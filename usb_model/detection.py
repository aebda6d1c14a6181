"""Lesion detection from healing: where the healed brain departs from the input, there is a lesion.

The anomaly map is ``|decode(healed latent) - decode(input latent)|``, averaged over samples and
smoothed. Comparing two decodings (not the decoded image with the input) cancels the
autoencoder's own reconstruction error, which would otherwise light up the whole brain. The map
is thresholded, and connected components smaller than a minimum volume are dropped: what is
left is the detected lesion mask, and only it is healed and composited into the input, so a
healthy brain comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

POLARITIES = ("any", "brighter", "darker")


def anomaly_map(
    healed: np.ndarray,
    reconstruction: np.ndarray,
    brain: np.ndarray,
    sigma_vox: float = 0.7,
    polarity: str = "any",
) -> np.ndarray:
    """How far healing moved each voxel, smoothed, zero outside the brain.

    ``healed``: (n, *grid) or (*grid) decoded healed samples; ``reconstruction``: the decoded
    input latent. ``polarity`` "any": the mean over samples of |healed - reconstruction|, then
    smoothed by ``sigma_vox`` voxels (against single-voxel speckle). "brighter" / "darker": the
    signed mean difference, smoothed, where healing brightened (a T1w lesion is darker than the
    tissue it replaced) or darkened (FLAIR, T2): a healthy brain's departures go both ways, a
    lesion's one way (benchmarks/detection_controls.py: Colin 27's healthy head clears at 0.097
    this way, 0.229 the other, on the 2026-12-06 model).
    """
    if polarity not in POLARITIES:
        raise ValueError(f"unknown detect polarity {polarity!r}; choose one of {', '.join(POLARITIES)}")
    healed = np.asarray(healed, dtype=np.float32)
    if healed.ndim == reconstruction.ndim:
        healed = healed[None]
    signed = healed - np.asarray(reconstruction, dtype=np.float32)[None]
    diff = np.abs(signed).mean(axis=0) if polarity == "any" else signed.mean(axis=0)
    if sigma_vox > 0:
        diff = ndimage.gaussian_filter(diff, sigma_vox)
    if polarity != "any":
        diff = np.maximum(diff if polarity == "brighter" else -diff, 0.0)
    return (diff * (np.asarray(brain) > 0)).astype(np.float32)


def detect_lesions(anomaly: np.ndarray, threshold: float, min_ml: float, voxel_size: Sequence[float]) -> np.ndarray:
    """Voxels of ``anomaly`` above ``threshold`` in connected components of at least ``min_ml``."""
    candidate = np.asarray(anomaly) > threshold
    if not candidate.any():
        return candidate
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3, 3)))
    voxel_ml = float(np.prod(voxel_size)) / 1000.0
    sizes = ndimage.sum_labels(candidate, labels, index=np.arange(1, n + 1)) * voxel_ml
    keep = np.flatnonzero(sizes >= min_ml) + 1
    return np.isin(labels, keep)
