"""The participant-level workflow: one sub-workflow per anatomical image.

    anat (+ lesion) -> prepare (checks, mask onto the anat's grid, RAS) -> N4 -> skull strip
    -> affine to the model's template (lesion out of the cost) -> model grid, [0, 1]
    -> USB heal | embed -> back to the native grid, composite -> derivatives

The preprocessing chain (prepare -> N4 -> skull strip -> register -> model grid) is
``init_preprocess_wf``; the group level's ``train`` task runs the same chain
(``bids_usb.workflows.group``). Every node caches in the work directory, so a killed run
resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nipype.interfaces.utility import Merge
from nipype.pipeline import engine as pe

from usb_model import __version__

from ..images import file_stem, node_name
from ..interfaces.derivatives import DerivativesSink
from ..interfaces.native import ToNative
from ..interfaces.preprocessing import (
    BiasCorrect,
    GrowMask,
    ModelTemplate,
    PrepareInputs,
    RegisterToTemplate,
    SkullStrip,
    ToModelGrid,
)
from ..interfaces.reports import ImageSummary, ParticipantReport
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
    lesion_from: Path | None = None  # embed: the donor image (--lesion-from) whose lesion is drawn
    generate_lesion: bool = False  # embed --lesion-from generate: the model proposes this brain's lesion
    orientation: str | None = None  # --assume-orientation, for images whose qform/sform codes are 0
    mask_orientation: str | None = None  # --mask-orientation, for a mask whose header contradicts its image's

    @property
    def name(self) -> str:
        return node_name(self.anat)


@dataclass
class RunSettings:
    task: str = "heal"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_samples: int = 1
    device: str = "auto"
    skull_stripped: bool = False
    omp_nthreads: int = 1
    mask_growth: str = "none"  # heal: usb_model.mask_growth.GROWTHS


def init_participant_wf(
    jobs: list[ImageJob],
    bundle: ModelBundle,
    settings: RunSettings,
    bids_dir: Path,
    output_dir: Path,
    work_dir: Path,
    donor: ImageJob | None = None,
) -> pe.Workflow:
    """One image workflow per job, all fed the checkpoint's template; with ``donor``
    (``--lesion-from``) the donor's preprocessing joins the graph and its lesion on the model
    grid feeds every image that draws it."""
    wf = pe.Workflow(name="bids_usb_wf", base_dir=str(work_dir))
    template = pe.Node(
        ModelTemplate(model_dir=str(bundle.path), model_fingerprint=bundle.fingerprint), name="model_template"
    )
    donor_wf = None
    if donor is not None:
        donor_wf = _preprocess_job(donor, bundle, settings, task="embed", name=f"donor_{donor.name}_wf")
        wf.connect(template, "template", donor_wf, "inputnode.template")
    by_subject: dict[str, list[pe.Workflow]] = {}
    for job in jobs:
        image_wf = init_image_wf(
            job, bundle, settings, bids_dir, output_dir, donor_lesion=donor.lesion_mask if donor else None
        )
        wf.connect(template, "template", image_wf, "inputnode.template")
        if job.lesion_from is not None and donor_wf is not None:
            wf.connect(donor_wf, "outputnode.lesion_model", image_wf, "donor_input.lesion_model")
        by_subject.setdefault(job.entities["subject"], []).append(image_wf)
    for subject, image_wfs in by_subject.items():
        merge = pe.Node(Merge(len(image_wfs)), name=f"summaries_sub_{node_name(subject)}", run_without_submitting=True)
        report = pe.Node(
            ParticipantReport(
                output_dir=str(output_dir),
                subject=subject,
                version=__version__,
                task=settings.task,
                model={
                    "Name": bundle.name,
                    "SHA256": bundle.sha256,
                    "Contrast": bundle.contrast,
                    "Path": str(bundle.path),
                    "Template": bundle.template_record(),
                },
            ),
            name=f"report_sub_{node_name(subject)}",
            overwrite=True,  # the report always describes the output folder as it is now
        )
        for index, image_wf in enumerate(image_wfs, 1):
            wf.connect(image_wf, "summary.summary", merge, f"in{index}")
        wf.connect([(merge, report, [("out", "summaries")]), (template, report, [("template", "template")])])
    return wf


PREPROCESS_OUTPUTS = (
    "anat_ras",
    "lesion_ras",
    "lesion_native",
    "warnings",
    "preproc_ras",
    "bias_field",
    "brain",
    "brain_mask",
    "transform",
    "image",
    "brain_mask_model",
    "lesion_model",
    "scale",
)


def init_preprocess_wf(
    anat: str | Path,
    *,
    lesion_mask: str | Path | None = None,
    task: str = "heal",
    contrast: str = "T1w",
    normalisation: str = "percentile",
    skull_stripped: bool = False,
    omp_nthreads: int = 1,
    orientation: str | None = None,
    mask_orientation: str | None = None,
    seed: int = 0,
    mask_growth: str = "none",
    name: str = "preprocess_wf",
) -> pe.Workflow:
    """The preprocessing chain shared by both levels, for one anatomical image.

    ``inputnode.template`` takes the template NIfTI on the model grid (the checkpoint's at the
    participant level, the config grid's MNI template when training). Nodes: ``prepare``
    (checks, mask onto the anat's grid, RAS) -> ``bias_correct`` (N4 on the head) -> ``skull_strip``
    (deepbet, or the non-zero voxels with ``skull_stripped``; then N4 again on the brain, a given
    lesion left out, whose combined field is the workflow's ``bias_field``) -> ``register`` (affine to the
    template, lesion out of the cost) -> ``to_model_grid`` (resampled, intensities in [0, 1]).
    ``outputnode`` carries ``PREPROCESS_OUTPUTS``; the lesion fields only when ``lesion_mask``
    is given. With ``mask_growth`` other than ``none`` a ``grow_mask`` node (after the skull
    strip) grows the given mask to the lesion it points at, and every lesion field downstream is
    the grown mask. Callers that extend the returned workflow may also connect its nodes directly
    (``wf.get_node("register")``): the participant level does, so its node names stay
    ``<workflow>.prepare`` etc.
    """
    from nipype.interfaces.utility import IdentityInterface

    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["template"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=list(PREPROCESS_OUTPUTS)), name="outputnode")

    prepare = pe.Node(PrepareInputs(anat=str(anat), task=task), name="prepare")
    if lesion_mask is not None:
        prepare.inputs.lesion_mask = str(lesion_mask)
    if orientation is not None:
        prepare.inputs.orientation = orientation
    if mask_orientation is not None:
        prepare.inputs.mask_orientation = mask_orientation
    n4 = pe.Node(BiasCorrect(), name="bias_correct", n_procs=omp_nthreads)
    strip = pe.Node(SkullStrip(skull_stripped=skull_stripped), name="skull_strip", n_procs=omp_nthreads)
    register = pe.Node(RegisterToTemplate(seed=seed), name="register", n_procs=omp_nthreads)
    to_model = pe.Node(ToModelGrid(contrast=contrast, normalisation=normalisation), name="to_model_grid")
    wf.connect(
        [
            (prepare, n4, [("anat_ras", "in_file")]),
            (n4, strip, [("out_file", "in_file"), ("bias_field", "bias_field")]),
            (strip, register, [("brain", "brain"), ("brain_mask", "brain_mask")]),
            (inputnode, register, [("template", "template")]),
            (strip, to_model, [("brain", "brain"), ("brain_mask", "brain_mask")]),
            (register, to_model, [("transform", "transform")]),
            (inputnode, to_model, [("template", "template")]),
            (prepare, outputnode, [("anat_ras", "anat_ras"), ("warnings", "warnings")]),
            (strip, outputnode, [("out_file", "preproc_ras"), ("bias_field", "bias_field")]),
            (strip, outputnode, [("brain", "brain"), ("brain_mask", "brain_mask")]),
            (register, outputnode, [("transform", "transform")]),
            (to_model, outputnode, [("image", "image"), ("brain_mask", "brain_mask_model"), ("scale", "scale")]),
        ]
    )
    if lesion_mask is not None:
        wf.connect(prepare, "lesion_ras", strip, "lesion_mask")
        lesion = prepare
        if mask_growth != "none":
            lesion = pe.Node(
                GrowMask(anat=str(anat), lesion_mask=str(lesion_mask), method=mask_growth), name="grow_mask"
            )
            if orientation is not None:
                lesion.inputs.orientation = orientation
            wf.connect(
                [
                    (prepare, lesion, [("lesion_ras", "lesion_ras")]),
                    (strip, lesion, [("brain", "brain"), ("brain_mask", "brain_mask")]),
                    # the mask as given, for the fill's per-lesion choice (usb_model.fill.GIVEN_DARK_RATIO)
                    (prepare, to_model, [("lesion_ras", "given_mask")]),
                ]
            )
        wf.connect(
            [
                # The registration leaves out the mask as given (dilated), not as grown: a growth
                # or a peel moved a graft's registration, and with it the infarct's heal, by up
                # to 1 dB on Colin 27's head (2026-12-07), which hid what the growth itself did.
                (prepare, register, [("lesion_ras", "lesion_mask")]),
                (lesion, to_model, [("lesion_ras", "lesion_mask")]),
                (lesion, outputnode, [("lesion_ras", "lesion_ras"), ("lesion_native", "lesion_native")]),
                (to_model, outputnode, [("lesion_mask", "lesion_model")]),
            ]
        )
    return wf


def _preprocess_job(job: ImageJob, bundle: ModelBundle, settings: RunSettings, *, task: str, name: str) -> pe.Workflow:
    """``init_preprocess_wf`` for one job, with the model's contrast and normalisation and the
    run's settings (the images and the ``--lesion-from`` donor alike)."""
    return init_preprocess_wf(
        job.anat,
        lesion_mask=job.lesion_mask,
        task=task,
        contrast=bundle.contrast,
        normalisation=bundle.config.grid.normalisation,
        skull_stripped=settings.skull_stripped,
        omp_nthreads=settings.omp_nthreads,
        orientation=job.orientation,
        mask_orientation=job.mask_orientation,
        seed=settings.seed,
        mask_growth=settings.mask_growth if task == "heal" else "none",
        name=name,
    )


def init_image_wf(
    job: ImageJob,
    bundle: ModelBundle,
    settings: RunSettings,
    bids_dir: Path,
    output_dir: Path,
    donor_lesion: Path | None = None,
) -> pe.Workflow:
    # The image workflow IS the preprocessing workflow, extended (node names image_<name>_wf.prepare, ...).
    task = settings.task if job.lesion_mask is not None else "heal"  # prepare checks a native mask only
    wf = _preprocess_job(job, bundle, settings, task=task, name=f"image_{job.name}_wf")
    inputnode = wf.get_node("inputnode")
    prepare, n4, strip = wf.get_node("prepare"), wf.get_node("bias_correct"), wf.get_node("skull_strip")
    register, to_model = wf.get_node("register"), wf.get_node("to_model_grid")
    usb = pe.Node(
        RunUSB(
            model_dir=str(bundle.path),
            model_fingerprint=bundle.fingerprint,
            task=settings.task,
            params=settings.params,
            seed=settings.seed,
            n_samples=settings.n_samples,
            device=settings.device,
        ),
        name="usb",
        n_procs=settings.omp_nthreads,
    )
    # The graft's 1 mm template: the model's own copy, resolved here once (one log line when
    # TemplateFlow's files are not there) so that the node and the sidecars agree.
    native = pe.Node(ToNative(anat=str(job.anat), template_source=bundle.graft_source.name), name="to_native")
    if job.orientation is not None:
        native.inputs.orientation = job.orientation
    lesion_source = job.lesion_mask or job.template_lesion or (donor_lesion if job.lesion_from else None)
    # (role, producing node, its output): one DerivativesSink per output, built below.
    outputs = [
        ("edited", native, "out_file"),
        ("edit_region", native, "edit_region"),
        ("brain_mask", strip, "brain_mask"),
        ("preproc", strip, "out_file"),
        ("transform", register, "transform"),
        ("preproc_model", to_model, "image"),
        ("edited_model", usb, "edited"),
    ]
    wf.connect(
        [
            (to_model, usb, [("image", "image")]),
            (usb, native, [("edited", "edited"), ("parameters", "parameters")]),
            (to_model, native, [("image", "image_model"), ("scale", "scale")]),
            (register, native, [("transform", "transform")]),
            (strip, native, [("bias_field", "bias_field")]),
        ]
    )
    if settings.task == "heal":
        wf.connect(
            [
                (usb, native, [("healed", "healed"), ("change", "change"), ("fill_change", "fill_change")]),
                (strip, native, [("brain_mask", "brain_mask")]),
            ]
        )
        if job.lesion_mask is not None:
            wf.connect(to_model, "lesion_mask", usb, "lesion_mask")
            if wf.get_node("grow_mask") is not None:
                wf.connect(
                    [
                        (to_model, usb, [("given_mask", "given_mask")]),
                        (wf.get_node("grow_mask"), native, [("given_native", "given_native")]),
                    ]
                )
        else:
            wf.connect([(usb, native, [("anomaly", "anomaly"), ("detected", "detected")])])
            outputs += [("anomaly", native, "anomaly"), ("detected", native, "lesion_native")]
    if job.lesion_mask is not None:
        lesion_node = wf.get_node("grow_mask") or prepare
        wf.connect([(lesion_node, native, [("lesion_native", "lesion_native")])])
        outputs += [("lesion", native, "lesion_native"), ("lesion_model", to_model, "lesion_mask")]
        if lesion_node is not prepare:
            outputs.append(("lesion_given", lesion_node, "given_native"))
        if settings.task == "embed":
            wf.connect(to_model, "lesion_mask", usb, "lesion_mask")
    elif job.template_lesion is not None:
        # embed with a mask given in template space: it goes straight onto the model grid.
        from ..interfaces.preprocessing import TemplateMaskToModel

        to_grid = pe.Node(TemplateMaskToModel(mask=str(job.template_lesion)), name="template_lesion")
        wf.connect(
            [
                (inputnode, to_grid, [("template", "template")]),
                (to_grid, usb, [("lesion_mask", "lesion_mask")]),
                (to_grid, native, [("lesion_mask", "lesion_model")]),
            ]
        )
        outputs += [("lesion", native, "lesion_native"), ("lesion_model", to_grid, "lesion_mask")]
    elif job.generate_lesion:
        # embed --lesion-from generate: the USB node proposes the lesion for this brain, then draws it.
        usb.inputs.generate_lesion = True
        wf.connect(to_model, "brain_mask", usb, "brain_mask")
        wf.connect(usb, "lesion_mask", native, "lesion_model")
        outputs += [("lesion", native, "lesion_native"), ("lesion_model", usb, "lesion_mask")]
    elif job.lesion_from is not None:
        # embed --lesion-from: the donor's lesion on the model grid, from the donor workflow.
        from nipype.interfaces.utility import IdentityInterface

        donor_input = pe.Node(IdentityInterface(fields=["lesion_model"]), name="donor_input")
        wf.connect(
            [
                (donor_input, usb, [("lesion_model", "lesion_mask")]),
                (donor_input, native, [("lesion_model", "lesion_model")]),
            ]
        )
        outputs += [("lesion", native, "lesion_native"), ("lesion_model", donor_input, "lesion_model")]
    if settings.n_samples > 1:
        wf.connect(usb, "uncertainty", native, "uncertainty")
        outputs.append(("uncertainty", native, "uncertainty"))
    context = {
        "output_dir": str(output_dir),
        "bids_dir": str(bids_dir),
        "anat": str(job.anat),
        "entities": job.entities,
        "suffix": job.suffix,
        "task": settings.task,
        "model": {
            "Name": bundle.name,
            "SHA256": bundle.sha256,
            "Contrast": bundle.contrast,
            "Template": bundle.template_record(),
        },
        "res_label": bundle.res_label,
    }
    if job.orientation is not None:
        context["orientation"] = job.orientation
    if lesion_source is not None:
        context["lesion_source"] = str(lesion_source)
    written = pe.Node(Merge(len(outputs)), name="written", run_without_submitting=True)
    sink_seconds = pe.Node(Merge(len(outputs)), name="sink_seconds", run_without_submitting=True)
    for index, (role, node, field_name) in enumerate(outputs, start=1):
        sink = pe.Node(DerivativesSink(role=role, **context), name=f"ds_{role}", run_without_submitting=True)
        wf.connect(
            [
                (node, sink, [(field_name, "in_file")]),
                (usb, sink, [("parameters", "parameters")]),
                (sink, written, [("written", f"in{index}")]),
                (sink, sink_seconds, [("seconds", f"in{index}")]),
            ]
        )
        if role == "lesion" and wf.get_node("grow_mask") is not None:
            wf.connect(wf.get_node("grow_mask"), "growth", sink, "growth")

    # What the participant's report needs about this image, each step's time included.
    summary = pe.Node(
        ImageSummary(name=file_stem(job.anat), anat=str(job.anat), skull_stripped=settings.skull_stripped),
        name="summary",
        run_without_submitting=True,
    )
    steps = {
        "prepare": prepare,
        "bias_correct": n4,
        "skull_strip": strip,
        "register": register,
        "to_model_grid": to_model,
        "usb": usb,
        "to_native": native,
    }
    wf.connect([(node, summary, [("seconds", f"seconds_{step}")]) for step, node in steps.items()])
    wf.connect(
        [
            (written, summary, [("out", "written")]),
            (sink_seconds, summary, [("out", "seconds_derivatives")]),
            (usb, summary, [("parameters", "parameters")]),
            (prepare, summary, [("warnings", "warnings")]),
        ]
    )
    return wf
