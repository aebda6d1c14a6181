"""The participant-level workflow: one sub-workflow per anatomical image.

    anat (+ lesion) -> prepare (checks, mask onto the anat's grid, RAS) -> N4 -> skull strip
    -> affine to the model's template (lesion out of the cost) -> model grid, [0, 1]
    -> USB heal | embed -> back to the native grid, composite -> derivatives

Every node caches in the work directory, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nipype.pipeline import engine as pe

from ..interfaces.derivatives import DerivativesSink
from ..interfaces.native import ToNative
from ..interfaces.preprocessing import BiasCorrect, ModelTemplate, PrepareInputs, RegisterToTemplate, SkullStrip, ToModelGrid
from ..interfaces.usb import RunUSB
from ..model import ModelBundle


@dataclass
class ImageJob:
    """One anatomical image to process, and the lesion mask that goes with it."""

    anat: Path
    entities: dict[str, Any]
    suffix: str = "T1w"
    lesion_mask: Path | None = None  # native grid (heal, or embed from the same participant)
    template_lesion: Path | None = None  # embed: a mask in template space (--lesion-mask FILE)

    @property
    def name(self) -> str:
        stem = Path(self.anat).name.split(".")[0]
        return re.sub(r"[^a-zA-Z0-9]", "_", stem)


@dataclass
class RunSettings:
    task: str = "heal"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_samples: int = 1
    device: str = "auto"
    skull_stripped: bool = False
    omp_nthreads: int = 1


def init_participant_wf(jobs: list[ImageJob], bundle: ModelBundle, settings: RunSettings, bids_dir: Path, output_dir: Path, work_dir: Path) -> pe.Workflow:
    wf = pe.Workflow(name="bids_usb_wf", base_dir=str(work_dir))
    template = pe.Node(ModelTemplate(model_dir=str(bundle.path)), name="model_template")
    for job in jobs:
        image_wf = init_image_wf(job, bundle, settings, bids_dir, output_dir)
        wf.connect(template, "template", image_wf, "inputnode.template")
    return wf


def init_image_wf(job: ImageJob, bundle: ModelBundle, settings: RunSettings, bids_dir: Path, output_dir: Path) -> pe.Workflow:
    from nipype.interfaces.utility import IdentityInterface

    wf = pe.Workflow(name=f"image_{job.name}_wf")
    inputnode = pe.Node(IdentityInterface(fields=["template"]), name="inputnode")

    prepare = pe.Node(PrepareInputs(anat=str(job.anat), task=settings.task), name="prepare")
    if job.lesion_mask is not None:
        prepare.inputs.lesion_mask = str(job.lesion_mask)
    n4 = pe.Node(BiasCorrect(), name="bias_correct", n_procs=settings.omp_nthreads)
    strip = pe.Node(SkullStrip(skull_stripped=settings.skull_stripped), name="skull_strip", n_procs=settings.omp_nthreads)
    register = pe.Node(RegisterToTemplate(), name="register", n_procs=settings.omp_nthreads)
    to_model = pe.Node(ToModelGrid(contrast=bundle.contrast), name="to_model_grid")
    usb = pe.Node(
        RunUSB(model_dir=str(bundle.path), task=settings.task, params=settings.params, seed=settings.seed, n_samples=settings.n_samples, device=settings.device),
        name="usb",
        n_procs=settings.omp_nthreads,
    )
    native = pe.Node(ToNative(anat=str(job.anat)), name="to_native")
    sink = pe.Node(
        DerivativesSink(
            output_dir=str(output_dir),
            bids_dir=str(bids_dir),
            anat=str(job.anat),
            entities=job.entities,
            suffix=job.suffix,
            task=settings.task,
            model={"Name": bundle.path.name, "SHA256": bundle.sha256, "Contrast": bundle.contrast},
            res_label=bundle.res_label,
        ),
        name="derivatives",
        run_without_submitting=True,
    )
    lesion_source = job.lesion_mask or job.template_lesion
    if lesion_source is not None:
        sink.inputs.lesion_source = str(lesion_source)

    wf.connect([
        (prepare, n4, [("anat_ras", "in_file")]),
        (n4, strip, [("out_file", "in_file")]),
        (strip, register, [("brain", "brain"), ("brain_mask", "brain_mask")]),
        (inputnode, register, [("template", "template")]),
        (strip, to_model, [("brain", "brain"), ("brain_mask", "brain_mask")]),
        (register, to_model, [("transform", "transform")]),
        (inputnode, to_model, [("template", "template")]),
        (to_model, usb, [("image", "image")]),
        (usb, native, [("edited", "edited")]),
        (to_model, native, [("image", "image_model"), ("scale", "scale")]),
        (register, native, [("transform", "transform")]),
        (n4, native, [("bias_field", "bias_field")]),
        (native, sink, [("out_file", "edited"), ("edit_region", "edit_region")]),
        (strip, sink, [("brain_mask", "brain_mask_ras")]),
        (n4, sink, [("out_file", "preproc_ras")]),
        (register, sink, [("transform", "transform")]),
        (to_model, sink, [("image", "image_model")]),
        (usb, sink, [("edited", "edited_model"), ("parameters", "parameters")]),
    ])
    if job.lesion_mask is not None:
        wf.connect([
            (prepare, register, [("lesion_ras", "lesion_mask")]),
            (prepare, to_model, [("lesion_ras", "lesion_mask")]),
            (prepare, native, [("lesion_native", "lesion_native")]),
            (native, sink, [("lesion_native", "lesion_native")]),
            (to_model, sink, [("lesion_mask", "lesion_model")]),
        ])
        if settings.task == "embed":
            wf.connect(to_model, "lesion_mask", usb, "lesion_mask")
    elif job.template_lesion is not None:
        # embed with a mask given in template space: it goes straight onto the model grid.
        from ..interfaces.preprocessing import TemplateMaskToModel

        to_grid = pe.Node(TemplateMaskToModel(mask=str(job.template_lesion)), name="template_lesion")
        wf.connect([
            (inputnode, to_grid, [("template", "template")]),
            (to_grid, usb, [("lesion_mask", "lesion_mask")]),
            (to_grid, native, [("lesion_mask", "lesion_model")]),
            (native, sink, [("lesion_native", "lesion_native")]),
            (to_grid, sink, [("lesion_mask", "lesion_model")]),
        ])
    if settings.n_samples > 1:
        wf.connect([(usb, native, [("uncertainty", "uncertainty")]), (native, sink, [("uncertainty", "uncertainty")])])
    return wf
