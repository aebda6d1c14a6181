"""Reading and checking input images and masks before any work is spent on them.

Each check raises ``DataError`` (exit 65) with the file's path and the fix. NaN or Inf voxels
are refused rather than zeroed: they mean a broken reconstruction or conversion, and zeroing
them inside the brain would make the model "heal" a hole that is not a lesion.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import DataError
from .storage import check_content

# How to read an image whose qform and sform codes are both 0 (``--assume-orientation``): the
# sform matrix or the qform quaternion although their codes say "unknown", or the voxel sizes
# alone (nibabel's Analyze-style fallback, left-right flipped). Without one of these such an
# image is refused: its world coordinates are a guess, and a guess can mirror the lesion.
ORIENTATIONS = ("sform", "qform", "voxel")

# A head fits in these bounds; anything outside is not a whole-head (or whole-brain) scan.
MIN_FOV_MM = 50.0
MAX_FOV_MM = 600.0
MIN_VOXEL_MM = 0.1
MAX_VOXEL_MM = 20.0  # thick clinical slices (12 mm and more) are still head scans
# Columns of the affine's 3x3 part may deviate this much from orthogonal (cosine): oblique
# acquisitions are rotations; a shear means the header was assembled wrongly.
MAX_SHEAR_COS = 0.01


def orientation_problem(img: nib.Nifti1Image) -> str | None:
    """Why ``img``'s voxel-to-world mapping cannot be trusted, or None when it can."""
    header = img.header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return "has no orientation (its qform and sform codes are both 0)"
    return affine_problem(img.affine)


def affine_problem(affine: np.ndarray) -> str | None:
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.all(np.isfinite(linear)) or abs(np.linalg.det(linear)) < 1e-6:
        return "has a singular affine (its voxel-to-world matrix cannot be inverted)"
    columns = linear / np.linalg.norm(linear, axis=0)
    cosines = np.abs(columns.T @ columns - np.eye(3))
    if cosines.max() > MAX_SHEAR_COS:
        return (
            f"has a sheared affine (voxel axes {np.degrees(np.arccos(1 - cosines.max())):.1f} degrees from orthogonal)"
        )
    return None


def assume_orientation(img: nib.Nifti1Image, orientation: str) -> nib.Nifti1Image:
    """The image with the affine the user chose for it, its codes set so that tools agree."""
    header = img.header.copy()
    if orientation == "sform":
        affine = header.get_sform()
    elif orientation == "qform":
        affine = header.get_qform()
    elif orientation == "voxel":
        affine = header.get_base_affine()
    else:
        raise ValueError(f"unknown orientation {orientation!r}; use one of {ORIENTATIONS}")
    out = nib.Nifti1Image(img.dataobj, affine, header)  # the data stay lazy (an array proxy) when they were
    out.set_sform(affine, code="scanner")
    out.set_qform(affine, code="scanner")
    return out


def check_orientation(img: nib.Nifti1Image, path: Path, what: str, orientation: str | None) -> nib.Nifti1Image:
    """Refuse an untrustworthy orientation, or apply the one the user assumed for it."""
    header = img.header
    unknown = int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0
    if unknown and orientation:
        img = assume_orientation(img, orientation)
    problem = orientation_problem(img)
    if problem is None:
        return img
    if unknown:
        raise DataError(
            f"{path}: the {what} {problem}, so where its voxels lie is unknown; fix the header "
            "(e.g. fslorient -setqformcode 1 / -setsformcode 1) or say how to read it with "
            "--assume-orientation sform|qform|voxel"
        )
    raise DataError(f"{path}: the {what} {problem}; fix its header (qform/sform) or convert it again")


def check_head(img: nib.Nifti1Image, path: Path, what: str = "image") -> None:
    """An image a head can be in: plausible voxel sizes, field of view, and not empty."""
    zooms = np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)
    if np.any(zooms < MIN_VOXEL_MM) or np.any(zooms > MAX_VOXEL_MM):
        raise DataError(
            f"{path}: the {what} has voxels of {' x '.join(f'{z:g}' for z in zooms)} mm; a head scan has voxels "
            f"of {MIN_VOXEL_MM:g}-{MAX_VOXEL_MM:g} mm, check the voxel sizes (pixdim) in its header"
        )
    fov = zooms * np.asarray(img.shape[:3])
    if np.any(fov < MIN_FOV_MM) or np.any(fov > MAX_FOV_MM):
        kind = "a single slice" if 1 in img.shape[:3] else f"a field of view of {' x '.join(f'{f:g}' for f in fov)} mm"
        raise DataError(
            f"{path}: the {what} has shape {tuple(img.shape[:3])}, {kind}; a whole head "
            f"({MIN_FOV_MM:g}-{MAX_FOV_MM:g} mm along each axis) is needed, give the full 3D scan"
        )
    if not np.any(np.asanyarray(img.dataobj)):
        raise DataError(f"{path}: the {what} is empty (every voxel is 0); convert the scan again")


