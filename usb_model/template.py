"""The MNI ICBM 2009a (symmetric) T1w template and its tissue maps, on a model grid.

Healthy-brain synthesis, the checkpoints' registration target, the graft fill, the figures and
the synthetic BIDS writer all need the template on *their* grid, so this module reads it once
and resamples it once per grid (cached). Two copies of the same template can be read:

- ``"nilearn"`` (the default, and what every checkpoint of this project so far was trained
  with): the copy inside nilearn's wheel, ``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted``
  (``nilearn.datasets.load_mni152_template`` and its GM/WM siblings; the file names are those
  of the ICBM 2009a *symmetric* release, ``mni_icbm152_nlin_sym_09a`` of
  ``fetch_icbm152_2009``, although nilearn's docstrings call it "asymmetrical"). 1 mm,
  197 x 233 x 189 voxels, origin (-98, -134, -72) mm, brain-extracted, T1w rescaled to [0, 1]
  (stored as uint8), brain mask from ``load_mni152_brain_mask``, no CSF map.
- ``"templateflow"``: TemplateFlow's ``tpl-MNI152NLin2009aSym`` (``Name`` "ICBM 152 Nonlinear
  Symmetrical template version 2009a", the same Fonov et al. template), read with
  ``templateflow.api.get`` at ``res-1``: ``_T1w`` (with the skull: there is no
  ``desc-brain_T1w`` for this template; it is masked here), ``_desc-brain_mask`` and
  ``_label-{GM,WM,CSF}_probseg``. Its own grid (``template_description.json``) is 1 mm,
  193 x 229 x 193 voxels, origin (-96, -132, -78) mm: the same space, another field of view
  ("NIfTI sanitizing by the TF Manager", its CHANGES), so both copies resample by world
  coordinates onto the same model grid. Whether its voxel values equal nilearn's (after
  nilearn's uint8 rescaling) was not measured: TemplateFlow's files could not be downloaded
  where this was written.

A run never goes to the network for it. TemplateFlow's client downloads any file of its home
that is missing or 0 bytes (its skeleton holds every file at 0 bytes) when ``get`` is called,
and writes a skeleton into an empty home on import; so this module looks at
``$TEMPLATEFLOW_HOME`` (else TemplateFlow's default, the user cache folder) first, imports
``templateflow`` only when ``tpl-MNI152NLin2009aSym`` is there, lists the files with
``templateflow.api.ls`` and calls ``templateflow.api.get`` only when every one has content.
Otherwise :func:`resolve_source` says why in one log line and falls back to nilearn's copy
(``fallback=True``, the BIDS App), or raises :class:`TemplateUnavailable` (training: a
checkpoint must carry the template it was trained with, and its config says which).

A checkpoint records the copy in ``grid.template_source`` (``usb_model.config.GridConfig``); a
checkpoint without the field was trained on nilearn's copy.

Conventions
- The grid is RAS with voxel size ``grid.voxel_size``; its centre voxel sits on the centre of
  the template brain's bounding box (world ~ (0, -17, 5) mm), so the brain is centred on any
  grid. A grid smaller than the brain (e.g. 160 mm in the anterior-posterior direction, where
  the MNI brain spans 181 mm) crops it symmetrically.
- ``t1w`` is in [0, 1] (the brain's maximum is 1) and zero outside ``brain_mask``;
  ``gm``/``wm``/``csf`` are probabilities. nilearn ships no CSF map, so there
  ``csf = brain - gm - wm`` (clipped), which also counts the sulcal/extracerebral CSF inside
  the template's brain mask; with TemplateFlow, ``csf`` is its ``label-CSF_probseg`` inside the
  brain mask. Only healthy-brain synthesis reads ``csf`` (``synth.intensity.tissue_image``: the
  re-synthesised image is a CSF/GM/WM mixture); the fills do not (the graft copies the T1w,
  the white-matter fill reads the scan).
- When the grid is coarser than 1 mm the maps are Gaussian pre-filtered (FWHM = the extra
  voxel size) before linear interpolation, so coarse test grids do not alias.
- Arrays are read-only: the result is shared through a cache, and an in-place edit by one
  caller would silently change every later caller's template.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from usb_model.config import GridConfig

__all__ = [
    "TEMPLATE_NAME",
    "TEMPLATE_SOURCES",
    "Template",
    "TemplateSource",
    "TemplateUnavailable",
    "grid_affine",
    "load_template",
    "resolve_source",
    "template_brain_centre",
    "template_to_nifti",
    "templateflow_home",
]

log = logging.getLogger("usb_model.template")

TEMPLATE_NAME = "MNI152NLin2009aSym"
TEMPLATE_SOURCES = ("nilearn", "templateflow")
# TemplateFlow queries (``templateflow.api.get(TEMPLATE_NAME, resolution=1, extension=".nii.gz", **q)``)
# -> the key of each map here. ``desc=None``: the T1w without a desc entity.
TEMPLATEFLOW_QUERIES = {
    "t1w": {"suffix": "T1w", "desc": None},
    "mask": {"suffix": "mask", "desc": "brain"},
    "gm": {"suffix": "probseg", "label": "GM"},
    "wm": {"suffix": "probseg", "label": "WM"},
    "csf": {"suffix": "probseg", "label": "CSF"},
}


@dataclass(frozen=True)
class Template:
    """A T1w template with tissue maps on one grid (arrays float32 except the bool mask)."""

    t1w: np.ndarray
    brain_mask: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray  # 4x4 voxel -> RAS world (mm)
    source: str = "nilearn"  # the copy the maps were read from: "nilearn" or "templateflow"

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


class TemplateUnavailable(RuntimeError):
    """TemplateFlow's files were asked for and cannot be read offline (no fallback wanted)."""


