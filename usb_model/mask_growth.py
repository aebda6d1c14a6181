"""Healing the lesion a mask points at, not only the voxels it lists.

Users' masks are drawn by hand or by another tool, often on another grid, and they under-cover
the lesion's partial-volume rim. A rim left outside the mask comes back as it went in, however
well the inside is healed. Two growths, each optional and recorded (``Growth``):

- ``grid``: a mask made on a coarser grid than the image is uncertain by that grid's voxel:
  grown by ``grid_factor`` of the mask grid's largest voxel edge (nearest-neighbour resampling
  alone misplaces its edge by up to half a voxel, and the coarse voxels that were labelled
  lesion at more than half coverage leave out the rest);
- ``image``: voxels within ``reach_mm`` of the mask, connected to it, whose intensity lies at
  least ``fraction`` of the way from the tissue around the lesion towards the lesion's own
  median: the rim the image itself shows.

Both are measured on the healing benchmark's degraded masks (benchmarks/fill_candidates.py);
the app's defaults come from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from .fill import brain_region, local_tissue

GROWTHS = ("auto", "grid", "image", "none")


@dataclass
class Growth:
    """What was done to a mask, for the output's sidecar."""

    method: str
    given_voxels: int
    healed_voxels: int
    steps: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def dilate_mm(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """``mask`` grown by ``mm`` (Euclidean, in world distances on an anisotropic grid)."""
    mask = np.asarray(mask) > 0
    if mm <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= mm


def grow_by_grid(mask, spacing, source_voxel_mm, *, grid_factor: float = 0.5, brain=None) -> tuple[np.ndarray, dict]:
    """``mask`` grown by ``grid_factor`` x the largest voxel edge of the grid it was drawn on,
    when that grid is coarser than the image's (else unchanged), kept inside ``brain``."""
    mask = np.asarray(mask) > 0
    coarse = float(np.max(source_voxel_mm))
    fine = float(np.max(spacing))
    if coarse <= fine * 1.01:
        return mask.copy(), {"step": "grid", "grown_mm": 0.0, "source_voxel_mm": [float(v) for v in source_voxel_mm]}
    mm = grid_factor * coarse
    grown = dilate_mm(mask, spacing, mm)
    if brain is not None:
        grown &= np.asarray(brain) > 0
    grown |= mask
    return grown, {"step": "grid", "grown_mm": mm, "source_voxel_mm": [float(v) for v in source_voxel_mm]}


def grow_by_image(
    image, mask, spacing, *, reach_mm: float = 1.5, fraction: float = 0.35, brain=None
) -> tuple[np.ndarray, dict]:
    """``mask`` with the neighbouring voxels (within ``reach_mm``, connected to it) that the image
    says are lesion: at least ``fraction`` of the way from the surrounding tissue to the lesion's
    median, on the lesion's side (darker for a T1w lesion darker than its tissue, brighter for a
    FLAIR hyperintensity). Per connected component, so that each lesion keeps its own contrast."""
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    brain = brain_region(image) if brain is None else np.asarray(brain) > 0
    out = mask.copy()
    added = 0
    if not mask.any():
        return out, {"step": "image", "reach_mm": reach_mm, "fraction": fraction, "added_voxels": 0}
    # The tissue reference comes from beyond the reach: the rim itself must not set it.
    excluded = dilate_mm(mask, spacing, reach_mm)
    tissue = local_tissue(image, excluded, brain=brain, spacing=spacing)
    shell_all = excluded & ~mask & brain
    labels, _ = ndimage.label(mask)
    margin = np.ceil(reach_mm / np.asarray(spacing, dtype=np.float64)).astype(int) + 1
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        # Each lesion in its own box: its own contrast, and no whole-volume pass per lesion.
        box = tuple(slice(max(f.start - m, 0), min(f.stop + m, n)) for f, m, n in zip(found, margin, mask.shape))
        component = labels[box] == index
        shell = dilate_mm(component, spacing, reach_mm) & shell_all[box]
        if not shell.any():
            continue
        sub_image = image[box]
        core = float(np.median(sub_image[component]))
        ref = tissue[box][shell]
        step = core - ref  # negative for a dark lesion
        lesion_like = (sub_image[shell] - ref) * np.sign(step) >= fraction * np.abs(step)
        candidate = np.zeros_like(component)
        candidate[shell] = lesion_like & (np.abs(step) > 1e-6)
        # Only what touches this lesion: a dark sulcus a voxel away is not its rim.
        joined, _ = ndimage.label(candidate | component)
        keep = np.isin(joined, np.unique(joined[component]))
        new = keep & candidate & ~out[box]
        added += int(new.sum())
        out[box] |= new
    return out, {"step": "image", "reach_mm": reach_mm, "fraction": fraction, "added_voxels": added}


def grow_mask(
    image,
    mask,
    spacing,
    *,
    method: str = "auto",
    source_voxel_mm=None,
    brain=None,
    grid_factor: float = 0.5,
    reach_mm: float = 1.5,
    fraction: float = 0.35,
) -> tuple[np.ndarray, Growth]:
    """The mask that will be healed, and how it was grown. ``auto``: by the grid when the mask
    came from a coarser one, then by the image; ``grid`` or ``image`` alone; ``none``."""
    if method not in GROWTHS:
        raise ValueError(f"unknown mask growth {method!r}; choose one of {', '.join(GROWTHS)}")
    mask = np.asarray(mask) > 0
    grown, steps = mask.copy(), []
    if method in ("auto", "grid") and source_voxel_mm is not None:
        grown, info = grow_by_grid(grown, spacing, source_voxel_mm, grid_factor=grid_factor, brain=brain)
        steps.append(info)
    if method in ("auto", "image"):
        grown, info = grow_by_image(image, grown, spacing, reach_mm=reach_mm, fraction=fraction, brain=brain)
        steps.append(info)
    return grown, Growth(method=method, given_voxels=int(mask.sum()), healed_voxels=int(grown.sum()), steps=steps)
