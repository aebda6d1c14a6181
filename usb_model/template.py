"""The MNI ICBM 2009a (symmetric) T1w template and its tissue maps, on a model grid.

Why this module: the only real brain available offline is the template that ships inside
nilearn's wheel (1 mm, 197 x 233 x 189, already brain-extracted). Healthy-brain synthesis,
the figures, the tests and the synthetic BIDS writer all need it on *their* grid, so this
module resamples it once per grid and caches the result.

Conventions
- The grid is RAS with voxel size ``grid.voxel_size``; its centre voxel sits on the centre of
  the template brain's bounding box (world ~ (0, -17, 5) mm), so the brain is centred on any
  grid. A grid smaller than the brain (e.g. 160 mm in the anterior-posterior direction, where
  the MNI brain spans 181 mm) crops it symmetrically.
- ``t1w`` is in [0, 1] and zero outside ``brain_mask``; ``gm``/``wm``/``csf`` are
  probabilities. nilearn ships no CSF map, so ``csf = brain - gm - wm`` (clipped), which
  also counts the sulcal/extracerebral CSF inside the template's brain mask.
- When the grid is coarser than 1 mm the maps are Gaussian pre-filtered (FWHM = the extra
  voxel size) before linear interpolation, so coarse test grids do not alias.
- Arrays are read-only: the result is shared through a cache, and an in-place edit by one
  caller would silently change every later caller's template.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from usb_model.config import GridConfig

__all__ = ["Template", "load_template", "template_to_nifti", "grid_affine", "template_brain_centre"]


@dataclass(frozen=True)
class Template:
    """A T1w template with tissue maps on one grid (arrays float32 except the bool mask)."""

    t1w: np.ndarray
    brain_mask: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray  # 4x4 voxel -> RAS world (mm)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1w.shape)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def parenchyma(self) -> np.ndarray:
        """Grey or white matter more likely than CSF: where lesions are plausible."""
        return self.brain_mask & ((self.gm + self.wm) >= 0.5)


def _nilearn_images() -> dict[str, nib.Nifti1Image]:
    from nilearn import datasets

    return {
        "t1w": datasets.load_mni152_template(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "mask": datasets.load_mni152_brain_mask(resolution=1),
    }


def _source() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The 1 mm template maps as float32 arrays, and their (shared) affine.

    Not cached: about 0.4 s to read, and 140 MB that every DataLoader worker would keep.
    """
    images = _nilearn_images()
    affine = images["t1w"].affine.copy()
    arrays = {k: np.asarray(img.dataobj, dtype=np.float32) for k, img in images.items()}
    return arrays, affine


def template_brain_centre() -> np.ndarray:
    """World (RAS, mm) centre of the template brain mask's bounding box."""
    return np.array(_brain_centre())


@functools.lru_cache(maxsize=1)
def _brain_centre() -> tuple[float, float, float]:
    img = _nilearn_images()["mask"]
    idx = np.argwhere(np.asarray(img.dataobj) > 0)
    centre_vox = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    return tuple(float(c) for c in nib.affines.apply_affine(img.affine, centre_vox))


def grid_affine(shape, voxel_size, centre=None) -> np.ndarray:
    """RAS affine of a grid whose centre voxel lies on ``centre`` (default: the brain centre)."""
    centre = template_brain_centre() if centre is None else np.asarray(centre, float)
    zooms = np.asarray(voxel_size, dtype=float)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = centre - zooms * (np.asarray(shape, dtype=float) - 1) / 2.0
    return affine


def _resample(source: np.ndarray, src_affine, shape, dst_affine, src_zooms) -> np.ndarray:
    """Linear resampling of an axis-aligned 3D map, pre-filtered when the target is coarser."""
    dst_zooms = np.sqrt((dst_affine[:3, :3] ** 2).sum(axis=0))
    sigma_mm = np.sqrt(np.maximum(dst_zooms**2 - np.asarray(src_zooms) ** 2, 0.0)) / 2.3548
    data = source
    if np.any(sigma_mm > 0.05):
        data = ndimage.gaussian_filter(source, sigma_mm / np.asarray(src_zooms), mode="constant")
    vox = np.linalg.inv(src_affine) @ dst_affine
    out = ndimage.affine_transform(
        data, vox[:3, :3], vox[:3, 3], output_shape=tuple(shape), order=1, mode="constant", cval=0.0
    )
    return out.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=4)
def _load_cached(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> Template:
    arrays, src_affine = _source()
    src_zooms = np.sqrt((src_affine[:3, :3] ** 2).sum(axis=0))
    affine = grid_affine(shape, voxel_size)
    res = {k: _resample(v, src_affine, shape, affine, src_zooms) for k, v in arrays.items()}
    brain = res["mask"] >= 0.5
    gm = np.clip(res["gm"], 0.0, 1.0) * brain
    wm = np.clip(res["wm"], 0.0, 1.0) * brain
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    t1w = np.clip(res["t1w"], 0.0, 1.0) * brain
    out = {"t1w": t1w, "brain_mask": brain, "gm": gm, "wm": wm, "csf": csf}
    for key, value in out.items():
        value = np.ascontiguousarray(value, dtype=bool if key == "brain_mask" else np.float32)
        value.flags.writeable = False
        out[key] = value
    affine.flags.writeable = False
    return Template(affine=affine, **out)


def load_template(grid: GridConfig) -> Template:
    """The MNI ICBM 2009a template on ``grid`` (cached per shape and voxel size).

    ``GridConfig`` is not hashable (a mutable dataclass), so the cache key is its shape and
    voxel size; ``grid.contrast`` does not change the template (it is always T1w).
    """
    shape = tuple(int(s) for s in grid.shape)
    voxel_size = tuple(float(v) for v in grid.voxel_size)
    if len(shape) != 3 or len(voxel_size) != 3:
        raise ValueError(f"grid must be 3D, got shape {shape} and voxel size {voxel_size}")
    if min(shape) < 1 or min(voxel_size) <= 0:
        raise ValueError(f"invalid grid: shape {shape}, voxel size {voxel_size}")
    return _load_cached(shape, voxel_size)


MNI_1MM_SHAPE = (193, 229, 193)  # the ICBM 2009a template's own 1 mm grid


def template_1mm() -> Template:
    """The template at its own 1 mm resolution (on a grid centred on the brain): what a fill
    made on a participant's native grid grafts from."""
    return load_template(GridConfig(shape=MNI_1MM_SHAPE, voxel_size=(1.0, 1.0, 1.0)))


def template_to_nifti(template: Template, array: np.ndarray | None = None, dtype=np.float32) -> nib.Nifti1Image:
    """A NIfTI image on the template's grid: its T1w, or any ``array`` of the same shape."""
    data = template.t1w if array is None else np.asarray(array)
    if data.shape[:3] != template.shape:
        raise ValueError(f"array shape {data.shape} does not match the template grid {template.shape}")
    return grid_nifti(data, template.affine, dtype)


def grid_nifti(array: np.ndarray, affine: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
    """An array on a model grid as NIfTI in MNI space (qform/sform code 4), in mm: the one way
    template and model-grid images are written (checkpoints' templates, training's template)."""
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.array(affine, dtype=np.float64), dtype=dtype)
    img.set_qform(np.array(affine, dtype=np.float64), code=4)  # 4 = MNI152
    img.set_sform(np.array(affine, dtype=np.float64), code=4)
    img.header.set_xyzt_units("mm")
    return img