@dataclass(frozen=True)
class TemplateSource:
    """Which copy of the template is read, and why: what a sidecar cites."""

    name: str  # "nilearn" or "templateflow": the copy actually read
    requested: str  # the copy asked for (a checkpoint's grid.template_source)
    files: str  # where its maps are read from, in words
    fallback: str | None = None  # why the requested copy was not used

    def record(self) -> dict:
        out = {
            "Name": TEMPLATE_NAME,
            "Source": "TemplateFlow" if self.name == "templateflow" else "nilearn",
            "Files": self.files,
        }
        if self.fallback:
            out["Requested"] = "TemplateFlow" if self.requested == "templateflow" else self.requested
            out["Fallback"] = self.fallback
        return out


def templateflow_home() -> Path:
    """``$TEMPLATEFLOW_HOME``, else TemplateFlow's own default (the user cache folder, as its
    client computes it), without importing ``templateflow``."""
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if home:
        return Path(home).expanduser().absolute()
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # templateflow depends on platformdirs: without it, no templateflow either
        return (Path.home() / ".cache" / "templateflow").absolute()
    return Path(user_cache_dir("templateflow")).absolute()


def _templateflow_client(home: Path):
    """``templateflow.api`` when its home is ``home`` (it reads $TEMPLATEFLOW_HOME once, on
    import), else a client of ``home`` with the same ``ls``/``get``."""
    import templateflow.api as api
    from templateflow import conf

    if Path(conf.TF_HOME).absolute() == home:
        return api
    from templateflow import TemplateFlowClient

    return TemplateFlowClient(root=home)


@functools.lru_cache(maxsize=4)
def _templateflow_files(home: Path) -> tuple[dict[str, Path] | None, str]:
    """TemplateFlow's maps of the template in ``home``, offline: (paths, "") or (None, why not)."""
    folder = home / f"tpl-{TEMPLATE_NAME}"
    if importlib.util.find_spec("templateflow") is None:
        return None, "the templateflow package is not installed"
    if not folder.is_dir():
        return None, f"{folder} does not exist"
    try:
        client = _templateflow_client(home)
        query = {"resolution": 1, "extension": ".nii.gz"}
        for entities in TEMPLATEFLOW_QUERIES.values():
            found = [Path(f) for f in client.ls(TEMPLATE_NAME, **query, **entities)]
            if len(found) != 1:
                return None, f"{len(found)} files in {folder} match {entities} at res-1 (one is needed)"
            if not found[0].is_file() or found[0].stat().st_size == 0:
                return None, f"{found[0].name} is not downloaded (an empty skeleton file)"
        # Every file has content: get() returns them and downloads nothing.
        files = {
            key: Path(client.get(TEMPLATE_NAME, **query, **entities)) for key, entities in TEMPLATEFLOW_QUERIES.items()
        }
    except Exception as exc:  # noqa: BLE001 - any failure of the client means "not available offline"
        return None, f"TemplateFlow could not list {folder} ({exc.__class__.__name__}: {exc})"
    return files, ""


