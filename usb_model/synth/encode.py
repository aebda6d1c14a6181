"""Draw a lesion into a healthy image: darkening (T1w-like) or brightening (FLAIR-like).

Why: the healthy image is the ground truth for healing; the lesioned one is the model's
pathological input. Upstream encodes ``I <- I + P (mu + sigma n)`` with ``mu`` a random
fraction of the mean intensity under the lesion (negative for T1w) and clamps at 0; the paper
itself calls that look unrealistic. Here the same formula gets two touches of realism:
- ``n`` is smooth texture (Gaussian-filtered white noise, unit variance), not voxel noise;
- ``P`` is a soft partial-volume map: 1 in the lesion's core, falling towards its edge
  (Gaussian-smoothed mask), and 0 outside it, so the lesioned image equals the healthy one
  everywhere outside the mask (a property the composites downstream can rely on).
Output stays in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["encode_lesion", "DEFAULT_STRENGTH"]

#: Range of |mu| / mean(I in lesion) per contrast: upstream's [0.75, 1.0] darkening for T1w.
DEFAULT_STRENGTH = {"T1w": (0.75, 1.0), "FLAIR": (0.3, 0.7)}


def _bbox(mask: np.ndarray, margin: int, shape) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def encode_lesion(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    contrast: str = "T1w",
    *,
    strength: Sequence[float] | None = None,
    texture: float = 0.25,
    texture_sigma: float = 1.5,
    rim_sigma: tuple[float, float] = (0.6, 1.5),
) -> np.ndarray:
    """``image`` with the lesion ``mask`` drawn in (a new float32 array, values in [0, 1]).

    ``strength``: range of ``|mu| / mean(image in lesion)`` (default per contrast, see
    ``DEFAULT_STRENGTH``); ``texture``: largest ``sigma / mean`` (upstream: 1/4);
    ``texture_sigma``: smoothness of the texture, voxels; ``rim_sigma``: range of the
    partial-volume blur, voxels. An empty mask returns an unchanged copy.
    """
    if contrast not in DEFAULT_STRENGTH:
        raise ValueError(f"contrast must be 'T1w' or 'FLAIR', got {contrast!r}")
    out = np.array(image, dtype=np.float32, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != out.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {out.shape}")
    if not mask.any():
        return out
    lo, hi = strength if strength is not None else DEFAULT_STRENGTH[contrast]
    fraction = float(rng.uniform(lo, hi))
    rough = float(rng.uniform(0.0, texture))
    rim = float(rng.uniform(*rim_sigma))
    box = _bbox(mask, 3, mask.shape)
    m = mask[box]
    region = out[box]
    mean = float(region[m].mean())
    soft = ndimage.gaussian_filter(m.astype(np.float32), rim, mode="constant") * m
    soft /= max(float(soft.max()), 1e-6)  # tiny lesions still reach full contrast
    noise = rng.standard_normal(m.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, texture_sigma, mode="reflect")
    noise /= max(float(noise.std()), 1e-6)
    sign = -1.0 if contrast == "T1w" else 1.0
    delta = soft * (np.float32(sign * fraction * mean) + np.float32(rough * mean) * noise)
    out[box] = np.clip(region + delta, 0.0, 1.0)
    return out
