"""The sink: a finished image's results into the BIDS-Derivatives dataset."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    isdefined,
    traits,
)

from ..outputs import write_participant_outputs
from .base import TimedInterface, TimedOutputSpec

_OPTIONAL = ("lesion_native", "uncertainty", "lesion_model", "anomaly", "detected")


class _SinkInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True)
    bids_dir = Directory(exists=True, mandatory=True)
    anat = File(exists=True, mandatory=True)
    entities = traits.Dict(mandatory=True)
    suffix = traits.Str(mandatory=True)
    task = traits.Str(mandatory=True)
    parameters = traits.Dict(mandatory=True)
    model = traits.Dict(mandatory=True)
    res_label = traits.Str(mandatory=True)
    lesion_source = File(exists=True)
    orientation = traits.Enum(
        "sform", "qform", "voxel", desc="--assume-orientation: how to read an image whose qform and sform codes are 0"
    )
    edited = File(exists=True, mandatory=True)
    edit_region = File(exists=True, mandatory=True)
    brain_mask_ras = File(exists=True, mandatory=True)
    preproc_ras = File(exists=True, mandatory=True)
    transform = File(exists=True, mandatory=True)
    image_model = File(exists=True, mandatory=True)
    edited_model = File(exists=True, mandatory=True)
    lesion_native = File(exists=True)
    uncertainty = File(exists=True)
    lesion_model = File(exists=True)
    anomaly = File(exists=True, desc="heal without a mask: the anomaly map (native grid)")
    detected = File(exists=True, desc="heal without a mask: the detected lesion (native grid)")


class _SinkOutputSpec(TimedOutputSpec):
    written = traits.Dict()


class DerivativesSink(TimedInterface):
    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        i = self.inputs
        names = ("edited", "edit_region", "brain_mask_ras", "preproc_ras", "transform", "image_model", "edited_model")
        files = {n: getattr(i, n) for n in names}
        files.update({n: (getattr(i, n) if isdefined(getattr(i, n)) else None) for n in _OPTIONAL})
        self._results["written"] = write_participant_outputs(
            output_dir=Path(i.output_dir),
            bids_dir=Path(i.bids_dir),
            anat=Path(i.anat),
            entities=dict(i.entities),
            suffix=i.suffix,
            task=i.task,
            files=files,
            parameters=dict(i.parameters),
            model=dict(i.model),
            lesion_source=Path(i.lesion_source) if isdefined(i.lesion_source) else None,
            res_label=i.res_label,
            orientation=i.orientation if isdefined(i.orientation) else None,
        )
        return runtime