@functools.lru_cache(maxsize=8)
def _resolve(requested: str, fallback: bool, home: Path) -> TemplateSource:
    if requested not in TEMPLATE_SOURCES:
        raise ValueError(f"template source must be one of {', '.join(TEMPLATE_SOURCES)}; got {requested!r}")
    nilearn_files = "nilearn's mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted (1 mm, 197 x 233 x 189)"
    if requested == "nilearn":
        return TemplateSource("nilearn", requested, nilearn_files)
    files, why = _templateflow_files(home)
    if files is not None:
        return TemplateSource("templateflow", requested, f"TemplateFlow tpl-{TEMPLATE_NAME} res-1 in {home}")
    reason = f"TemplateFlow cannot supply {TEMPLATE_NAME} offline: {why} (TEMPLATEFLOW_HOME={home})"
    if not fallback:
        raise TemplateUnavailable(
            f"{reason}; fetch it once where the network is reachable (TEMPLATEFLOW_HOME set, then "
            f"python -c \"import templateflow.api as tf; tf.get('{TEMPLATE_NAME}', resolution=1)\"), "
            'or set "template_source": "nilearn" in the config\'s grid'
        )
    log.warning("%s; using nilearn's copy of the same template", reason)  # once per process (cached)
    return TemplateSource("nilearn", requested, nilearn_files, fallback=reason)


def resolve_source(requested: str = "nilearn", fallback: bool = True) -> TemplateSource:
    """Which copy a request for ``requested`` gets here, offline (see the module's docstring).

    ``fallback``: when TemplateFlow's files are not there, log one line and read nilearn's copy
    (True), or raise :class:`TemplateUnavailable` (False). Decided once per process and home.
    """
    return _resolve(str(requested), bool(fallback), templateflow_home())


