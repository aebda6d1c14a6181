"""The participant's HTML report as nodes of the workflow.

Each image workflow ends in an ``ImageSummary`` (what was written, the sampler's parameters,
the warnings, and each step's ``seconds``); one ``ParticipantReport`` per participant turns
its images' summaries into ``sub-<label>.html``. Everything arrives through connections, so
nothing reads the executed graph afterwards.
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

#: The steps of an image workflow whose times the report shows, in order.
STEPS = ("prepare", "bias_correct", "skull_strip", "register", "to_model_grid", "usb", "to_native", "derivatives")


class _ImageSummaryInputSpec(BaseInterfaceInputSpec):
    name = traits.Str(mandatory=True, desc="the input's file stem, e.g. sub-01_T1w")
    anat = File(mandatory=True, desc="the input image")
    written = traits.List(traits.Dict, mandatory=True, desc="each sink's {role: derivative path}")
    parameters = traits.Dict(mandatory=True, desc="every parameter the sampler used")
    warnings = traits.List(traits.Str, desc="the input checks' warnings")
    skull_stripped = traits.Bool(False, usedefault=True)


for _step in STEPS:
    # "derivatives" is several sink nodes, one per output: their times are added up.
    _ImageSummaryInputSpec.add_class_trait(
        f"seconds_{_step}", traits.Either(traits.Float, traits.List(traits.Float), desc=f"wall time of {_step}")
    )


class _ImageSummaryOutputSpec(TraitedSpec):
    summary = traits.Dict(desc="what ParticipantReport needs about this image")


class ImageSummary(SimpleInterface):
    input_spec = _ImageSummaryInputSpec
    output_spec = _ImageSummaryOutputSpec

    def _run_interface(self, runtime):
        i = self.inputs
        timings = {}
        for step in STEPS:
            value = getattr(i, f"seconds_{step}")
            if isdefined(value):
                timings[step] = float(sum(value) if isinstance(value, list) else value)
        self._results["summary"] = {
            "name": i.name,
            "anat": str(i.anat),
            "written": {role: path for sink in i.written for role, path in sink.items()},
            "parameters": {**dict(i.parameters), "skull_stripped": bool(i.skull_stripped)},
            "warnings": list(i.warnings) if isdefined(i.warnings) else [],
            "timings": timings,
        }
        return runtime


class _ReportInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True)
    subject = traits.Str(mandatory=True)
    version = traits.Str(mandatory=True)
    task = traits.Enum("heal", "embed", mandatory=True)
    model = traits.Dict(mandatory=True, desc="Name, SHA256, Contrast, Path of the checkpoint")
    template = File(exists=True, mandatory=True, desc="the model's template on the model grid")
    summaries = traits.List(traits.Dict, mandatory=True, desc="ImageSummary outputs of this participant")


class _ReportOutputSpec(TraitedSpec):
    report = File(exists=True)


class ParticipantReport(SimpleInterface):
    input_spec = _ReportInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        from ..reports.participant import ImageReport, write_participant_report

        i = self.inputs
        images = [
            ImageReport(
                name=s["name"],
                anat=Path(s["anat"]),
                written=dict(s["written"]),
                template=Path(i.template),
                task=i.task,
                parameters=dict(s["parameters"]),
                timings=dict(s["timings"]),
                model=dict(i.model),
                warnings=list(s["warnings"]),
            )
            for s in i.summaries
        ]
        self._results["report"] = str(write_participant_report(Path(i.output_dir), i.subject, images, i.version))
        return runtime
