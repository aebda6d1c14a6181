"""Placing a synthetic brain on a participant's own (scanner-like) grid.

Why: real datasets are not on the model grid. They come in any orientation (RAS, LPS, PIR,
...), with anisotropic voxels and sometimes oblique axes, and the head sits at some pose in
the scanner. The synthetic BIDS datasets must show all of that so the app's preprocessing
(reorientation, registration, resampling back to native space) meets it in tests.

Spaces: *template world* (MNI mm, where brains are synthesized), *scanner world* (mm,
``pose @ template world``), and the native voxel grid (``affine``: voxel -> scanner world).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["NativeGrid", "orientation_axes", "native_grid", "random_pose", "to_native", "rotation_matrix"]

_DIRECTIONS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees), as a 3x3 matrix."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def orientation_axes(code: str) -> np.ndarray:
    """3x3 matrix whose column i is the world direction of array axis i (e.g. 'LPS')."""
    code = code.upper()
    if len(code) != 3 or sorted(_DIRECTIONS[c][0] for c in code) != [0, 1, 2]:
        raise ValueError(f"invalid orientation code {code!r}")
    axes = np.zeros((3, 3))
    for i, c in enumerate(code):
        world_axis, sign = _DIRECTIONS[c]
        axes[world_axis, i] = sign
    return axes


@dataclass(frozen=True)
class NativeGrid:
    shape: tuple[int, int, int]
    affine: np.ndarray  # voxel -> scanner world (mm)
    orientation: str
    voxel_size: tuple[float, float, float]
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


def native_grid(
    orientation: str,
    voxel_size: Sequence[float],
    centre: Sequence[float],
    fov_mm: Sequence[float] = (200.0, 256.0, 224.0),
    oblique_deg: Sequence[float] = (0.0, 0.0, 0.0),
    shape: Sequence[int] | None = None,
) -> NativeGrid:
    """A grid in ``orientation`` (array-axis order) whose centre voxel lies at ``centre``.

    ``voxel_size`` is per array axis; ``fov_mm`` is (left-right, anterior-posterior,
    inferior-superior) and sets the shape unless ``shape`` is given; ``oblique_deg`` tilts the
    axes (a rotation in world space), giving an oblique affine.
    """
    axes = orientation_axes(orientation)
    zooms = np.asarray(voxel_size, dtype=float)
    if shape is None:
        fov_array = np.abs(axes.T) @ np.asarray(fov_mm, dtype=float)  # FOV along each array axis
        shape = np.maximum(np.ceil(fov_array / zooms).astype(int), 1)
    shape = tuple(int(s) for s in shape)
    rot = rotation_matrix(oblique_deg)
    affine = np.eye(4)
    affine[:3, :3] = rot @ axes @ np.diag(zooms)
    affine[:3, 3] = np.asarray(centre, float) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return NativeGrid(shape, affine, orientation.upper(), tuple(float(z) for z in zooms), tuple(oblique_deg))


def random_pose(rng: np.random.Generator, rotation_deg: float = 8.0, translation_mm: float = 10.0) -> np.ndarray:
    """A random rigid head pose (4x4): template world -> scanner world."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_matrix(rng.uniform(-rotation_deg, rotation_deg, size=3))
    pose[:3, 3] = rng.uniform(-translation_mm, translation_mm, size=3)
    return pose


def to_native(
    array: np.ndarray,
    src_affine: np.ndarray,
    grid: NativeGrid,
    pose: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """Resample ``array`` (template-world grid ``src_affine``) onto the native ``grid``.

    Where the native voxels are coarser than the source's along a source axis (thick slices)
    the source is first blurred there, like a slice profile: a Gaussian with the variance of a
    box as wide as the extra size (``sqrt(step^2 - 1) / sqrt(12)`` source voxels), so that a
    resampled 0/1 mask is close to the fraction of each native voxel it covers, and
    thick-slice images look acquired rather than subsampled.
    """
    m = np.linalg.inv(src_affine) @ np.linalg.inv(pose) @ grid.affine  # native voxel -> source voxel
    data = np.asarray(array, dtype=np.float32)
    if order > 0:
        step = np.abs(m[:3, :3]).max(axis=1)  # source voxels spanned per native voxel, per source axis
        sigma = np.sqrt(np.maximum(step**2 - 1.0, 0.0) / 12.0)
        if np.any(sigma > 0.1):
            data = ndimage.gaussian_filter(data, np.where(sigma > 0.1, sigma, 0.0), mode="constant")
    out = ndimage.affine_transform(
        data, m[:3, :3], m[:3, 3], output_shape=grid.shape, order=order, mode="constant", cval=0.0
    )
    return out.astype(np.float32, copy=False)
