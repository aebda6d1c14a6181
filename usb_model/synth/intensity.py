"""Random contrast of a brain image: tissue intensities, gamma, bias field, blur, noise.

Why: the model must not learn one scanner's look. From a template with tissue maps the image
is re-synthesized with random per-tissue means (T1w-like: WM > GM > CSF; FLAIR-like:
GM > WM >> CSF), keeping part of the template's own detail (deep grey nuclei, texture) as a
residual; then every image gets a random gamma, a smooth multiplicative bias field, an
occasional slight blur and Gaussian noise. Everything stays zero outside the brain
(skull-stripped), and the result is scaled so its 99.5th brain percentile sits at ``top``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["ContrastParams", "tissue_image", "augment_contrast", "TEMPLATE_MEANS"]

#: Mean T1w intensity of (CSF, GM, WM) where the template's tissue probability exceeds 0.8.
TEMPLATE_MEANS = np.array([0.31, 0.65, 0.86], dtype=np.float32)


@dataclass(frozen=True)
class ContrastParams:
    gamma_log: float = 0.25  # gamma = exp(U(-g, g))
    bias_std: float = 0.1  # std of the log bias field at its control points
    bias_points: tuple[int, int] = (3, 5)
    blur_probability: float = 0.5
    blur_sigma: float = 0.6  # voxels, at most
    noise_std: float = 0.03  # at most, relative to the brain's 99.5th percentile
    residual: tuple[float, float] = (0.6, 1.1)  # share of template detail kept on re-synthesis

    @classmethod
    def light(cls) -> ContrastParams:
        """For real scans, which already carry their own contrast, noise and bias."""
        return cls(gamma_log=0.1, bias_std=0.05, blur_probability=0.0, noise_std=0.01)


def _tissue_means(contrast: str, rng: np.random.Generator) -> np.ndarray:
    """Random (CSF, GM, WM) means in a plausible order for the contrast."""
    if contrast == "T1w":
        wm = rng.uniform(0.8, 0.95)
        gm = wm * rng.uniform(0.66, 0.84)
        csf = wm * rng.uniform(0.15, 0.45)
    elif contrast == "FLAIR":
        wm = rng.uniform(0.5, 0.65)
        gm = wm * rng.uniform(1.15, 1.4)
        csf = wm * rng.uniform(0.08, 0.3)
    else:
        raise ValueError(f"contrast must be 'T1w' or 'FLAIR', got {contrast!r}")
    return np.array([csf, gm, wm], dtype=np.float32)


def tissue_image(t1w, csf, gm, wm, contrast: str, rng: np.random.Generator, params: ContrastParams) -> np.ndarray:
    """Re-synthesize an image from tissue maps with random tissue means, plus template detail.

    ``image = sum_k p_k mu_k + r * (t1w - sum_k p_k mu_k^template)``; for FLAIR the T1w detail
    changes sign with the contrast (GM/WM swap), so the residual is kept smaller there.
    """
    mu = _tissue_means(contrast, rng)
    base = csf * mu[0] + gm * mu[1] + wm * mu[2]
    template_base = csf * TEMPLATE_MEANS[0] + gm * TEMPLATE_MEANS[1] + wm * TEMPLATE_MEANS[2]
    r = float(rng.uniform(*params.residual))
    if contrast == "FLAIR":
        r *= 0.3
    return base + r * (t1w - template_base)


def _smooth_field(shape, rng: np.random.Generator, points: tuple[int, int], std: float) -> np.ndarray:
    n = [int(rng.integers(points[0], points[1] + 1)) for _ in range(3)]
    ctrl = torch.as_tensor(rng.normal(0.0, std, size=(1, 1, *n)), dtype=torch.float32)
    return F.interpolate(ctrl, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _robust_top(image: np.ndarray, mask: np.ndarray) -> float:
    """99.5th percentile of brain voxels, from a fixed strided subsample (fast, deterministic)."""
    values = image[::2, ::2, ::2][mask[::2, ::2, ::2]]
    if values.size == 0:
        values = image[mask]
    return float(np.percentile(values, 99.5)) if values.size else 1.0


def augment_contrast(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    params: ContrastParams = ContrastParams(),
    top: float = 1.0,
) -> np.ndarray:
    """Gamma, bias, blur and noise on a brain image; float32 in [0, 1], zero outside ``mask``."""
    img = np.clip(np.asarray(image, dtype=np.float32), 0.0, None) * mask
    scale = _robust_top(img, mask)
    img /= max(scale, 1e-6)
    gamma = float(np.exp(rng.uniform(-params.gamma_log, params.gamma_log)))
    np.power(img, gamma, out=img)
    if params.bias_std > 0:
        img *= np.exp(_smooth_field(img.shape, rng, params.bias_points, params.bias_std))
    blur = rng.random() < params.blur_probability
    sigma = float(rng.uniform(0.2, params.blur_sigma)) if params.blur_sigma > 0.2 else 0.0
    if blur and sigma > 0:
        img = ndimage.gaussian_filter(img, sigma, mode="constant", truncate=3.0)
    noise_std = float(rng.uniform(0.0, params.noise_std))
    if noise_std > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise_std)
    img *= np.float32(top / max(_robust_top(img, mask), 1e-6))
    np.clip(img, 0.0, 1.0, out=img)
    img *= mask
    return img
