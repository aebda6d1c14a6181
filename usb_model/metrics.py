"""Image and cohort metrics for judging USB: pure functions on arrays, no files.

Paired metrics compare an output (a healed brain) with its ground truth over a region: the
whole brain, the lesion, the brain outside the lesion. They wrap well-kept implementations:

- ``masked_l1``: torchmetrics' mean absolute error over the region's voxels;
- ``masked_psnr``: torchmetrics' PSNR over the region's voxels with an explicit data range
  (``inf`` when the region is identical);
- ``masked_ssim``: scikit-image's ``structural_similarity(..., full=True)`` computed on the
  whole volume (its 7-voxel windows see the neighbourhood), then averaged over the region;
- ``dice``: MONAI's ``compute_dice`` on binary masks (1.0 when both are empty);
- ``mmd_rbf``: the unbiased squared MMD with a Gaussian (RBF) kernel on feature vectors
  (distances from ``torch.cdist``; bandwidth by the median heuristic). MONAI's ``MMDMetric``
  is the linear-kernel MMD only and torchmetrics has no RBF one, so this is the one metric
  written here (the estimator of Gretton et al. 2012, eq. 3);
- ``kid``: torchmetrics' ``KernelInceptionDistance`` (polynomial-kernel MMD averaged over
  random subsets) fed with the given feature vectors instead of Inception features.

An empty region gives ``nan`` (there is nothing to compare), never an error: a healthy
participant has no "inside the lesion".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "dice",
    "intensity_features",
    "kid",
    "masked_l1",
    "masked_psnr",
    "masked_ssim",
    "mmd_rbf",
    "region_mean",
    "ssim_map",
    "volume_ml",
]


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"prediction of shape {a.shape} and target of shape {b.shape} differ; resample one onto the other's grid"
        )
    return a, b


def _region(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask) > 0.5 if np.asarray(mask).dtype != bool else np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"mask of shape {m.shape} does not match the images' shape {tuple(shape)}")
    return m


def masked_l1(pred, target, mask=None) -> float:
    """Mean absolute difference over the voxels of ``mask`` (all voxels when None); nan if empty."""
    from torchmetrics.functional import mean_absolute_error

    a, b = _pair(pred, target)
    m = _region(mask, a.shape)
    if not m.any():
        return math.nan
    return float(mean_absolute_error(torch.from_numpy(a[m]), torch.from_numpy(b[m])))


def masked_psnr(pred, target, mask=None, *, data_range: float) -> float:
    """PSNR in dB over the voxels of ``mask``: ``10 log10(data_range^2 / MSE)``.

    ``data_range`` is required (the ground truth's intensity range, e.g. its brain's max - min):
    a range guessed from the data would differ between regions and make them incomparable.
    ``inf`` when the region is identical; nan when it is empty.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = _pair(pred, target)
    m = _region(mask, a.shape)
    if not m.any():
        return math.nan
    return float(peak_signal_noise_ratio(torch.from_numpy(a[m]), torch.from_numpy(b[m]), data_range=float(data_range)))


def ssim_map(pred, target, *, data_range: float, win_size: int = 7) -> np.ndarray:
    """The local SSIM of every voxel (scikit-image ``structural_similarity``, ``full=True``).

    Axes shorter than ``win_size`` shrink the window to the largest odd size that fits (at
    least 3). Compute it once and average it over several regions with ``region_mean``.
    """
    from skimage.metrics import structural_similarity

    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = _pair(pred, target)
    win = min(int(win_size), *(s if s % 2 else s - 1 for s in a.shape))
    if win < 3:
        raise ValueError(f"images of shape {a.shape} are too small for SSIM (an axis needs at least 3 voxels)")
    _, smap = structural_similarity(b, a, data_range=float(data_range), full=True, win_size=win)
    return smap


def region_mean(values, mask=None) -> float:
    """Mean of ``values`` over ``mask`` (all voxels when None); nan for an empty region."""
    v = np.asarray(values)
    m = _region(mask, v.shape)
    return float(np.mean(v[m])) if m.any() else math.nan


