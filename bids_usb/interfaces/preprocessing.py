"""Interfaces for the preprocessing steps (logic in bids_usb.preprocessing and .inputs)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from usb_model.intensity import intensity_top

from .. import inputs as inp
from .. import preprocessing as prep
from ..model import TEMPLATE_SPACE, ModelBundle
from .base import TimedInterface, TimedOutputSpec


def _save(img: nib.Nifti1Image, cwd: str, name: str) -> str:
    path = str(Path(cwd) / name)
    nib.save(img, path)
    return path


class _ModelTemplateInputSpec(BaseInterfaceInputSpec):
    model_dir = Directory(exists=True, mandatory=True)
    model_fingerprint = traits.Str(
        desc="ModelBundle.fingerprint: a model changed in place is not reused from the work directory"
    )


class _ModelTemplateOutputSpec(TraitedSpec):
    template = File(exists=True)
    template_mask = File(exists=True)


class ModelTemplate(SimpleInterface):
    """The model's template and brain mask (stored in the checkpoint) as NIfTI files."""

    input_spec = _ModelTemplateInputSpec
    output_spec = _ModelTemplateOutputSpec

    def _run_interface(self, runtime):
        bundle = ModelBundle.open(self.inputs.model_dir)
        self._results["template"] = _save(bundle.template_image(), runtime.cwd, "template.nii.gz")
        self._results["template_mask"] = _save(bundle.template_mask(), runtime.cwd, "template_mask.nii.gz")
        return runtime


class _PrepareInputSpec(BaseInterfaceInputSpec):
    anat = File(exists=True, mandatory=True, desc="the T1w (or FLAIR) as found in the dataset")
    lesion_mask = File(exists=True, desc="a lesion mask on the anat's grid or in the same space")
    task = traits.Enum("heal", "embed", usedefault=True)
    orientation = traits.Enum(
        "sform", "qform", "voxel", desc="--assume-orientation: how to read an image whose qform and sform codes are 0"
    )
    mask_orientation = traits.Enum(
        "image", "header", desc="--mask-orientation: a mask whose header contradicts its image's on the same grid"
    )


class _PrepareOutputSpec(TimedOutputSpec):
    anat_ras = File(exists=True)
    lesion_ras = File(desc="the lesion mask on the anat's RAS grid (absent when there is none)")
    lesion_native = File(desc="the lesion mask on the anat's own grid, binary uint8")
    warnings = traits.List(traits.Str)


class PrepareInputs(TimedInterface):
    """Check the anat and mask, bring the mask onto the anat's grid, reorient both to RAS."""

    input_spec = _PrepareInputSpec
    output_spec = _PrepareOutputSpec

    def _run_interface(self, runtime):
        mask = self.inputs.lesion_mask if isdefined(self.inputs.lesion_mask) else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            orientation = self.inputs.orientation if isdefined(self.inputs.orientation) else None
            mask_orientation = self.inputs.mask_orientation if isdefined(self.inputs.mask_orientation) else None
            prepared = inp.prepare_inputs(self.inputs.anat, mask, self.inputs.task, orientation, mask_orientation)
        self._results["warnings"] = [str(w.message) for w in caught]
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._results["anat_ras"] = _save(prep.reorient_to_ras(prepared.anat), runtime.cwd, "anat_ras.nii.gz")
        if prepared.lesion is not None:
            self._results["lesion_native"] = _save(prepared.lesion, runtime.cwd, "lesion_native.nii.gz")
            self._results["lesion_ras"] = _save(prep.reorient_to_ras(prepared.lesion), runtime.cwd, "lesion_ras.nii.gz")
        return runtime


class _BiasInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)


class _BiasOutputSpec(TimedOutputSpec):
    out_file = File(exists=True)
    bias_field = File(exists=True)


class BiasCorrect(TimedInterface):
    """N4 bias-field correction (ANTs)."""

    input_spec = _BiasInputSpec
    output_spec = _BiasOutputSpec

    def _run_interface(self, runtime):
        corrected, bias = prep.bias_correct(nib.load(self.inputs.in_file))
        self._results["out_file"] = _save(corrected, runtime.cwd, "corrected.nii.gz")
        self._results["bias_field"] = _save(bias, runtime.cwd, "bias_field.nii.gz")
        return runtime


