"""Preprocessing steps as plain functions on nibabel images (the nipype interfaces wrap these).

Native T1w -> RAS -> N4 bias correction (ANTs) -> skull stripping (deepbet) and N4 again on
the brain alone, the lesion left out -> affine registration to the model's template with the lesion masked out of the cost (ANTs) ->
resampling to the model grid and intensity normalisation to [0, 1].

All spatial work goes through ANTs in physical (world) coordinates, so any input orientation,
obliquity or voxel size maps onto the template and back without special cases.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage

from usb_model.intensity import brain_scale, normalisation_percentile, normalise_brain

from .errors import DataError


def to_ants(img: nib.Nifti1Image) -> ants.ANTsImage:
    data = np.asanyarray(img.dataobj).astype(np.float32)
    float_img = nib.Nifti1Image(data, img.affine)
    float_img.header.set_xyzt_units("mm", "sec")  # ITK warns on every image without units
    return ants.from_nibabel_nifti(float_img)


def from_ants(img: ants.ANTsImage, dtype=np.float32) -> nib.Nifti1Image:
    out = ants.to_nibabel_nifti(img)
    data = np.asanyarray(out.dataobj).astype(dtype)
    return nib.Nifti1Image(data, out.affine)


def reorient_to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The closest RAS+ voxel order, without resampling (a permutation and flips only)."""
    return nib.as_closest_canonical(img)


# N4's schedule, for the head's fit and the brain's alike.
N4_SETTINGS = {"shrink_factor": 4, "convergence": {"iters": [50, 50, 30], "tol": 1e-6}}


def bias_correct(img: nib.Nifti1Image, mask: nib.Nifti1Image | None = None) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """N4 (ANTs) -> (corrected image, bias field), with ``image = corrected * bias``.

    The bias field is kept: the edit is mapped back to the native scan by multiplying with it,
    so that filled-in tissue carries the same shading as its surroundings.

    Without a ``mask`` the field is fitted on the head only (ANTs' ``get_mask``: above the image
    mean, cleaned and hole-filled), not on the background. On a 1 mm scan with 80 % background
    that is 3-4x faster (38 s -> 10 s on 2 cores, the mask included) and recovers a known smooth
    field 2.5x more closely (2.6 % against 6.6 % mean error; benchmarks/n4.py, docs/benchmarks.md
    "N4 fitted on the head"). The field is still evaluated over the whole grid.
    """
    image = to_ants(img)
    if float(image.max()) <= 0:
        raise DataError("the image is empty (all voxels <= 0)")
    kwargs = dict(N4_SETTINGS, mask=to_ants(mask) if mask is not None else head_mask(image))
    bias = np.asanyarray(from_ants(ants.n4_bias_field_correction(image, return_bias_field=True, **kwargs)).dataobj)
    bias = np.where(bias > 1e-6, bias, 1.0).astype(np.float32)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    return nib.Nifti1Image(data / bias, img.affine), nib.Nifti1Image(bias, img.affine)


# The second N4, fitted on the brain alone (sMRIPrep's brain extraction refines its N4 on the
# brain in the same way). The head's fit leaves a coil's falloff in the brain: on ROBEX's
# reference head the posterior-inferior cerebellum stayed 6 % darker than the rest of the brain,
# and the model brightened it as it would a T1w lesion: 130 ml "detected" in a healthy head. A
# 100 mm control-point spacing, finer than N4's 200 mm default, is what the brain's own fit
# needs to follow that falloff: 48 ml detected at 200 mm, 7 ml at 100 mm, while Colin 27's clear
# level stayed 0.09 (benchmarks/detection_controls.py; docs/healing-what-users-bring.md).
BRAIN_N4_SPLINE_MM = 100.0
# A given lesion, grown by this margin, is left out of the brain's fit: a field that follows a
# large dark lesion would take part of its darkness away from the heal and put it back in the
# native output (native = model intensity x scale x bias).
BRAIN_N4_LESION_MARGIN_MM = 3.0