def masked_ssim(pred, target, mask=None, *, data_range: float, win_size: int = 7) -> float:
    """SSIM map of the whole volume (scikit-image, ``full=True``), averaged over ``mask``.

    Computing the map on the whole volume keeps each window's neighbourhood (a lesion's border
    is judged with its surroundings). nan for an empty region.
    """
    a, _ = _pair(pred, target)
    if not _region(mask, a.shape).any():
        return math.nan
    return region_mean(ssim_map(pred, target, data_range=data_range, win_size=win_size), mask)


def dice(pred, target) -> float:
    """Dice overlap of two binary masks (MONAI); 1.0 when both are empty."""
    from monai.metrics import compute_dice

    a = torch.from_numpy(np.asarray(pred) > 0.5 if np.asarray(pred).dtype != bool else np.asarray(pred))
    b = torch.from_numpy(np.asarray(target) > 0.5 if np.asarray(target).dtype != bool else np.asarray(target))
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    value = compute_dice(a[None, None].float(), b[None, None].float(), include_background=True, ignore_empty=False)
    return float(value.reshape(-1)[0])


def volume_ml(mask, voxel_size: Sequence[float]) -> float:
    """Volume of a binary mask in millilitres (voxel size in mm)."""
    m = np.asarray(mask)
    m = m > 0.5 if m.dtype != bool else m
    return float(m.sum()) * float(np.prod(np.asarray(voxel_size, dtype=np.float64))) / 1000.0


def _features(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.dim() != 2:
        raise ValueError(f"{what} must be a 2D array (samples x features), got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{what} needs at least 2 samples, got {t.shape[0]}")
    return t


def mmd_rbf(x, y, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x`` (n, d) and ``y`` (m, d), Gaussian kernel.

    ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``; without ``bandwidth`` the median of the
    pairwise distances of the pooled samples is used (the median heuristic). Near 0 when the
    two samples come from one distribution (it can be slightly negative: it is unbiased).
    """
    a, b = _features(x, "x"), _features(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} features, y has {b.shape[1]}")
    pooled = torch.cat([a, b])
    dist = torch.cdist(pooled, pooled)
    if bandwidth is None:
        off = dist[~torch.eye(len(pooled), dtype=torch.bool)]
        bandwidth = float(off.median()) if float(off.median()) > 0 else 1.0
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    k = torch.exp(-dist.pow(2) / (2.0 * bandwidth**2))
    n, m = len(a), len(b)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def kid(
    x,
    y,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance between reference features ``x`` and generated features ``y``.

    torchmetrics' ``KernelInceptionDistance`` with an identity feature extractor: the
    polynomial-kernel MMD averaged over ``subsets`` random subsets of ``min(subset_size, n, m)``
    samples; returns (mean, std). The subsets are drawn with ``seed`` (torch's global RNG is
    restored afterwards).
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _features(x, "x").float(), _features(y, "y").float()
    size = min(int(subset_size), len(a), len(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "saves all features in memory": intended here
        metric = KernelInceptionDistance(
            feature=torch.nn.Identity(), subsets=int(subsets), subset_size=size, degree=degree, gamma=gamma, coef=coef
        )
        metric.update(a, real=True)
        metric.update(b, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            mean, std = metric.compute()
    return float(mean), float(std)


def intensity_features(image, mask=None, bins: int = 32, upper: float = 1.25) -> np.ndarray:
    """A grid-independent descriptor of a brain image: the histogram (density) of its
    intensities inside ``mask`` (non-zero voxels when None), after dividing by the 99th
    percentile of those intensities, over ``bins`` bins on [0, ``upper``].

    Meant for cohort distances (MMD, KID) between images on different grids and intensity
    units (generated brains on the model grid, real scans on their own grids); it sees the
    tissue contrast distribution, not anatomy.
    """
    data = np.asarray(image, dtype=np.float64)
    region = data > 0 if mask is None else _region(mask, data.shape)
    values = data[region]
    if values.size == 0:
        raise ValueError("no voxel inside the mask: cannot describe an empty brain")
    scale = np.percentile(values, 99.0)
    if not scale > 0:
        raise ValueError("the brain's intensities are not positive")
    hist, _ = np.histogram(np.clip(values / scale, 0.0, upper), bins=bins, range=(0.0, upper), density=True)
    return hist.astype(np.float64)
