"""Consistency guidance for editing (paper Sec. 3.2, eq. 12-15).

After every reverse step the latent is pulled back towards the input latent y0 by a voxelwise
weight lambda in [0, 1]: ``y_{t-1} <- y_{t-1} + lambda * (y0 - y_{t-1})``. Anatomy Consistency
Guidance (ACG) makes lambda small where the model's clean estimate disagrees with the input
(the lesion, which the model wants to change) and near 1 elsewhere (anatomy to keep). Lesion
Consistency Guidance (LCG) additionally frees the voxels inside the target lesion when a lesion
is embedded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def acg_alpha(t: int, alpha0: float, k: float, t_norm: float) -> float:
    """alpha_t = alpha0 * exp(-k t / T') (eq. 12).

    T' is ``t_start`` (as upstream does), so alpha runs from alpha0 * e^-k at the first edit
    step to alpha0 at the last: guidance tightens as the sample becomes clean.
    """
    return alpha0 * math.exp(-k * t / t_norm)


def acg_weight(y0: torch.Tensor, y0_hat: torch.Tensor, t: int, alpha0: float, k: float, t_norm: float) -> torch.Tensor:
    """lambda_diff = exp(-alpha_t |y0 - y0_hat_t|): 1 where the estimate equals the input."""
    return torch.exp(-acg_alpha(t, alpha0, k, t_norm) * (y0 - y0_hat).abs())


def soft_lesion_map(mask: torch.Tensor, latent_shape: tuple[int, ...], pool: int = 3) -> torch.Tensor:
    """x_lesion = AvgPool(x0): the mask's coverage of each latent voxel, softened by an average pool.

    The paper pools the mask latent; the mask's own coverage is used here instead because it
    lies in [0, 1] by construction, whatever the latent scale (upstream clamps the latent to
    [0, 1] for the same reason). ``mask`` is (N, 1, *grid) in {0, 1}.
    """
    coverage = F.adaptive_avg_pool3d(mask.float(), latent_shape[-3:])
    if pool > 1:
        coverage = F.avg_pool3d(coverage, pool, stride=1, padding=pool // 2, count_include_pad=False)
    return coverage.clamp(0, 1)


def lcg_weight(x_lesion: torch.Tensor, eta: float) -> torch.Tensor:
    """lambda_lesion = 1 - eta * x_lesion (eq. 14): 0 inside a solid lesion when eta = 1."""
    return 1.0 - eta * x_lesion


def apply_guidance(y_prev: torch.Tensor, y0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y_{t-1} <- y_{t-1} + lambda (y0 - y_{t-1}) (eq. 13 and 15)."""
    return y_prev + weight * (y0 - y_prev)