def _nilearn_images() -> dict[str, nib.Nifti1Image]:
    from nilearn import datasets

    return {
        "t1w": datasets.load_mni152_template(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "mask": datasets.load_mni152_brain_mask(resolution=1),
    }


def _templateflow_images() -> dict[str, nib.Nifti1Image]:
    files, why = _templateflow_files(templateflow_home())
    if files is None:
        raise TemplateUnavailable(f"TemplateFlow cannot supply {TEMPLATE_NAME} offline: {why}")
    return {key: nib.load(str(path)) for key, path in files.items()}


def _source(source: str = "nilearn") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The 1 mm template maps of one copy as float32 arrays, and their (shared) affine.

    TemplateFlow's T1w keeps the skull: it is masked with its brain mask and rescaled so that
    the brain's maximum is 1, as nilearn's copy is (skull-stripped, divided by its maximum).
    Not cached: about 0.4 s to read, and 140 MB that every DataLoader worker would keep.
    """
    images = _templateflow_images() if source == "templateflow" else _nilearn_images()
    affine = images["t1w"].affine.copy()
    arrays = {k: np.asarray(img.dataobj, dtype=np.float32) for k, img in images.items()}
    for key, img in images.items():
        if not np.allclose(img.affine, affine, atol=1e-4) or img.shape[:3] != images["t1w"].shape[:3]:
            raise ValueError(f"the {source} template's {key} map is not on its T1w's grid")
    if source == "templateflow":
        brain = arrays["t1w"] * (arrays["mask"] > 0.5)
        arrays["t1w"] = brain / max(float(brain.max()), 1e-6)
    return arrays, affine


def template_brain_centre(source: str = "nilearn") -> np.ndarray:
    """World (RAS, mm) centre of the template brain mask's bounding box (of the copy ``source``)."""
    return np.array(_brain_centre(source))


@functools.lru_cache(maxsize=2)
def _brain_centre(source: str = "nilearn") -> tuple[float, float, float]:
    img = (_templateflow_images() if source == "templateflow" else _nilearn_images())["mask"]
    idx = np.argwhere(np.asarray(img.dataobj) > 0)
    centre_vox = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    return tuple(float(c) for c in nib.affines.apply_affine(img.affine, centre_vox))


def grid_affine(shape, voxel_size, centre=None, source: str = "nilearn") -> np.ndarray:
    """RAS affine of a grid whose centre voxel lies on ``centre`` (default: the brain centre of
    the copy ``source``)."""
    centre = template_brain_centre(source) if centre is None else np.asarray(centre, float)
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
def _load_cached(
    shape: tuple[int, int, int], voxel_size: tuple[float, float, float], source: str = "nilearn"
) -> Template:
    arrays, src_affine = _source(source)
    src_zooms = np.sqrt((src_affine[:3, :3] ** 2).sum(axis=0))
    affine = grid_affine(shape, voxel_size, source=source)
    res = {k: _resample(v, src_affine, shape, affine, src_zooms) for k, v in arrays.items()}
    brain = res["mask"] >= 0.5
    gm = np.clip(res["gm"], 0.0, 1.0) * brain
    wm = np.clip(res["wm"], 0.0, 1.0) * brain
    if "csf" in res:  # TemplateFlow's CSF map
        csf = np.clip(res["csf"], 0.0, 1.0) * brain
    else:  # nilearn has none: what the brain mask holds beyond GM and WM
        csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    t1w = np.clip(res["t1w"], 0.0, 1.0) * brain
    out = {"t1w": t1w, "brain_mask": brain, "gm": gm, "wm": wm, "csf": csf}
    for key, value in out.items():
        value = np.ascontiguousarray(value, dtype=bool if key == "brain_mask" else np.float32)
        value.flags.writeable = False
        out[key] = value
    affine.flags.writeable = False
    return Template(affine=affine, source=source, **out)


def load_template(grid: GridConfig, fallback: bool = False) -> Template:
    """The MNI ICBM 2009a template on ``grid``, from the copy ``grid.template_source`` names
    (cached per shape, voxel size and copy).

    ``fallback``: as for :func:`resolve_source` (False: a missing TemplateFlow copy is an
    error, so that what a checkpoint records is what it was trained with); ``Template.source``
    says which copy was read. ``GridConfig`` is not hashable (a mutable dataclass), so the
    cache key is its shape, voxel size and copy; ``grid.contrast`` does not change the
    template (it is always T1w).
    """
    shape = tuple(int(s) for s in grid.shape)
    voxel_size = tuple(float(v) for v in grid.voxel_size)
    if len(shape) != 3 or len(voxel_size) != 3:
        raise ValueError(f"grid must be 3D, got shape {shape} and voxel size {voxel_size}")
    if min(shape) < 1 or min(voxel_size) <= 0:
        raise ValueError(f"invalid grid: shape {shape}, voxel size {voxel_size}")
    source = resolve_source(getattr(grid, "template_source", "nilearn"), fallback=fallback)
    return _load_cached(shape, voxel_size, source.name)


# A 1 mm grid centred on the brain; 193 x 229 x 193 is TemplateFlow's res-1 grid of this
# template (nilearn's copy is 197 x 233 x 189): either copy's brain fits.
MNI_1MM_SHAPE = (193, 229, 193)


def template_1mm(source: str = "nilearn") -> Template:
    """The template at 1 mm (on a grid centred on the brain), from the copy ``source`` (one log
    line and nilearn's copy when TemplateFlow's is not there): what a fill made on a
    participant's native grid grafts from."""
    grid = GridConfig(shape=MNI_1MM_SHAPE, voxel_size=(1.0, 1.0, 1.0), template_source=source)
    return load_template(grid, fallback=True)


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