class _StripInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the head-corrected image (bias_correct)")
    bias_field = File(exists=True, mandatory=True, desc="the head's N4 field")
    lesion_mask = File(exists=True, desc="a given lesion, left out of the brain's N4 fit")
    skull_stripped = traits.Bool(False, usedefault=True, desc="the input is already skull-stripped")


class _StripOutputSpec(TimedOutputSpec):
    brain_mask = File(exists=True)
    brain = File(exists=True)
    out_file = File(exists=True, desc="the image corrected by both fields")
    bias_field = File(exists=True, desc="the head's field times the brain's")


class SkullStrip(TimedInterface):
    """Brain mask with deepbet (or from the non-zero voxels of an already stripped image), then
    N4 again on the brain alone (``prep.refine_bias``), as sMRIPrep's brain extraction does."""

    input_spec = _StripInputSpec
    output_spec = _StripOutputSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        mask = prep.nonzero_mask(img) if self.inputs.skull_stripped else prep.skull_strip(img)
        lesion = nib.load(self.inputs.lesion_mask) if isdefined(self.inputs.lesion_mask) else None
        img, bias = prep.refine_bias(img, nib.load(self.inputs.bias_field), mask, lesion)
        data = np.asanyarray(img.dataobj, dtype=np.float32) * (np.asanyarray(mask.dataobj) > 0)
        self._results["brain_mask"] = _save(mask, runtime.cwd, "brain_mask.nii.gz")
        self._results["brain"] = _save(nib.Nifti1Image(data, img.affine), runtime.cwd, "brain.nii.gz")
        self._results["out_file"] = _save(img, runtime.cwd, "corrected.nii.gz")
        self._results["bias_field"] = _save(bias, runtime.cwd, "bias_field.nii.gz")
        return runtime


class _RegisterInputSpec(BaseInterfaceInputSpec):
    brain = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    lesion_mask = File(exists=True, desc="excluded (dilated) from the registration cost")
    template = File(exists=True, mandatory=True)
    seed = traits.Int(0, usedefault=True, desc="seeds ANTs' random sampling of the metric (reproducible runs)")


class _RegisterOutputSpec(TimedOutputSpec):
    transform = File(exists=True, desc="native-to-template affine (ITK .mat)")


