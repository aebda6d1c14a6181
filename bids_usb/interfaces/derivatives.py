"""The sink: one finished work file into the BIDS-Derivatives dataset, as one named output.

The participant workflow runs one ``DerivativesSink`` per output (sMRIPrep's
``DerivativesDataSink`` habit), so each file is written by the node that owns it and a failed
image leaves only whole files behind; ``bids_usb.outputs`` says what each ``role`` is called.
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, Directory, File, isdefined, traits

from ..outputs import OUTPUTS, ImageContext, write_output
from .base import TimedInterface, TimedOutputSpec


class _SinkInputSpec(BaseInterfaceInputSpec):
    role = traits.Enum(*OUTPUTS, mandatory=True, desc="which derivative this is (bids_usb.outputs.OUTPUTS)")
    in_file = File(
        exists=True, desc="the finished file in the work directory; undefined (nothing detected): nothing written"
    )
    output_dir = Directory(mandatory=True)
    bids_dir = Directory(exists=True, mandatory=True)
    anat = File(exists=True, mandatory=True, desc="the input image (names, sources and grid)")
    entities = traits.Dict(mandatory=True)
    suffix = traits.Str(mandatory=True)
    task = traits.Str(mandatory=True)
    res_label = traits.Str(mandatory=True)
    model = traits.Dict(desc="the checkpoint's name, SHA-256 and contrast, for the USB sidecars")
    parameters = traits.Dict(
        mandatory=True, desc="every parameter the sampler used; every sink waits for them, so files appear after USB"
    )
    lesion_source = File(exists=True)
    growth = traits.Dict(desc="heal: how the given lesion mask was grown (the lesion's sidecar)")
    orientation = traits.Enum(
        "sform", "qform", "voxel", desc="--assume-orientation: how to read an image whose qform and sform codes are 0"
    )


class _SinkOutputSpec(TimedOutputSpec):
    out_file = File(desc="the derivative written")
    written = traits.Dict(desc="{role: path}, for the report")


class DerivativesSink(TimedInterface):
    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        i = self.inputs
        self._results["written"] = {}
        if not isdefined(i.in_file):
            return runtime
        ctx = ImageContext(
            output_dir=Path(i.output_dir),
            bids_dir=Path(i.bids_dir),
            anat=Path(i.anat),
            entities=dict(i.entities),
            suffix=i.suffix,
            task=i.task,
            res_label=i.res_label,
            model=dict(i.model) if isdefined(i.model) else {},
            parameters=dict(i.parameters),
            lesion_source=Path(i.lesion_source) if isdefined(i.lesion_source) else None,
            orientation=i.orientation if isdefined(i.orientation) else None,
            growth=dict(i.growth) if isdefined(i.growth) else {},
        )
        path = write_output(i.role, i.in_file, ctx)
        self._results["out_file"] = path
        self._results["written"] = {i.role: path}
        return runtime
