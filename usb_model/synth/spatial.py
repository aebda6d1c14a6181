"""Random spatial transforms of a brain on its grid: affine plus smooth elastic deformation.

Why: a single template only becomes many brains through geometry. Rotation, scaling and
translation mimic residual registration error and head size; a smooth random displacement
(a coarse random field upsampled trilinearly) varies the anatomy (ventricles, gyri, shape).
Everything is built in millimetres, so anisotropic grids deform physically, and applied with
one ``torch.nn.functional.grid_sample`` call over all channels (the costly part of a
160^3 sample, about 0.3 s for five maps on one core).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SpatialParams", "random_grid", "warp"]


@dataclass(frozen=True)
class SpatialParams:
    """Ranges of the random transform (all symmetric about the identity)."""

    rotation_deg: float = 10.0
    scale: float = 0.10  # log-uniform per axis in [1/(1+s), 1+s]
    translation_mm: float = 4.0
    elastic_mm: float = 3.0  # standard deviation of the control-point displacements
    elastic_points: tuple[int, int] = (4, 7)  # control points per axis (random in range)

    @classmethod
    def light(cls) -> SpatialParams:
        """For real scans: small pose changes, barely any anatomy change."""
        return cls(rotation_deg=5.0, scale=0.04, translation_mm=2.0, elastic_mm=0.75)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_grid(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    rng: np.random.Generator,
    params: SpatialParams = SpatialParams(),
) -> torch.Tensor:
    """A ``grid_sample`` sampling grid (1, D, H, W, 3) for a random affine + elastic transform.

    Output voxel ``x`` (mm, about the grid centre) reads the input at
    ``A x + t + u(x)``, with ``A`` a rotation times per-axis scaling and ``u`` the elastic field.
    """
    shape = tuple(int(s) for s in shape)
    zooms = np.asarray(voxel_size, dtype=np.float64)
    angles = np.deg2rad(rng.uniform(-params.rotation_deg, params.rotation_deg, size=3))
    log_s = np.log1p(params.scale)
    scales = np.exp(rng.uniform(-log_s, log_s, size=3))
    a_mm = _rotation(angles) @ np.diag(scales)
    t_mm = rng.uniform(-params.translation_mm, params.translation_mm, size=3)
    # In grid_sample's normalised coordinates (align_corners=True): n = 2 i / (N - 1) - 1,
    # i.e. mm = n * half_mm with half_mm = (N - 1) / 2 * zoom.
    half = (np.asarray(shape) - 1) / 2.0 * zooms
    half = np.where(half > 0, half, 1.0)
    a_norm = np.diag(1 / half) @ a_mm @ np.diag(half)
    t_norm = t_mm / half
    # grid_sample's last dimension is ordered (W, H, D) = array axes (2, 1, 0).
    perm = [2, 1, 0]
    theta = np.zeros((3, 4))
    theta[:, :3] = a_norm[np.ix_(perm, perm)]
    theta[:, 3] = t_norm[perm]
    theta_t = torch.as_tensor(theta, dtype=torch.float32)[None]
    grid = F.affine_grid(theta_t, (1, 1, *shape), align_corners=True)
    if params.elastic_mm > 0:
        n_ctrl = [int(rng.integers(params.elastic_points[0], params.elastic_points[1] + 1)) for _ in range(3)]
        ctrl = rng.normal(0.0, params.elastic_mm, size=(3, *n_ctrl)) / half[:, None, None, None]
        ctrl_t = torch.as_tensor(ctrl[perm], dtype=torch.float32)[None]
        disp = F.interpolate(ctrl_t, size=shape, mode="trilinear", align_corners=True)
        grid += disp[0].permute(1, 2, 3, 0)[None]
    return grid


def warp(channels: Sequence[np.ndarray], grid: torch.Tensor) -> list[np.ndarray]:
    """Resample 3D arrays (same shape) through ``grid`` with trilinear interpolation, zeros outside."""
    stack = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float32) for c in channels]))[None]
    out = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return [c.numpy() for c in out[0]]
