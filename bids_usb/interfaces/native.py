"""Back to the participant's own grid: the composite, the edit region, the uncertainty map."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, isdefined, traits

from .. import preprocessing as prep
from ..images import load_image
from ..native import from_ras, native_fill, to_native_edit
from .base import TimedInterface, TimedOutputSpec


class _NativeInputSpec(BaseInterfaceInputSpec):
    anat = File(exists=True, mandatory=True, desc="the input as found in the dataset")
    edited = File(exists=True, mandatory=True)
    image_model = File(exists=True, mandatory=True, desc="the model-grid input the edit started from")
    transform = File(exists=True, mandatory=True)
    scale = traits.Float(mandatory=True)
    bias_field = File(exists=True, mandatory=True, desc="N4 field on the RAS grid")
    lesion_native = File(exists=True, desc="heal: the lesion on the anat's grid")
    given_native = File(exists=True, desc="heal: the lesion as given, when lesion_native is it grown (anat's grid)")
    brain_mask = File(exists=True, desc="heal: the brain mask on the RAS grid (what the fill may read of a head)")
    lesion_model = File(exists=True, desc="embed: the lesion drawn, on the model grid")
    uncertainty = File(exists=True)
    healed = File(exists=True, desc="heal: the decoded healed brain on the model grid")
    change = File(exists=True, desc="heal: decode(healed) - decode(input) on the model grid")
    fill_change = File(exists=True, desc="heal with fill_residual: the model's change to the fill (model grid)")
    anomaly = File(exists=True, desc="heal without a mask: the anomaly map on the model grid")
    detected = File(exists=True, desc="heal without a mask: the detected lesion on the model grid")
    parameters = traits.Dict(mandatory=True, desc="the sampler's parameters (band_mm is read from them)")
    template_source = traits.Enum(
        "nilearn", "templateflow", usedefault=True, desc="the copy of the 1 mm template a graft fill reads"
    )
    orientation = traits.Enum(
        "sform", "qform", "voxel", desc="--assume-orientation: how to read an image whose qform and sform codes are 0"
    )


class _NativeOutputSpec(TimedOutputSpec):
    out_file = File(exists=True)
    edit_region = File(exists=True)
    lesion_native = File(desc="the lesion (heal: as given; embed: as drawn) on the anat's grid")
    uncertainty = File()
    anomaly = File(desc="the anomaly map on the anat's grid")


class ToNative(TimedInterface):
    input_spec = _NativeInputSpec
    output_spec = _NativeOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        original = load_image(
            self.inputs.anat, orientation=self.inputs.orientation if isdefined(self.inputs.orientation) else None
        )
        reg = prep.Registration(Path(self.inputs.transform))
        lesion = None
        if isdefined(self.inputs.lesion_native):
            lesion = np.asanyarray(nib.load(self.inputs.lesion_native).dataobj) > 0
        elif isdefined(self.inputs.lesion_model):
            moved = prep.to_native(nib.load(self.inputs.lesion_model), original, reg, "nearestNeighbor")
            lesion = np.asanyarray(moved.dataobj) > 0.5
        elif isdefined(self.inputs.detected):
            # Linear, then halfway: a smoother outline on a finer native grid than nearest neighbour.
            detected = nib.load(self.inputs.detected)
            moved = prep.to_native(
                nib.Nifti1Image(np.asanyarray(detected.dataobj, dtype=np.float32), detected.affine), original, reg
            )
            lesion = np.asanyarray(moved.dataobj) > 0.5
        heal = {}
        if isdefined(self.inputs.healed) and isdefined(self.inputs.change):
            heal = {"healed_model": nib.load(self.inputs.healed), "change_model": nib.load(self.inputs.change)}
        params = self.inputs.parameters if isdefined(self.inputs.parameters) else {}
        if heal and isdefined(self.inputs.fill_change) and lesion is not None and lesion.any():
            # The fill made again at the scan's own resolution; the model's change is added to it.
            given = (
                np.asanyarray(nib.load(self.inputs.given_native).dataobj) > 0
                if isdefined(self.inputs.given_native)
                else None
            )
            # A head as given: the fill reads the brain, never the scalp (usb_model.fill.prefill).
            brain = (
                np.asanyarray(from_ras(nib.load(self.inputs.brain_mask), original).dataobj) > 0
                if isdefined(self.inputs.brain_mask)
                else None
            )
            heal["fill_native"] = native_fill(
                original, lesion, params["fill"], reg, self.inputs.template_source, given=given, brain=brain
            )
            heal["fill_change_model"] = nib.load(self.inputs.fill_change)
        heal["band_mm"] = tuple(float(v) for v in params["band_mm"])  # the sampler reports the band it used
        edit = to_native_edit(
            original,
            nib.load(self.inputs.edited),
            nib.load(self.inputs.image_model),
            reg,
            self.inputs.scale,
            nib.load(self.inputs.bias_field),
            lesion,
            **heal,
        )
        nib.save(edit.image, str(cwd / "edited_native.nii.gz"))
        nib.save(edit.region, str(cwd / "edit_region_native.nii.gz"))
        self._results["out_file"] = str(cwd / "edited_native.nii.gz")
        self._results["edit_region"] = str(cwd / "edit_region_native.nii.gz")
        if lesion is not None:
            img = nib.Nifti1Image(lesion.astype(np.uint8), original.affine)
            img.set_data_dtype(np.uint8)
            nib.save(img, str(cwd / "lesion_native.nii.gz"))
            self._results["lesion_native"] = str(cwd / "lesion_native.nii.gz")
        if isdefined(self.inputs.anomaly):
            moved = prep.to_native(nib.load(self.inputs.anomaly), original, reg)
            data = np.maximum(np.asanyarray(moved.dataobj, dtype=np.float32), 0.0)
            nib.save(nib.Nifti1Image(data, original.affine), str(cwd / "anomaly_native.nii.gz"))
            self._results["anomaly"] = str(cwd / "anomaly_native.nii.gz")
        if isdefined(self.inputs.uncertainty):
            std = prep.to_native(nib.load(self.inputs.uncertainty), original, reg)
            data = np.asanyarray(std.dataobj, dtype=np.float32) * self.inputs.scale * edit.weight
            nib.save(nib.Nifti1Image(data, original.affine), str(cwd / "uncertainty_native.nii.gz"))
            self._results["uncertainty"] = str(cwd / "uncertainty_native.nii.gz")
        return runtime