def refine_bias(
    corrected: nib.Nifti1Image,
    bias: nib.Nifti1Image,
    brain_mask: nib.Nifti1Image,
    lesion: nib.Nifti1Image | None = None,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """N4 again on the brain of the head-corrected image -> (corrected image, combined field).

    The combined field is ``bias`` times the brain's own field, with ``image = corrected *
    field`` as for :func:`bias_correct`, so the edit maps back through both. The brain's field is
    scaled to a median of 1 in the brain (N4's field has no scale of its own), so the corrected
    intensities stay where the head's fit put them. It is evaluated over the whole grid; only
    the brain is fitted on, and only the brain is edited.
    """
    brain = np.asanyarray(brain_mask.dataobj) > 0
    fit = brain.copy()
    if lesion is not None:
        spacing = corrected.header.get_zooms()[:3]
        fit &= ~dilate(np.asanyarray(lesion.dataobj) > 0, spacing, BRAIN_N4_LESION_MARGIN_MM)
    if fit.sum() < 0.25 * brain.sum():  # too little healthy brain left to fit a field on
        return corrected, bias
    image = to_ants(corrected)
    mask = image.new_image_like(fit.astype(np.float32))
    field = ants.n4_bias_field_correction(
        image, mask=mask, spline_param=BRAIN_N4_SPLINE_MM, return_bias_field=True, **N4_SETTINGS
    ).numpy()
    field = np.where(field > 1e-6, field, 1.0).astype(np.float32)
    field /= np.median(field[brain])
    data = np.asanyarray(corrected.dataobj).astype(np.float32)
    combined = np.asanyarray(bias.dataobj).astype(np.float32) * field
    return nib.Nifti1Image(data / field, corrected.affine), nib.Nifti1Image(combined, corrected.affine)


def head_mask(image: ants.ANTsImage) -> ants.ANTsImage:
    """The foreground N4 fits on: ANTs' ``get_mask`` (above the image mean, eroded 2, the
    largest component, dilated 2, holes filled), with scipy filling the holes: the same mask
    (identical on the participant benchmark's scan) in 0.3 s, where ANTs' ``FillHoles`` takes 5 s
    of a 1 mm scan's N4. Where the threshold leaves nothing (a near-constant image), every voxel
    above zero."""
    mask = ants.threshold_image(image, float(image.mean()), float(image.max()))
    mask = ants.iMath(ants.iMath(ants.iMath(mask, "ME", 2), "GetLargestComponent"), "MD", 2)
    filled = ndimage.binary_fill_holes(mask.numpy() > 0)
    if not filled.any():
        filled = image.numpy() > 0
    return image.new_image_like(filled.astype(np.float32))


@functools.lru_cache(maxsize=1)
def _deepbet(no_gpu: bool = True):
    from deepbet.bet import BrainExtraction

    return BrainExtraction(no_gpu=no_gpu)


def skull_strip(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Brain mask from deepbet (its weights ship in its wheel; no download)."""
    import torch

    _, mask, _ = _deepbet(not torch.cuda.is_available()).run(img)
    data = np.asanyarray(mask.dataobj) > 0
    if not data.any():
        raise DataError("skull stripping found no brain; is this a T1w image of a head?")
    out = nib.Nifti1Image(data.astype(np.uint8), img.affine)
    out.set_data_dtype(np.uint8)
    return out


@contextlib.contextmanager
def _ants_seed(seed: int):
    """ANTs' ``--random-seed`` for the calls inside (antspyx reads it from its config module).

    ANTs takes a seed of 0 as "seed from the clock", so the run's seed (0 by default) is shifted
    to a positive one."""
    previous = ants.config._random_seed
    ants.config._random_seed = int(seed) % (2**31 - 2) + 1
    try:
        yield
    finally:
        ants.config._random_seed = previous


@dataclass
class Registration:
    """An affine from native (moving) to template (fixed) space, as an ANTs/ITK .mat file;
    ``overlap``: Dice of the brain mask so moved with the template's brain; ``initialisation``:
    how the fit was started (``_register``)."""

    transform: Path
    overlap: float | None = None
    initialisation: str | None = None


def register_to_template(
    brain: nib.Nifti1Image,
    template: nib.Nifti1Image,
    cost_mask: nib.Nifti1Image | None,
    workdir: str | Path,
    seed: int = 0,
) -> Registration:
    """Affine (ANTs, Mattes MI) of the skull-stripped brain to the template.

    ``cost_mask`` is the brain without the (dilated) lesion: a lesion has no counterpart in the
    template and would otherwise pull the fit.

    Reproducible: ANTs samples the metric at random points (seeded from the clock unless told),
    and a multi-threaded metric sums in an order that varies from run to run, so both the seed
    and a single ITK thread are needed for the same scan to give the same affine (and a resumed
    run the same output as an uninterrupted one). ITK fixes its thread count when it is first
    used in a process, so where this process may use more threads the registration runs in a
    fresh single-threaded process; an affine fit costs seconds either way.
    """
    if os.environ.get(ITK_THREADS) == "1":
        return _register(brain, template, cost_mask, Path(workdir), seed)
    previous = os.environ.get(ITK_THREADS)
    os.environ[ITK_THREADS] = "1"  # inherited by the spawned process at its start
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(_register, brain, template, cost_mask, Path(workdir), seed).result()
    finally:
        if previous is None:
            os.environ.pop(ITK_THREADS, None)
        else:
            os.environ[ITK_THREADS] = previous


ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


#: Dice of the registered brain mask with the template's below which the affine is refitted from a
#: search over rotations. Centre-of-mass starts give 0.93-0.95 on the benchmark heads; the
#: reference head that ships with ROBEX (its scanner pose: tilted, the neck in the field of view)
#: gave 0.72, a brain shrunk and shifted on the model grid, and 0.93 from the search.
REGISTRATION_OVERLAP_OK = 0.9


def _register(brain, template, cost_mask, workdir: Path, seed: int) -> Registration:
    """The affine from ANTs' usual centre-of-mass start; where its brain overlap with the template
    is poor, also from ``ants.affine_initializer``'s search over rotations (about 10 s on the
    model grid, deterministic), keeping the fit whose brain overlaps the template better."""
    workdir.mkdir(parents=True, exist_ok=True)
    fixed, moving = to_ants(template), to_ants(brain)
    kwargs = {}
    if cost_mask is not None:
        kwargs["moving_mask"] = to_ants(cost_mask)
    template_brain = np.asanyarray(template.dataobj) > 0
    brain_mask = to_ants(nib.Nifti1Image((np.asanyarray(brain.dataobj) > 0).astype(np.float32), brain.affine))

    def fit(prefix: str, initial: str | None, initialisation: str) -> Registration:
        with _ants_seed(seed):
            result = ants.registration(
                fixed=fixed,
                moving=moving,
                type_of_transform="Affine",
                initial_transform=initial,
                outprefix=str(workdir / prefix),
                # The last level is the template's own grid (the model grid, 3 mm): with no
                # iterations there the fit stopped at 6 mm detail. 100 there moved a template
                # infarct's graft error from 26680 to 15810 (exact mask) and from 30962 to 15110
                # (a 1 mm too-large one), and the two masks' affines from 3.2 to 1.2 mm apart at
                # the lesion; 500 gave the same; 5.7 -> 11.2 s a fit (scratch/regconv.py,
                # 2026-12-07, healing benchmark's template infarct).
                aff_iterations=(1000, 500, 250, 100),
                aff_shrink_factors=(6, 4, 2, 1),
                aff_smoothing_sigmas=(3, 2, 1, 0),
                # Every point in the metric, not ANTs' default 20 % drawn at random: the drawn
                # points change with the exclusion mask, and an infarct's 1 mm larger mask moved
                # the fit by 1.8-3.1 mm (0.7-1.1 mm with every point), at the same speed.
                aff_random_sampling_rate=1.0,
                **kwargs,
            )
        if len(result["fwdtransforms"]) != 1:  # the start is composed into the one affine ANTs writes
            raise RuntimeError(f"ANTs wrote {result['fwdtransforms']}, expected one affine")
        transform = Path(result["fwdtransforms"][0])
        moved = ants.apply_transforms(fixed, brain_mask, [str(transform)], interpolator="nearestNeighbor").numpy() > 0.5
        overlap = 2.0 * float((moved & template_brain).sum()) / max(int(moved.sum() + template_brain.sum()), 1)
        return Registration(transform=transform, overlap=overlap, initialisation=initialisation)

    first = fit("native_to_template_", None, "centre of mass")
    if first.overlap >= REGISTRATION_OVERLAP_OK:
        return first
    start = workdir / "rotation_search.mat"
    ants.affine_initializer(
        fixed,
        moving,
        search_factor=20,
        radian_fraction=0.1,
        use_principal_axis=False,
        local_search_iterations=10,
        txfn=str(start),
    )
    searched = fit("rotation_search_", str(start), "rotation search")
    return searched if searched.overlap > first.overlap else first


def to_template(
    img: nib.Nifti1Image, template: nib.Nifti1Image, reg: Registration, interpolator: str = "linear"
) -> nib.Nifti1Image:
    moved = ants.apply_transforms(
        fixed=to_ants(template), moving=to_ants(img), transformlist=[str(reg.transform)], interpolator=interpolator
    )
    return from_ants(moved)


def to_native(
    img: nib.Nifti1Image, native: nib.Nifti1Image, reg: Registration, interpolator: str = "linear"
) -> nib.Nifti1Image:
    """Template-space image -> the exact native grid (inverse of the affine)."""
    moved = ants.apply_transforms(
        fixed=to_ants(native),
        moving=to_ants(img),
        transformlist=[str(reg.transform)],
        whichtoinvert=[True],
        interpolator=interpolator,
    )
    return from_ants(moved)


def intensity_scale(image: np.ndarray, brain: np.ndarray, method: str = "percentile") -> float:
    """The divisor that maps the brain's intensities to [0, 1] (usb_model.intensity's rule ``method``,
    the model's ``grid.normalisation``)."""
    try:
        return brain_scale(image, brain, normalisation_percentile(method))
    except ValueError as exc:
        raise DataError(
            f"cannot normalise intensities: {exc}; check the skull stripping and registration in the report"
        ) from exc


def normalise(
    image: np.ndarray, brain: np.ndarray, scale: float, contrast: str = "T1w", method: str = "percentile"
) -> np.ndarray:
    return normalise_brain(image, brain, scale, contrast, method)


def dilate(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Binary dilation by a distance in millimetres (anisotropic voxels handled)."""
    mask = mask > 0
    if mm <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= mm


def nonzero_mask(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The brain of an image that is already skull-stripped: its non-zero voxels, holes filled."""
    data = np.asanyarray(img.dataobj) > 0
    if not data.any():
        raise DataError("the image is empty; it cannot be skull-stripped already")
    filled = ndimage.binary_fill_holes(data)
    out = nib.Nifti1Image(filled.astype(np.uint8), img.affine)
    out.set_data_dtype(np.uint8)
    return out


# The lesion is grown by this much before it is cut out of the registration cost: its rim of
# oedema or gliosis does not match the template either.
COST_MASK_DILATION_MM = 3.0


# A lesion may cover at most this share of the brain: beyond it the affine would be fitted to
# what is left (or fall back to identity) and the "healed" brain would be mostly invented.
MAX_LESION_BRAIN_FRACTION = 0.5


def cost_mask(brain_mask: nib.Nifti1Image, lesion: nib.Nifti1Image | None) -> nib.Nifti1Image:
    brain = np.asanyarray(brain_mask.dataobj) > 0
    if lesion is not None:
        inside = np.asanyarray(lesion.dataobj) > 0
        covered = float((inside & brain).sum()) / max(int(brain.sum()), 1)
        if covered > MAX_LESION_BRAIN_FRACTION:
            raise DataError(
                f"the lesion mask covers {100 * covered:.0f}% of the brain found by skull stripping; too little brain is "
                "left to register and heal from. Check that the mask is the lesion (not a brain mask) and not inverted"
            )
        grown = dilate(inside, brain_mask.header.get_zooms()[:3], COST_MASK_DILATION_MM)
        brain = brain & ~grown
    out = nib.Nifti1Image(brain.astype(np.uint8), brain_mask.affine)
    out.set_data_dtype(np.uint8)
    return out
