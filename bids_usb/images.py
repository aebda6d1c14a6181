"""Reading and checking input images and masks before any work is spent on them.

Each check raises ``DataError`` (exit 65) with the file's path and the fix. NaN or Inf voxels
are refused rather than zeroed: they mean a broken reconstruction or conversion, and zeroing
them inside the brain would make the model "heal" a hole that is not a lesion.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import DataError


def load_image(path: str | Path, what: str = "image") -> nib.Nifti1Image:
    """A 3D NIfTI with finite voxels, its data read once (a truncated file fails here, not later)."""
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: cannot read this {what} ({exc.__class__.__name__}: {exc}); the file is truncated or corrupt, convert it again") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: the {what} has shape {data.shape}; a 3D volume is needed, extract one volume first (e.g. fslroi or nibabel)")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: the {what} has {n_bad} NaN or Inf voxels; set them to 0 or fix the reconstruction, then run again")
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(data.dtype)
    return out


def load_mask(path: str | Path, reference: nib.Nifti1Image | None = None, what: str = "lesion mask") -> nib.Nifti1Image:
    """A binary uint8 mask; a non-binary one is thresholded at 0.5 with a warning."""
    img = load_image(path, what)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        warnings.warn(f"{path}: the {what} is not binary (values {values.min():g}..{values.max():g}); thresholding at 0.5", stacklevel=2)
    binary = (data > 0.5).astype(np.uint8)
    out = nib.Nifti1Image(binary, img.affine, img.header)
    out.set_data_dtype(np.uint8)
    return out


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, atol: float = 1e-3) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)