class RegisterToTemplate(TimedInterface):
    """Affine registration of the brain to the model's template, lesion masked out (ANTs)."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        brain_mask = nib.load(self.inputs.brain_mask)
        lesion = nib.load(self.inputs.lesion_mask) if isdefined(self.inputs.lesion_mask) else None
        cost = prep.cost_mask(brain_mask, lesion)
        reg = prep.register_to_template(
            nib.load(self.inputs.brain), nib.load(self.inputs.template), cost, runtime.cwd, seed=self.inputs.seed
        )
        self._results["transform"] = str(reg.transform)
        # Not an output (nipype would delete it as unconnected): the node's folder keeps how the fit
        # was started and how well the brain landed on the template.
        fit = {"initialisation": reg.initialisation, "brain_overlap_dice": reg.overlap}
        (Path(runtime.cwd) / "registration.json").write_text(json.dumps(fit, indent=2) + "\n")
        if reg.overlap is not None and reg.overlap < prep.REGISTRATION_OVERLAP_OK:
            logging.getLogger("nipype.interface").warning(
                "%s: after registration the brain overlaps the template by Dice %.2f only; check the "
                "registration figure in the report",
                self.inputs.brain,
                reg.overlap,
            )
        return runtime


class _ToModelInputSpec(BaseInterfaceInputSpec):
    brain = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    lesion_mask = File(exists=True)
    given_mask = File(exists=True, desc="the lesion mask as given, when lesion_mask is it grown")
    transform = File(exists=True, mandatory=True)
    template = File(exists=True, mandatory=True)
    contrast = traits.Enum("T1w", "FLAIR", usedefault=True)
    normalisation = traits.Enum("percentile", "minmax", usedefault=True, desc="the model's grid.normalisation")


class _ToModelOutputSpec(TimedOutputSpec):
    image = File(exists=True, desc="normalised brain on the model grid, [0, 1]")
    brain_mask = File(exists=True)
    lesion_mask = File(desc="lesion on the model grid")
    given_mask = File(desc="the lesion as given, on the model grid")
    scale = traits.Float(desc="native intensity = model intensity x scale x bias")


class ToModelGrid(TimedInterface):
    """Resample to the model grid through the affine; normalise intensities to [0, 1]."""

    input_spec = _ToModelInputSpec
    output_spec = _ToModelOutputSpec

    def _run_interface(self, runtime):
        template = nib.load(self.inputs.template)
        reg = prep.Registration(Path(self.inputs.transform))
        brain_native = nib.load(self.inputs.brain)
        mask_native = nib.load(self.inputs.brain_mask)
        method = self.inputs.normalisation
        scale = prep.intensity_scale(np.asanyarray(brain_native.dataobj), np.asanyarray(mask_native.dataobj), method)
        image = prep.to_template(brain_native, template, reg, "linear")
        mask = prep.to_template(mask_native, template, reg, "nearestNeighbor")
        mask_np = (np.asanyarray(mask.dataobj) > 0.5).astype(np.uint8)
        data = prep.normalise(np.asanyarray(image.dataobj), mask_np, scale, self.inputs.contrast, method)
        self._results["image"] = _save(nib.Nifti1Image(data, template.affine), runtime.cwd, "image_model.nii.gz")
        self._results["brain_mask"] = _save(
            nib.Nifti1Image(mask_np, template.affine), runtime.cwd, "brain_mask_model.nii.gz"
        )
        self._results["scale"] = scale / intensity_top(self.inputs.contrast, method)
        if isdefined(self.inputs.lesion_mask):
            lesion = prep.to_template(nib.load(self.inputs.lesion_mask), template, reg, "nearestNeighbor")
            lesion_np = (np.asanyarray(lesion.dataobj) > 0.5).astype(np.uint8)
            self._results["lesion_mask"] = _save(
                nib.Nifti1Image(lesion_np, template.affine), runtime.cwd, "lesion_model.nii.gz"
            )
        if isdefined(self.inputs.given_mask):
            given = prep.to_template(nib.load(self.inputs.given_mask), template, reg, "nearestNeighbor")
            given_np = (np.asanyarray(given.dataobj) > 0.5).astype(np.uint8)
            self._results["given_mask"] = _save(
                nib.Nifti1Image(given_np, template.affine), runtime.cwd, "given_model.nii.gz"
            )
        return runtime


class _TemplateMaskInputSpec(BaseInterfaceInputSpec):
    mask = File(exists=True, mandatory=True, desc="a lesion mask in the template's space, any grid")
    template = File(exists=True, mandatory=True)


class _TemplateMaskOutputSpec(TimedOutputSpec):
    lesion_mask = File(exists=True)


class TemplateMaskToModel(TimedInterface):
    """A template-space lesion mask (any grid) onto the model grid, by world coordinates."""

    input_spec = _TemplateMaskInputSpec
    output_spec = _TemplateMaskOutputSpec

    def _run_interface(self, runtime):
        from nibabel.processing import resample_from_to

        from ..errors import DataError
        from ..images import load_mask

        template = nib.load(self.inputs.template)
        mask = load_mask(self.inputs.mask)
        moved = resample_from_to(
            nib.Nifti1Image(np.asanyarray(mask.dataobj).astype(np.float32), mask.affine), template, order=0
        )
        data = (np.asanyarray(moved.dataobj) > 0.5).astype(np.uint8)
        if not data.any():
            raise DataError(
                f"{self.inputs.mask}: no lesion voxel falls on the model grid; is the mask in {TEMPLATE_SPACE} space?"
            )
        self._results["lesion_mask"] = _save(nib.Nifti1Image(data, template.affine), runtime.cwd, "lesion_model.nii.gz")
        return runtime


class _GrowInputSpec(BaseInterfaceInputSpec):
    anat = File(exists=True, mandatory=True, desc="the input as found in the dataset (its grid and orientation)")
    lesion_mask = File(exists=True, mandatory=True, desc="the lesion mask as given (its own grid)")
    lesion_ras = File(exists=True, mandatory=True, desc="the given mask on the anat's RAS grid")
    brain = File(exists=True, mandatory=True, desc="the bias-corrected brain on the RAS grid")
    brain_mask = File(exists=True, mandatory=True)
    method = traits.Enum("auto", "grid", "image", "none", usedefault=True, desc="usb_model.mask_growth.GROWTHS")
    orientation = traits.Enum(
        "sform", "qform", "voxel", desc="--assume-orientation: how to read an image whose qform and sform codes are 0"
    )


class _GrowOutputSpec(TimedOutputSpec):
    lesion_ras = File(exists=True, desc="the mask that will be healed, on the RAS grid")
    lesion_native = File(exists=True, desc="the mask that will be healed, on the anat's own grid")
    given_native = File(desc="the mask as given, on the anat's own grid (only where the growth changed it)")
    growth = traits.Dict(desc="what was done (usb_model.mask_growth.Growth), for the lesion's sidecar")


class GrowMask(TimedInterface):
    """The given lesion mask grown to the lesion it points at (usb_model.mask_growth): after the
    skull strip, so that the growth sees the bias-corrected brain and never leaves it."""

    input_spec = _GrowInputSpec
    output_spec = _GrowOutputSpec

    def _run_interface(self, runtime):
        from usb_model.mask_growth import grow_mask

        from ..images import load_image, same_grid
        from ..native import from_ras

        orientation = self.inputs.orientation if isdefined(self.inputs.orientation) else None
        original = load_image(self.inputs.anat, orientation=orientation)
        given_img = nib.load(self.inputs.lesion_mask)
        source = None if same_grid(given_img, original) else tuple(float(v) for v in given_img.header.get_zooms()[:3])
        lesion_ras = nib.load(self.inputs.lesion_ras)
        brain = nib.load(self.inputs.brain)
        given = np.asanyarray(lesion_ras.dataobj) > 0
        brain_mask = np.asanyarray(nib.load(self.inputs.brain_mask).dataobj) > 0
        grown, growth = grow_mask(
            np.asanyarray(brain.dataobj, dtype=np.float32),
            given,
            brain.header.get_zooms()[:3],
            method=self.inputs.method,
            source_voxel_mm=source,
            brain=brain_mask,
        )
        # A mask voxel outside the brain mask stays: the user put it there, and the growth cannot
        # read it. Inside, the growth may have dropped given voxels that look like the tissue
        # around a CSF-dark lesion (usb_model.mask_growth.fit_dark).
        grown |= given & ~brain_mask

        def ras_mask(data):
            img = nib.Nifti1Image(data.astype(np.uint8), lesion_ras.affine)
            img.set_data_dtype(np.uint8)
            return img

        grown_ras = ras_mask(grown)
        self._results["lesion_ras"] = _save(grown_ras, runtime.cwd, "lesion_healed_ras.nii.gz")
        self._results["lesion_native"] = _save(
            from_ras(grown_ras, original), runtime.cwd, "lesion_healed_native.nii.gz"
        )
        changed = not np.array_equal(grown, given)
        if changed:
            given_native = from_ras(ras_mask(given), original)
            self._results["given_native"] = _save(given_native, runtime.cwd, "lesion_given_native.nii.gz")
        info = growth.as_dict()
        info["changed"] = changed
        info["healed_ml"] = float(grown.sum() * np.prod(brain.header.get_zooms()[:3]) / 1000)
        info["given_ml"] = float(given.sum() * np.prod(brain.header.get_zooms()[:3]) / 1000)
        self._results["growth"] = info
        return runtime