def file_stem(path: str | Path) -> str:
    """``sub-01_T1w`` of ``.../sub-01_T1w.nii.gz``: the name without any extension."""
    return Path(path).name.split(".")[0]


def node_name(path: str | Path) -> str:
    """The file stem as a nipype node or workflow name (letters, digits and ``_`` only)."""
    return re.sub(r"[^a-zA-Z0-9]", "_", file_stem(path))


def load_image(path: str | Path, what: str = "image", orientation: str | None = None) -> nib.Nifti1Image:
    """A 3D NIfTI with finite voxels and a trusted orientation, its data read once (a truncated
    file fails here, not later)."""
    path = Path(path)
    check_content(path, what)
    check_scaling(path, what)
    try:
        img = nib.load(str(path))
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asanyarray(img.dataobj)
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
    ) as exc:
        raise DataError(
            f"{path}: cannot read this {what} ({exc.__class__.__name__}: {exc}); the file is truncated or corrupt, convert it again"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(
            f"{path}: the {what} has shape {data.shape}; a 3D volume is needed, extract one volume first (e.g. fslroi or nibabel)"
        )
    if np.issubdtype(data.dtype, np.floating) and np.isfinite(data).all() and _overflows_float32(data):
        raise DataError(
            f"{path}: the {what}'s voxels reach {np.abs(data).max():.3g} once scaled by its header (scl_slope "
            f"{img.dataobj.slope:g}, scl_inter {img.dataobj.inter:g}), beyond what "
            "float32 holds, so registration would read them as Inf; fix scl_slope/scl_inter in its header "
            "(e.g. nibabel: img.header.set_slope_inter(1, 0)) or convert it again"
        )
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise DataError(
            f"{path}: the {what} has {n_bad} NaN or Inf voxels; set them to 0 or fix the reconstruction, then run again"
        )
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(data.dtype)
    return check_orientation(out, path, what, orientation)


def _raw_header(path: Path):
    """The NIfTI header as the file holds it (nibabel's loaded header has its scaling reset)."""
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        try:
            with nib.openers.ImageOpener(str(path)) as fh:
                return klass.from_fileobj(fh, check=False)
        except Exception:  # not this header kind (or not NIfTI at all: nib.load says why)
            continue
    return None


def check_scaling(path: Path, what: str) -> None:
    """Refuse a non-finite ``scl_slope``/``scl_inter``: nibabel ignores such a slope, but ANTs and
    ITK apply it, so the image would be read one way here and another in registration. A NaN or 0
    slope means "no scaling" to both (the standard's, and what converters write)."""
    header = _raw_header(path)
    if header is None or "scl_slope" not in header:
        return
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    bad = [f"{name} {value:g}" for name, value in (("scl_slope", slope), ("scl_inter", inter)) if np.isinf(value)]
    if np.isnan(inter) and np.isfinite(slope) and slope != 0:
        bad.append("scl_inter nan")  # a slope without an intercept: nibabel and ITK disagree on it
    if bad:
        raise DataError(
            f"{path}: the {what}'s header has {' and '.join(bad)}, so its voxel values are undefined; set "
            "scl_slope to 1 and scl_inter to 0 (e.g. nibabel: img.header.set_slope_inter(1, 0)) or convert it again"
        )


def _overflows_float32(data: np.ndarray) -> bool:
    return data.dtype.itemsize > 4 and float(np.abs(data).max(initial=0.0)) > float(np.finfo(np.float32).max)


def load_mask(
    path: str | Path,
    reference: nib.Nifti1Image | None = None,
    what: str = "lesion mask",
    orientation: str | None = None,
) -> nib.Nifti1Image:
    """A binary uint8 mask; a non-binary one is thresholded at 0.5 with a warning."""
    img = load_image(path, what, orientation)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        warnings.warn(
            f"{path}: the {what} is not binary (values {values.min():g}..{values.max():g}); thresholding at 0.5",
            stacklevel=2,
        )
    binary = (data > 0.5).astype(np.uint8)
    out = nib.Nifti1Image(binary, img.affine, img.header)
    out.set_data_dtype(np.uint8)
    return out


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, atol: float = 1e-3) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)
